"""Scorers: one factory from a name (and keyword arguments from the config) to a scorer.

Register a new scorer by adding its class path to :data:`SCORERS`; modules are
imported only when their scorer is asked for, so a missing optional package
does not break the others.
"""

from __future__ import annotations

import importlib

from mining.scorers.base import Scorer, ScoreResult

#: scorer name -> "module:Class"
SCORERS: dict[str, str] = {
    "contrast": "mining.scorers.contrast:ContrastScorer",
    "pixel": "mining.scorers.pixel:PixelScorer",
    "autoencoder": "mining.scorers.autoencoder:AutoencoderScorer",
    "embedding": "mining.scorers.embedding:EmbeddingScorer",
    "backbone": "mining.scorers.backbone:BackboneScorer",
}


def available_scorers() -> list[str]:
    """Names accepted by :func:`get_scorer`."""
    return sorted(SCORERS)


def get_scorer(name: str, **params) -> Scorer:
    """Build a scorer from its name and constructor arguments.

    Raises
    ------
    ValueError
        For an unknown name (the valid names are listed) or a bad argument.
    """
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; valid scorers: {', '.join(available_scorers())}")
    module, cls = SCORERS[name].split(":")
    klass = getattr(importlib.import_module(module), cls)
    try:
        return klass(**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for scorer {name!r}: {err}") from err


__all__ = ["SCORERS", "ScoreResult", "Scorer", "available_scorers", "get_scorer"]
