"""Ranking: fuse the scorers' scores, choose the next round, re-rank from the verdicts, export.

The loop's stage above :mod:`mining.scorers` (beside the mining job,
:mod:`mining.job`); it imports nothing from review or learning.

- :mod:`~mining.ranking.fusion`: the scorers' scores fused into one;
- :mod:`~mining.ranking.strategies`: how the next batch is chosen;
- :mod:`~mining.ranking.similar`: "more like this" from confirmed images;
- :mod:`~mining.ranking.rerank`: the re-ranker trained on the verdicts;
- :mod:`~mining.ranking.rank`: :func:`~mining.ranking.rank.rank` writes a round of candidates;
- :mod:`~mining.ranking.export`: scores and candidates as CSV tables (ranked
  by the fusion, hence here and not in the catalogue).

Every name below is importable from :mod:`mining.ranking` (but ``rank``, the
module's name: ``from mining.ranking.rank import rank``); its module is
imported when the name is first asked for.
"""

from mining._lazy import lazy_exports

#: module: the public names it defines (imported when one of them is first asked for)
_EXPORTS = """
fusion: FusedScores PRIMARY_SCORERS fuse fused_scores
strategies: class_proba uncertainty COLD_STARTS round_robin select_top select_least_confidence select_entropy
    select_margin select_random row_vectors k_center_greedy select_diversity select_balanced
    adaptive_arms pick_history select_adaptive parse_mixture
    mixture_counts mixture_strategy STRATEGIES get_strategy
similar: standardise embedding_spaces patch_sets like_confirmed_patches like_confirmed like_features confirmed_vs_rest
rerank: RERANK_SCORER CALIBRATIONS FeatureTable build_features monotone_constraints consensus_labels threshold_map
    best_threshold RerankResult ReRanker
rank: reviewed_ids
export: export_scores export_candidates
"""

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
