"""Configuration: YAML files validated into typed objects at the edge.

Every error names the offending key (dotted), the value given and what is
allowed. ``section.key=value`` overrides (from ``--set`` on the command line)
are applied before validation, their values parsed as YAML scalars.
Scorer sections use the scorer's constructor arguments as keys.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names key, value and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IndexConfig(_Section):
    """``index:`` section."""

    tile_size: int = Field(1024, gt=0, description="images larger than this (px) are split into tiles")
    tile_overlap: int = Field(64, ge=0, description="pixels shared by neighbouring tiles")
    max_pixels: int = Field(200_000_000, gt=0, description="larger images are recorded as too_large")
    workers: int | None = Field(None, ge=1, description="decoding threads (default: CPU count)")
    extensions: list[str] = Field(
        default_factory=lambda: [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy"],
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
    weights: dict[str, float] = Field(default_factory=dict, description="fusion weight per scorer")
    primary: list[str] = Field(
        default_factory=list,
        description="scorers that alone decide the fused score of the images they scored ([]: none)",
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


class AutoencoderConfig(_Section):
    """``autoencoder:`` section (the ``autoencoder`` scorer's constructor arguments)."""

    kind: Literal["auto", "features", "pixels"] = Field(
        "auto", description="auto: reconstruct MobileNetV2 patch features when the weights are found, else pixels"
    )
    backbone_weights: str | None = Field(None, description="mobilenet_v2 state_dict; null = as the backbone scorer")
    layers: list[int] = Field(default_factory=lambda: [6, 13], description="MobileNetV2 blocks (features kind)")
    feature_size: int = Field(224, ge=32, description="the archive's median image is resized to ~this**2 px")
    size: int = Field(64, ge=16, multiple_of=8, description="pixels kind: input side (px) or training crop side")
    resize: Literal["resize", "crop"] = Field("resize", description="squash whole images, or train on crops")
    sample_size: int = Field(256, ge=1, description="catalogue images drawn (seeded) to train on")
    epochs: int | None = Field(None, ge=1, description="null: pixels 30, features 10")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    trim: float = Field(0.1, ge=0, lt=1, description="fraction of each batch's highest losses left out")
    error: Literal["l2", "ssim"] = "l2"
    smooth_sigma: float = Field(1.0, ge=0)
    score: Literal["topk", "max"] = "topk"
    top_fraction: float = Field(0.01, gt=0, le=1)
    base_channels: int = Field(16, ge=1)
    latent_channels: int | None = Field(None, ge=1, description="null: pixels 16; features chosen by `explained`")
    explained: float = Field(0.9, gt=0, lt=1, description="features kind: variance kept by the chosen latent size")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="where training runs")
    weights: str | None = Field(None, description="a saved autoencoder to load instead of training")


class EmbeddingConfig(_Section):
    """``embedding:`` section (cheap descriptors, outlier scores, 2-D map)."""

    size: int = Field(64, ge=16)
    bins: int = Field(16, ge=2)
    lbp_radii: list[int] = Field(default_factory=lambda: [1])
    glcm_distances: list[int] = Field(default_factory=lambda: [1, 3])
    levels: int = Field(32, ge=2, le=256)
    embeddings: list[str] = Field(
        default_factory=lambda: ["descriptors", "autoencoder"], description="stored embeddings the outlier scores use"
    )
    methods: list[Literal["knn", "lof", "iforest"]] = Field(default_factory=lambda: ["knn", "lof", "iforest"])
    k: int = Field(10, ge=1)
    approx_threshold: int = Field(20_000, ge=2, description="from this many images on, kNN uses pynndescent")
    map_method: Literal["auto", "umap", "tsne", "none"] = "auto"
    map_embeddings: list[str] = Field(default_factory=lambda: ["backbone", "descriptors", "autoencoder"])
    random_state: int = 0


#: stages of each ``backbone.arch`` (kept here so that reading a config never imports torch;
#: tests check it against ``mining.backbone.ARCHS``)
BACKBONE_STAGES = {"mobilenet_v2": 19, "efficientnet_lite0": 18}


class BackboneConfig(_Section):
    """``backbone:`` section (pretrained ImageNet CNN, PatchCore-style patches + global kNN)."""

    weights: str | None = Field(
        None,
        description="a state_dict file of `arch` (default: $RAREMINE_BACKBONE_WEIGHTS, else the file of the "
        "installed weights package, SHA-256 checked; none: the scorer is skipped)",
    )
    arch: Literal["mobilenet_v2", "efficientnet_lite0"] = Field(
        "mobilenet_v2", description="network (docs/benchmarks/backbones.md compares them)"
    )
    size: int = Field(224, ge=32, multiple_of=32, description="short side of the input (aspect kept)")
    max_aspect: float = Field(3.0, ge=1, description="long side at most max_aspect x size (1: square input)")
    patches: bool = Field(True, description="patch bank and the patchcore score (with its map)")
    bank_images: int = Field(256, ge=2)
    coreset_fraction: float = Field(0.1, gt=0, le=1)
    bank_trim: float = Field(0.01, ge=0, lt=0.5)
    k: int = Field(5, ge=1)
    global_layers: list[int] | None = Field(
        None,
        min_length=1,
        description="stages average-pooled into the global vector (null: the arch's default, "
        "mobilenet_v2 [13, 18] of 0-18, efficientnet_lite0 [11, 17] of 0-17)",
    )
    patch_weight: float = Field(
        0.0, ge=0, le=1, description="weight of the patch percentile in the backbone score (patchcore is separate)"
    )
    seed: int = 0

    @field_validator("global_layers")
    @classmethod
    def _blocks(cls, layers: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if layers is None:
            return layers
        arch = info.data.get("arch", "mobilenet_v2")
        last = BACKBONE_STAGES.get(arch, 19) - 1
        bad = [v for v in layers if not 0 <= v <= last]
        if bad or len(set(layers)) != len(layers):
            raise ValueError(f"got {layers}; allowed: distinct {arch} block numbers 0 to {last}")
        return layers


class PixelFeaturesConfig(_Section):
    """``pixel.features:`` the filter bank of the pixel classifier (keys = :class:`mining.pixel.FeatureSpec`)."""

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


def _format_errors(err: ValidationError, data: dict, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, int))  # list positions name no key
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            section = _get(Config, loc[:-1])
            names = sorted(section.model_fields) if section else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(
                f"unknown key {key!r} (value {e['input']!r}){hint}; allowed keys here: {', '.join(names) or '?'}"
            )
        elif e["type"] == "value_error":  # the validator's message says what is allowed
            lines.append(f"key {key!r}: value {e.get('input')!r} is not allowed: {e.get('ctx', {}).get('error')}")
        else:
            lines.append(f"key {key!r}: value {e.get('input')!r} is not allowed; allowed: {_allowed(e, loc)}")
    return f"invalid configuration in {source}:\n  " + "\n  ".join(lines)


