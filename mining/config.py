"""Configuration: YAML files validated into typed objects at the edge.

Every error names the offending key (dotted), the value given and what is
allowed. ``section.key=value`` overrides (from ``--set`` on the command line)
are applied before validation, their values parsed as YAML scalars. Reading,
overrides and messages are :mod:`mining.configfile`'s, shared with
:mod:`synthesis.config`.

Scorer sections (``autoencoder``, ``embedding``, ``backbone`` and each
``scorers.<name>``) take their keys and defaults from the scorer's constructor
signature (read from its source, so no scorer module is imported); this module
only narrows types and adds bounds and descriptions.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from mining.configfile import (
    ConfigError,
    apply_override,
    apply_overrides,
    invalid,
    nested_error,
    params_model,
    read_yaml,
    signature_params,
    unknown_key_error,
)
from mining.io import IMAGE_EXTENSIONS

__all__ = ["ConfigError", "apply_override", "load_config", "scorer_arguments", "scorer_params"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IndexConfig(_Section):
    """``index:`` section."""

    tile_size: int = Field(1024, gt=0, description="images larger than this (px) are split into tiles")
    tile_overlap: int = Field(64, ge=0, description="pixels shared by neighbouring tiles")
    max_pixels: int = Field(200_000_000, gt=0, description="larger images are recorded as too_large")
    workers: int | None = Field(None, ge=1, description="decoding threads (default: CPU count)")
    extensions: list[str] = Field(
        default_factory=lambda: list(IMAGE_EXTENSIONS),  # the reader's list: one source (DICOM included)
        description="file extensions indexed (lower case, with the dot)",
    )


class MineConfig(_Section):
    """``mine:`` section."""

    scorers: list[str] = Field(
        default_factory=lambda: ["auto"],
        min_length=1,
        description="scorers to run; [auto]: every scorer that can run (mining.scorers.AUTO_SCORERS)",
    )
    backend: Literal["inline", "process", "dask"] = Field(
        "process", description="inline (debugging), process (local pool) or dask (a dask.distributed cluster)"
    )
    workers: int = Field(2, ge=1, description="worker processes (process pool, or the dask LocalCluster)")
    scheduler: str | None = Field(
        None, pattern=r"^(tcp|tls|inproc|ucx)://.+", description="address of an existing dask scheduler"
    )
    shard_size: int | None = Field(
        None, ge=1, description="images per shard and per write transaction (null: 64, or 256 on dask)"
    )
    max_in_flight: int | None = Field(None, ge=1, description="shards submitted at once (default 2 x workers)")
    retries: int = Field(1, ge=0, description="retries of an image that kills a worker on its own")
    save_maps: bool = Field(True, description="keep overlay PNGs of the score maps beside the catalogue")
    rescore: bool = Field(False, description="score again images that already have scores")
    start_method: Literal["forkserver", "spawn", "fork"] = Field(
        "forkserver", description="how the process pool starts workers (fork: fastest, unsafe after OpenMP)"
    )

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, names: list[str]) -> list[str]:
        from mining.scorers import available_scorers

        if names == ["auto"]:
            return names
        for n in names:
            if n not in available_scorers():
                raise ValueError(f"unknown scorer {n!r}; allowed: {', '.join(available_scorers())}, or [auto] alone")
        if len(set(names)) != len(names):
            raise ValueError("a scorer is listed twice; allowed: each scorer at most once")
        return names

    @field_validator("scheduler")
    @classmethod
    def _scheduler_needs_dask(cls, address: str | None, info: ValidationInfo) -> str | None:
        if address is not None and info.data.get("backend") != "dask":
            raise ValueError(f"backend is {info.data.get('backend')!r}; allowed: an address only with backend 'dask'")
        return address


class RankConfig(_Section):
    """``rank:`` section."""

    strategy: str = "adaptive"
    n: int = Field(24, ge=1)
    step: int = Field(
        6,
        ge=0,
        description="the review app and simulate choose a round this many candidates at a time, learning from "
        "each step's verdicts before the next (0: the whole round at once)",
    )
    weights: dict[str, float] = Field(default_factory=dict, description="fusion weight per scorer")
    primary: list[str] = Field(
        default_factory=list,
        description="scorers that alone decide the fused score of the images they scored ([]: none)",
    )
    fusion: Literal["cauchy", "mean"] = Field(
        "cauchy", description="how the scorers' percentiles are combined (mining.ranking.fusion.fuse)"
    )


class LearnConfig(_Section):
    """``learn:`` section (re-ranker and simulated review rounds)."""

    n_folds: int = Field(5, ge=2, description="folds for out-of-fold re-ranker probabilities")
    calibration: Literal["none", "threshold", "isotonic", "sigmoid"] = Field(
        "threshold", description="threshold: the paper's piecewise-linear map; isotonic/sigmoid: scikit-learn's"
    )
    embedding_components: int = Field(16, ge=0, description="principal components kept per embedding (0: none)")
    pixel: bool = Field(True, description="retrain the pixel model from painted masks")
    per_category: int = Field(1, ge=0, description="strategy 'balanced': picks per known category")
    cold_start: Literal["fused", "round_robin"] = Field(
        "round_robin", description="ranking before a re-ranker exists: fused score, or each scorer's best in turn"
    )
    masks_per_round: int = Field(0, ge=0, description="simulate: confirmed images per round whose mask is painted")


class ReviewConfig(_Section):
    """``review:`` section (the review app)."""

    categories: list[str] = Field(
        default_factory=lambda: ["defect"], description="categories a reviewer can give a confirmed image"
    )
    agree: int = Field(1, ge=1, description="agreeing votes that decide an image (2: two agreeing votes decide)")
    on_disagreement: Literal["third_vote", "drop", "neutral"] = Field(
        "third_vote", description="third_vote: more votes decide by majority; drop: leave it out; neutral: class"
    )
    max_votes: int = Field(3, ge=2, description="votes after which a still ambiguous image is dropped")
    grid_size: int = Field(12, ge=1, le=60, description="thumbnails per page in grid mode")


def _scorer_section(name: str, constraints: dict, doc: str, base: type[BaseModel] | None = None) -> type[BaseModel]:
    """A section whose keys and defaults are scorer ``name``'s constructor arguments (read without importing it)."""
    from mining.scorers import SCORERS

    return params_model(
        f"{name.capitalize()}Config", signature_params(SCORERS[name]), constraints, base=base or _Section, doc=doc
    )


