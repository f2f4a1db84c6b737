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
- :mod:`~mining.catalogue.joblog`: a job's run record, signals, JSON logs;
- :mod:`~mining.catalogue.paths`: the folders kept beside a catalogue (models, maps, labels, masks).

Every name below is importable from :mod:`mining.catalogue`; its module is
imported when the name is first asked for.
"""

from mining._lazy import lazy_exports

#: module: the public names it defines (imported when one of them is first asked for)
_EXPORTS = """
paths: sidecar_dir models_dir maps_dir labels_dir masks_dir
store: PATCH_SET_SUFFIX is_patch_set pack_patch_set unpack_patch_set Store
schema: SCHEMA_VERSION MIGRATIONS SchemaVersionError schema_version migrate
sqlite: process_start_time process_alive describe_sqlite_error
index: IndexSummary walk_images catalogue_path index_archive volume_tiles order_series volumes
verdicts: VERDICTS ON_DISAGREEMENT STATUSES LEFT_OUT Confirmed Vote ConsensusRule Decision decide latest_votes
    decisions ImageLabel image_labels left_out_counts describe_left_out
labels: DEFAULT_CATEGORY DEFAULT_NEGATIVE BACKGROUND DEFECT ImportSummary default_mask_dir import_labels
    catalogue_labels LabelExport export_labels
joblog: JsonFormatter json_log_handler JobInterrupted interrupt_on_sigterm exit_code
"""

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
