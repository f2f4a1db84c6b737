"""raremine.mining: index archives, score images, rank candidates, learn from verdicts.

A library: no printing, no Streamlit, no typer; ``logging`` and optional
progress callbacks only.

One sub-package a stage of the loop, each ``__init__`` its public face; a
module imports its own stage and the stages below it, never one above
(``benchmarks/import_graph.py`` checks it):

- below everything: :mod:`mining.io` (reading images, with :mod:`mining.formats`),
  :mod:`mining.tiling`, :mod:`mining.metrics`, :mod:`mining.configfile`;
- :mod:`mining.catalogue` (the SQLite catalogue, indexing, verdicts, labels, the
  folders beside it) and :mod:`mining.models` (pixel model, descriptors,
  outliers, the 2-D map, backbone, autoencoder);
- :mod:`mining.scorers`;
- :mod:`mining.ranking` (fusion, strategies, re-ranker, rounds, export),
  :mod:`mining.job` (the mining job and its workers) and :mod:`mining.config`;
- :mod:`mining.review` (the review app's logic);
- :mod:`mining.learning` (learn, fit-pixel, simulate, slices);
- :mod:`mining.demo`.
"""
