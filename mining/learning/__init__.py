"""Learning: what the loop learns from the verdicts.

The loop's stage above review (and so above ranking, the job, the scorers,
models and the catalogue); only the demo and the shells sit above it.

- :mod:`~mining.learning.learn`: :func:`~mining.learning.learn.learn`, the learn
  step (the re-ranker from the verdicts, the pixel model from painted masks);
- :mod:`~mining.learning.pixel_fit`: :func:`~mining.learning.pixel_fit.fit_pixel`,
  the pixel model fitted from label images and registered in the catalogue
  (``raremine fit-pixel``);
- :mod:`~mining.learning.simulate`: review rounds played from known labels;
- :mod:`~mining.learning.slices`: where the ranking finds and misses defects.

Every name below is importable from :mod:`mining.learning` (but ``learn`` and
``simulate``, the modules' names); its module is imported when the name is
first asked for.
"""

from mining._lazy import lazy_exports

#: public name -> the module that defines it (imported when the name is first asked for)
_EXPORTS = {
    "Progress": "learn",
    "LearnReport": "learn",
    "models_dir": "learn",
    "FROM_CONFIG": "learn",
    "MAX_EXTRA_NORMALS": "learn",
    "RETUNE_GROWTH": "learn",
    "fit_pixel": "pixel_fit",
    "Truth": "simulate",
    "read_truth": "simulate",
    "copy_catalogue": "simulate",
    "model_scores": "simulate",
    "write_outputs": "simulate",
    "plot_recall": "simulate",
    "plot_curves": "simulate",
    "slice_table": "slices",
    "read_metadata": "slices",
    "slice_report": "slices",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