_ALLOWED_BY_TYPE = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "missing": "a value (the key is required)",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _allowed(e: dict, loc: tuple) -> str:
    """What a failed key accepts, in words (from pydantic's error type and context)."""
    typ, ctx = e["type"], e.get("ctx") or {}
    if typ in _BOUNDS:
        bound = next(iter(v for k, v in ctx.items() if k in ("ge", "gt", "le", "lt")), "?")
        return f"a number {_BOUNDS[typ]} {bound}"
    if typ == "literal_error":
        return f"one of {ctx.get('expected')}"
    if typ == "string_pattern_mismatch":
        return f"a string matching {ctx.get('pattern')}"
    if typ == "too_short":
        return f"at least {ctx.get('min_length')} item(s)"
    if typ == "too_long":
        return f"at most {ctx.get('max_length')} item(s)"
    if typ == "model_type":
        section = _get(Config, loc)
        return f"a mapping with keys {', '.join(sorted(section.model_fields))}" if section else "a mapping"
    return _ALLOWED_BY_TYPE.get(typ, e["msg"])


def _get(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``section.key=value`` override to a raw config dict, in place.

    Raises
    ------
    ConfigError
        If the assignment has no ``=``, an empty key or a value that is not YAML.
    """
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    key, _, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {assignment!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"override {assignment!r}: the value {raw!r} of key {key.strip()!r} is not a valid YAML value "
            f"({problem}); allowed: a scalar (3, 0.5, true, text) or a flow list/mapping such as [a, b] or {{k: v}}"
        ) from None
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {assignment!r}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults), apply overrides, validate.

    Parameters
    ----------
    path : path, optional
        YAML file; None for the built-in defaults.
    overrides : list of str, optional
        ``section.key=value`` assignments applied after the file.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        Naming the file, key, value and what is allowed.
    """
    data: dict = {}
    source = "defaults"
    if path is not None:
        source = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh)
        except FileNotFoundError as err:
            raise ConfigError(f"config file {source!r} does not exist") from err
        except IsADirectoryError as err:
            raise ConfigError(f"config file {source!r} is a folder: give a YAML file") from err
        except PermissionError as err:
            raise ConfigError(f"config file {source!r} cannot be read: permission denied") from err
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"config file {source!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}):"
                " save it as UTF-8"
            ) from err
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {source!r} is not valid YAML: {err}") from err
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {source!r} must hold a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    for o in overrides or []:
        apply_override(data, o)
        source += f" + --set {o}"
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, data, source)) from err


def scorer_params(config: Config, name: str) -> dict[str, Any]:
    """Constructor arguments for scorer ``name`` from the config (empty when not configured).

    Scorers with their own typed section (``autoencoder``, ``embedding``,
    ``backbone``) get that section's values, updated by ``scorers.<name>``.

    Raises
    ------
    ConfigError
        For ``scorers.<name>`` that is not a mapping, or holds a key the
        scorer does not accept (the accepted keys are listed).
    """
    params = config.scorers.get(name) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"key 'scorers.{name}': value {params!r} must be a mapping of arguments")
    accepted = scorer_arguments(name)
    if accepted is not None:
        for key, value in params.items():
            if key not in accepted:
                close = difflib.get_close_matches(str(key), accepted, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"unknown key 'scorers.{name}.{key}' (value {value!r}){hint}; "
                    f"scorer {name!r} accepts: {', '.join(accepted)}"
                )
    section = getattr(config, name, None) if name in _SCORER_SECTIONS else None
    return {**(section.model_dump() if section is not None else {}), **params}


def scorer_arguments(name: str) -> list[str] | None:
    """The keyword arguments scorer ``name`` accepts (the keys of ``scorers.<name>``).

    Returns
    -------
    list of str or None
        In the constructor's order; None for an unknown scorer or one that
        takes any keyword.
    """
    import importlib
    import inspect

    from mining.scorers import SCORERS

    if name not in SCORERS:
        return None
    module, cls = SCORERS[name].split(":")
    params = list(inspect.signature(getattr(importlib.import_module(module), cls).__init__).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


#: scorers whose constructor arguments have a typed section of their own
_SCORER_SECTIONS = ("autoencoder", "embedding", "backbone")