AutoencoderConfig = _scorer_section(
    "autoencoder",
    {
        "kind": {
            "type": Literal["auto", "features", "pixels"],
            "description": "auto: rebuild MobileNetV2 features (see pooling) when the weights are found, else pixels",
        },
        "backbone_weights": {"description": "mobilenet_v2 state_dict; null = as the backbone scorer"},
        "pooling": {
            "type": Literal["global", "patches"],
            "description": "features kind: rebuild the image's pooled vector (global) or each patch vector",
        },
        "global_layers": {"description": "MobileNetV2 blocks average-pooled into the global vector"},
        "layers": {"description": "MobileNetV2 blocks of the patch vectors (pooling: patches)"},
        "feature_size": {"ge": 32, "description": "the archive's median image is resized to ~this**2 px"},
        "size": {"ge": 16, "multiple_of": 8, "description": "pixels kind: input side (px) or training crop side"},
        "resize": {"type": Literal["resize", "crop"], "description": "squash whole images, or train on crops"},
        "sample_size": {"ge": 1, "description": "catalogue images drawn (seeded) to train on"},
        "epochs": {"ge": 1, "description": "null: pixels 30, features global 30, features patches 10"},
        "batch_size": {"ge": 1},
        "lr": {"gt": 0},
        "trim": {"ge": 0, "lt": 1, "description": "fraction of each batch's highest losses left out"},
        "error": {"type": Literal["l2", "ssim"]},
        "smooth_sigma": {"ge": 0},
        "score": {"type": Literal["topk", "max"]},
        "top_fraction": {"gt": 0, "le": 1},
        "base_channels": {"ge": 1},
        "latent_channels": {"ge": 1, "description": "null: pixels 16; features chosen by `explained`"},
        "explained": {"gt": 0, "lt": 1, "description": "features kind: variance kept by the chosen latent size"},
        "device": {"type": Literal["auto", "cpu", "cuda"], "description": "where training runs"},
        "weights": {"description": "a saved autoencoder to load instead of training"},
    },
    "``autoencoder:`` section (the ``autoencoder`` scorer's constructor arguments and defaults).",
)

