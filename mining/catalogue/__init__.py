"""The catalogue: the SQLite database of an archive and what is kept beside it.

The loop's second floor, above :mod:`mining.io`, :mod:`mining.tiling` and
:mod:`mining.metrics`; it imports nothing from the floors above (models,
scorers, ranking, the job, review, learning).

- :mod:`~mining.catalogue.store`: the :class:`Store` (one writer, many readers),
  with :mod:`~mining.catalogue.schema` (versions, migrations) and
  :mod:`~mining.catalogue.sqlite` (connections, error messages);
- :mod:`~mining.catalogue.index`: indexing an archive into the catalogue;
- :mod:`~mining.catalogue.verdicts`: votes and the consensus rule, the one
  definition of a label;
- :mod:`~mining.catalogue.labels`: labels in and out (every label format);
- :mod:`~mining.catalogue.joblog`: a job's run record, signals, JSON logs.

Every name below is importable from :mod:`mining.catalogue`; its module is
imported when the name is first asked for.
"""

from mining._lazy import lazy_exports

#: public name -> the module that defines it (imported when the name is first asked for)
_EXPORTS = {
    "PATCH_SET_SUFFIX": "store",
    "is_patch_set": "store",
    "pack_patch_set": "store",
    "unpack_patch_set": "store",
    "Store": "store",
    "SCHEMA_VERSION": "schema",
    "MIGRATIONS": "schema",
    "SchemaVersionError": "schema",
    "schema_version": "schema",
    "migrate": "schema",
    "process_start_time": "sqlite",
    "process_alive": "sqlite",
    "describe_sqlite_error": "sqlite",
    "IndexSummary": "index",
    "walk_images": "index",
    "catalogue_path": "index",
    "index_archive": "index",
    "volume_tiles": "index",
    "order_series": "index",
    "volumes": "index",
    "VERDICTS": "verdicts",
    "ON_DISAGREEMENT": "verdicts",
    "STATUSES": "verdicts",
    "LEFT_OUT": "verdicts",
    "Confirmed": "verdicts",
    "Vote": "verdicts",
    "ConsensusRule": "verdicts",
    "Decision": "verdicts",
    "decide": "verdicts",
    "latest_votes": "verdicts",
    "decisions": "verdicts",
    "ImageLabel": "verdicts",
    "image_labels": "verdicts",
    "left_out_counts": "verdicts",
    "describe_left_out": "verdicts",
    "DEFAULT_CATEGORY": "labels",
    "DEFAULT_NEGATIVE": "labels",
    "BACKGROUND": "labels",
    "DEFECT": "labels",
    "ImportSummary": "labels",
    "default_mask_dir": "labels",
    "import_labels": "labels",
    "catalogue_labels": "labels",
    "LabelExport": "labels",
    "export_labels": "labels",
    "JsonFormatter": "joblog",
    "json_log_handler": "joblog",
    "JobInterrupted": "joblog",
    "interrupt_on_sigterm": "joblog",
    "exit_code": "joblog",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
