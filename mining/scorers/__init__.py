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


#: What ``mine.scorers: [auto]`` (the default) runs: every scorer that can run on the catalogue and
#: carries signal for its cost. No scorer is trusted by default: the fusion and the review loop
#: (``rank.strategy: adaptive``) find out from the verdicts which of them carries the signal on a
#: given archive. The rule for joining ``auto``: a scorer must find defects that the scorers already in it
#: do not, for its cost. The ``autoencoder`` fails it and is left out: its default (global pooling) finds
#: 0.50 of the defects in the top 10 % over ten magnetic-tile archives (random: 0.10), but it rebuilds the
#: pooled MobileNetV2 vector whose kNN the backbone already scores (0.60 on the same archives); the mean of
#: the two rankings finds 0.59, nothing gained, for a second MobileNetV2 pass per image (284 against the
#: backbone's 346 ms per image on one loaded core; docs/benchmarks/autoencoder.md). Name it in
#: ``mine.scorers`` to run it.
AUTO_SCORERS: tuple[str, ...] = ("contrast", "embedding", "backbone", "pixel")


def resolve_scorers(names: list[str], store=None) -> list[str]:
    """The scorer names a job runs: ``names``, or for ``["auto"]`` every scorer that can run.

    ``auto`` takes :data:`AUTO_SCORERS`, leaving out ``pixel`` while no pixel
    model is registered in the catalogue (``raremine fit-pixel`` makes one).
    The ``backbone`` scorer stays in the list: without its weights file it
    logs one line and takes no part in the run.

    Parameters
    ----------
    names : list of str
        Scorer names, or ``["auto"]``.
    store : Store, optional
        The catalogue (to look for a pixel model).

    Returns
    -------
    list of str
    """
    if list(names) != ["auto"]:
        return list(names)
    has_pixel = store is not None and store.latest_model("pixel") is not None
    return [n for n in AUTO_SCORERS if n != "pixel" or has_pixel]


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


__all__ = ["AUTO_SCORERS", "SCORERS", "ScoreResult", "Scorer", "available_scorers", "get_scorer", "resolve_scorers"]