EmbeddingConfig = _scorer_section(
    "embedding",
    {
        "size": {"ge": 16},
        "bins": {"ge": 2},
        "levels": {"ge": 2, "le": 256},
        "embeddings": {"description": "stored embeddings the outlier scores use"},
        "methods": {"type": tuple[Literal["knn", "lof", "iforest"], ...]},
        "k": {"ge": 1},
        "approx_threshold": {"ge": 2, "description": "from this many images on, kNN uses pynndescent"},
        "map_method": {"type": Literal["auto", "umap", "tsne", "none"]},
    },
    "``embedding:`` section (the ``embedding`` scorer: cheap descriptors, outlier scores, 2-D map).",
)


#: stages of each ``backbone.arch`` (kept here so that reading a config never imports torch;
#: tests check it against ``mining.models.backbone.ARCHS``)
BACKBONE_STAGES = {"mobilenet_v2": 19, "efficientnet_lite0": 18}


class _BackboneChecks(_Section):
    @field_validator("global_layers", check_fields=False)
    @classmethod
    def _blocks(cls, layers: tuple[int, ...] | None, info: ValidationInfo) -> tuple[int, ...] | None:
        if layers is None:
            return layers
        arch = info.data.get("arch") or "mobilenet_v2"
        last = BACKBONE_STAGES.get(arch, 19) - 1
        bad = [v for v in layers if not 0 <= v <= last]
        if bad or len(set(layers)) != len(layers):
            raise ValueError(f"got {list(layers)}; allowed: distinct {arch} block numbers 0 to {last}")
        return layers


BackboneConfig = _scorer_section(
    "backbone",
    {
        "weights": {
            "description": "a state_dict file of `arch` (default: $RAREMINE_BACKBONE_WEIGHTS, else the file of the "
            "installed weights package, SHA-256 checked; none: the scorer is skipped)"
        },
        "arch": {
            "type": Literal["mobilenet_v2", "efficientnet_lite0"],
            # BackboneScorer(arch=None) resolves to mining.models.backbone.DEFAULT_ARCH; a test checks they agree
            "default": "mobilenet_v2",
            "description": "network (docs/benchmarks/backbones.md compares them)",
        },
        "size": {"ge": 32, "multiple_of": 32, "description": "short side of the input (aspect kept)"},
        "max_aspect": {"ge": 1, "description": "long side at most max_aspect x size (1: square input)"},
        "patches": {"description": "patch bank and the patchcore score (with its map)"},
        "bank_images": {"ge": 2},
        "coreset_fraction": {"gt": 0, "le": 1},
        "bank_trim": {"ge": 0, "lt": 0.5},
        "k": {"ge": 1},
        "global_layers": {
            "min_length": 1,
            "description": "stages average-pooled into the global vector (null: the arch's default, "
            "mobilenet_v2 [13, 18] of 0-18, efficientnet_lite0 [11, 17] of 0-17)",
        },
        "patch_weight": {
            "ge": 0,
            "le": 1,
            "description": "weight of the patch percentile in the backbone score (patchcore is separate)",
        },
    },
    "``backbone:`` section (pretrained ImageNet CNN, PatchCore-style patches + global kNN).",
    base=_BackboneChecks,
)

#: scorers whose constructor arguments have a typed section of their own
SCORER_SECTIONS: dict[str, type[BaseModel]] = {
    "autoencoder": AutoencoderConfig,
    "embedding": EmbeddingConfig,
    "backbone": BackboneConfig,
}


class PixelFeaturesConfig(_Section):
    """``pixel.features:`` the filter bank of the pixel classifier (keys = :class:`mining.models.pixel.FeatureSpec`)."""

    bank: Literal["ilastik", "basic"] = "ilastik"
    sigmas: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0, 16.0], min_length=1)
    sigma_min: float = Field(0.5, gt=0)
    sigma_max: float = Field(16.0, gt=0)
    num_sigma: int | None = Field(None, ge=1)
    intensity: bool = True
    edges: bool = True
    texture: bool = True
    downscale: float = Field(1.0, ge=1)
    padding: Literal["reflect", "nearest", "constant"] = "nearest"
    border_feature: bool = False
    border_scale: float = Field(32.0, gt=0)
    normalize: Literal["none", "image", "log", "log_centered"] = "log_centered"
    fast_scales: bool = True
    families: list[Literal["gauss", "log", "gradmag", "dog", "st", "hess"]] = Field(
        default_factory=lambda: ["gauss", "log", "gradmag", "dog", "st", "hess"], min_length=1
    )


