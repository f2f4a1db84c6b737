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

#: module: the public names it defines (imported when one of them is first asked for)
_EXPORTS = """
learn: Progress LearnReport models_dir FROM_CONFIG MAX_EXTRA_NORMALS RETUNE_GROWTH
pixel_fit: fit_pixel
simulate: Truth read_truth copy_catalogue model_scores write_outputs plot_recall plot_curves
slices: slice_table read_metadata slice_report
"""

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
