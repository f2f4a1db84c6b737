"""Ranking: fuse the scorers' scores, choose the next round, re-rank from the verdicts, export.

The loop's stage above :mod:`mining.scorers` (beside the mining job,
:mod:`mining.job`); it imports nothing from review or learning.

- :mod:`~mining.ranking.fusion`: the scorers' scores fused into one;
- :mod:`~mining.ranking.strategies`: how the next batch is chosen;
- :mod:`~mining.ranking.rerank`: the re-ranker trained on the verdicts;
- :mod:`~mining.ranking.rank`: :func:`~mining.ranking.rank.rank` writes a round of candidates;
- :mod:`~mining.ranking.export`: scores and candidates as CSV tables (ranked
  by the fusion, hence here and not in the catalogue).

Every name below is importable from :mod:`mining.ranking` (but ``rank``, the
module's name: ``from mining.ranking.rank import rank``); its module is
imported when the name is first asked for.
"""

from mining._lazy import lazy_exports

#: public name -> the module that defines it (imported when the name is first asked for)
_EXPORTS = {
    "FusedScores": "fusion",
    "PRIMARY_SCORERS": "fusion",
    "fuse": "fusion",
    "fused_scores": "fusion",
    "class_proba": "strategies",
    "uncertainty": "strategies",
    "COLD_STARTS": "strategies",
    "round_robin": "strategies",
    "select_top": "strategies",
    "select_least_confidence": "strategies",
    "select_entropy": "strategies",
    "select_margin": "strategies",
    "select_random": "strategies",
    "row_vectors": "strategies",
    "k_center_greedy": "strategies",
    "select_diversity": "strategies",
    "select_balanced": "strategies",
    "patch_sets": "strategies",
    "like_confirmed_patches": "strategies",
    "like_confirmed": "strategies",
    "adaptive_arms": "strategies",
    "pick_history": "strategies",
    "select_adaptive": "strategies",
    "parse_mixture": "strategies",
    "mixture_counts": "strategies",
    "mixture_strategy": "strategies",
    "STRATEGIES": "strategies",
    "get_strategy": "strategies",
    "RERANK_SCORER": "rerank",
    "CALIBRATIONS": "rerank",
    "FeatureTable": "rerank",
    "build_features": "rerank",
    "monotone_constraints": "rerank",
    "consensus_labels": "rerank",
    "threshold_map": "rerank",
    "best_threshold": "rerank",
    "RerankResult": "rerank",
    "ReRanker": "rerank",
    "reviewed_ids": "rank",
    "export_scores": "export",
    "export_candidates": "export",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