class PixelConfig(_Section):
    """``pixel:`` section (``raremine fit-pixel``: features, classifier, training budget)."""

    features: PixelFeaturesConfig = Field(default_factory=PixelFeaturesConfig)
    method: Literal["xgboost", "random_forest"] = "random_forest"
    n_estimators: int = Field(50, ge=1)
    max_depth: int | None = Field(10, ge=1)
    learning_rate: float = Field(0.2, gt=0)
    class_weight: Literal["balanced"] | None = None
    budget: int = Field(100_000, ge=100, description="training pixels per round")
    hard_rounds: int = Field(0, ge=0, description="rounds of hard-example mining")
    sampling: Literal["balanced", "natural"] = Field("natural", description="pixel shares per class")
    class_names: dict[int, str] = Field(
        default_factory=lambda: {2: "defect"}, description="class id (>= 2) -> name; other ids are refused"
    )
    n_jobs: int = Field(1, ge=1)
    random_state: int = 0
    tune: bool = Field(True, description="choose scales, families, normalisation, border, score rule by CV")
    tune_seconds: float = Field(120.0, gt=0, description="CPU seconds the tuning aims to stay within")
    tune_final: Literal["config", "tuner"] = Field(
        "config", description="estimator of the tuned model: this section's classifier and budget, or the CV's own"
    )


class Config(_Section):
    """The whole configuration (``configs/default.yaml`` documents every key)."""

    index: IndexConfig = Field(default_factory=IndexConfig)
    mine: MineConfig = Field(default_factory=MineConfig)
    rank: RankConfig = Field(default_factory=RankConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    learn: LearnConfig = Field(default_factory=LearnConfig)
    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    pixel: PixelConfig = Field(default_factory=PixelConfig)
    scorers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per scorer name: its constructor arguments"
    )

    @field_validator("scorers")
    @classmethod
    def _scorer_arguments(cls, scorers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each ``scorers.<name>`` names a scorer and holds only its constructor's arguments (values as given)."""
        from mining.scorers import available_scorers

        for name, params in scorers.items():
            if name not in available_scorers():
                raise unknown_key_error(name, params, available_scorers())
            model = scorer_model(name)
            try:
                model.model_validate(params)
            except ValidationError as err:
                raise nested_error(err, model, prefix=name) from None
        return scorers


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults), apply overrides, validate.

    Parameters
    ----------
    path : path, optional
        YAML file; None for the built-in defaults.
    overrides : list of str, optional
        ``section.key=value`` assignments applied after the file
        (:func:`mining.configfile.apply_override`).

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        Naming the file, key, value and what is allowed.
    """
    data = read_yaml(path) if path is not None else {}
    source = os.fspath(path) if path is not None else "defaults"
    for o in apply_overrides(data, overrides):
        source += f" + --set {o}"
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(invalid(err, Config, source)) from err


def scorer_params(config: Config, name: str) -> dict[str, Any]:
    """Constructor arguments for scorer ``name`` from the config (empty when not configured).

    Scorers with their own typed section (``autoencoder``, ``embedding``,
    ``backbone``) get that section's values, updated by ``scorers.<name>``.
    The keys of ``scorers.<name>`` are checked when the config is loaded.

    Raises
    ------
    ConfigError
        For ``scorers.<name>`` that is not a mapping.
    """
    params = config.scorers.get(name) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"key 'scorers.{name}': value {params!r} must be a mapping of arguments")
    section = getattr(config, name, None) if name in SCORER_SECTIONS else None
    return {**(section.model_dump() if section is not None else {}), **params}


@functools.cache
def scorer_model(name: str) -> type[BaseModel]:
    """The model of scorer ``name``'s arguments: its typed section, or one derived from its constructor.

    Raises
    ------
    KeyError
        For a name that is not a registered scorer.
    """
    from mining.scorers import SCORERS

    if name in SCORER_SECTIONS:
        return SCORER_SECTIONS[name]
    return params_model(f"{name}_params", signature_params(SCORERS[name]), base=_Section)


def scorer_arguments(name: str) -> list[str] | None:
    """The keyword arguments scorer ``name`` accepts (the keys of ``scorers.<name>``).

    Read from the constructor's source: no scorer module is imported.

    Returns
    -------
    list of str or None
        In the constructor's order; None for an unknown scorer.
    """
    from mining.scorers import SCORERS

    return list(scorer_model(name).model_fields) if name in SCORERS else None
