"""Configuration: YAML files validated into typed objects at the edge.

Every error names the offending key (dotted), the value given and what is
allowed. ``section.key=value`` overrides (from ``--set`` on the command line)
are applied before validation, their values parsed as YAML scalars.
Scorer sections use the scorer's constructor arguments as keys.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


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

    scorers: list[str] = Field(default_factory=lambda: ["contrast"], description="scorers to run")
    backend: Literal["inline", "process"] = "process"
    workers: int = Field(2, ge=1)
    shard_size: int = Field(64, ge=1)
    save_maps: bool = True


class RankConfig(_Section):
    """``rank:`` section."""

    strategy: str = "top"
    n: int = Field(24, ge=1)
    weights: dict[str, float] = Field(default_factory=dict, description="fusion weight per scorer")


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


class Config(_Section):
    """The whole configuration (``configs/default.yaml`` documents every key)."""

    index: IndexConfig = Field(default_factory=IndexConfig)
    mine: MineConfig = Field(default_factory=MineConfig)
    rank: RankConfig = Field(default_factory=RankConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    scorers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per scorer name: its constructor arguments"
    )


def _format_errors(err: ValidationError, data: dict, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            section = _get(Config, e["loc"][:-1])
            allowed = ", ".join(sorted(section.model_fields)) if section else "?"
            lines.append(f"unknown key {key!r} (value {e['input']!r}); allowed keys here: {allowed}")
        else:
            lines.append(f"key {key!r}: value {e.get('input')!r} is invalid: {e['msg']}")
    return f"invalid configuration in {source}:\n  " + "\n  ".join(lines)


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
        If the assignment has no ``=`` or an empty key.
    """
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    key, _, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {assignment!r} has an empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
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
    """Constructor arguments for scorer ``name`` from the config (empty when not configured)."""
    params = config.scorers.get(name) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"key 'scorers.{name}': value {params!r} must be a mapping of arguments")
    return dict(params)
