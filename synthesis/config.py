"""The ``raremine synth`` configuration: YAML validated by pydantic, errors naming key, value and allowed values.

Keys of a generator's ``params`` are the keyword arguments of its function in
:mod:`synthesis.procedural` (or of :func:`synthesis.paste.paste`), checked
against the function's signature, so the YAML and the code cannot drift.
"""

from __future__ import annotations

import inspect
import os
import typing
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from synthesis.augment import classic, cutout, gridmask
from synthesis.paste import paste
from synthesis.procedural import SIMULATORS

SKIMAGE_TEXTURES = ("brick", "gravel", "grass", "camera", "moon", "coins", "text", "page")
GENERATOR_KINDS = (*SIMULATORS, "paste")


class SynthConfigError(ValueError):
    """A synthesis config is invalid; the message names the key, the value and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _params_model(name: str, fn, skip: tuple[str, ...]) -> type[BaseModel]:
    """A pydantic model whose fields are ``fn``'s keyword arguments (minus ``skip``), defaults included."""
    hints = typing.get_type_hints(fn)
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name in skip or "ndarray" in str(hints.get(p.name)):
            continue
        fields[p.name] = (hints.get(p.name, Any), p.default)
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


_SKIP = ("rng",)
PARAM_MODELS: dict[str, type[BaseModel]] = {k: _params_model(f"{k}_params", fn, _SKIP) for k, fn in SIMULATORS.items()}
PARAM_MODELS["paste"] = _params_model("paste_params", paste, _SKIP)
AUGMENT_MODELS: dict[str, type[BaseModel]] = {
    "classic": _params_model("classic_params", classic, ("rng",)),
    "cutout": _params_model("cutout_params", cutout, ("rng",)),
    "gridmask": _params_model("gridmask_params", gridmask, ("rng",)),
}


class NormalsConfig(_Section):
    """``normals:`` where the defect-free images come from."""

    skimage: list[Literal[SKIMAGE_TEXTURES]] = Field(
        default_factory=list,  # type: ignore[valid-type]
        description="scikit-image bundled images",
    )
    folder: str | None = Field(None, description="folder of normal images")
    glob: str = Field("*.png", description="file pattern inside folder")
    allowed: str | None = Field(
        None,
        description="folder of allowed-region masks with the normals' stems "
        "(non-zero = a defect may go there); images without one: anywhere",
    )

    @model_validator(mode="after")
    def _some(self):
        if not self.skimage and not self.folder:
            raise ValueError("needs at least one source: normals.skimage or normals.folder")
        return self


class DefectsConfig(_Section):
    """``defects:`` real defect images with masks, cut into crops for the ``paste`` generator.

    Driven by the masks: every non-empty mask gives one crop per defect region,
    cut from the image of the same stem in ``folder`` (which may hold other
    images too), so a mask export of confirmed, painted candidates
    (``raremine export --what labels --format masks``) can be used as is.
    """

    folder: str = Field(description="folder holding the defect images (other images may be there too)")
    masks: str = Field(description="folder of masks named by the images' stems (non-zero = defect; empty = skipped)")
    glob: str = Field("*.png", description="file pattern of the masks")
    margin: int = Field(8, ge=0, description="context pixels kept around each defect")


class GeneratorConfig(_Section):
    """One entry of ``generators:``."""

    kind: Literal[GENERATOR_KINDS]  # type: ignore[valid-type]
    weight: float = Field(1.0, gt=0)
    category: str | None = Field(None, description="category written to the manifest (default: kind)")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_params(self):
        model = PARAM_MODELS[self.kind]
        try:
            model.model_validate(self.params)
        except ValidationError as err:
            raise ValueError(_describe(err, model, prefix="params")) from None
        return self


class AugmentConfig(_Section):
    """``augment:`` classic augmentation before the defect; cutout and gridmask after it (masks follow)."""

    classic: dict[str, Any] | None = None
    cutout: dict[str, Any] | None = None
    gridmask: dict[str, Any] | None = None
    cutout_prob: float = Field(0.0, ge=0, le=1)
    gridmask_prob: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self):
        for name, model in AUGMENT_MODELS.items():
            params = getattr(self, name)
            if params is None:
                continue
            try:
                model.model_validate(params)
            except ValidationError as err:
                raise ValueError(_describe(err, model, prefix=name)) from None
        return self


class SynthConfig(_Section):
    """The whole ``synth-*.yaml`` file."""

    seed: int = Field(0, ge=0)
    n_images: int = Field(24, ge=1)
    size: tuple[int, int] | None = Field((128, 128), description="crop (h, w) taken from each normal; null = whole")
    defect_rate: float = Field(0.75, ge=0, le=1)
    bit_depth: Literal[8, 16] = 8
    normals: NormalsConfig
    defects: DefectsConfig | None = None
    generators: list[GeneratorConfig] = Field(min_length=1)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        if v is not None and min(v) < 8:
            raise ValueError(f"size must be at least 8 x 8 pixels, got {v}")
        return v

    @model_validator(mode="after")
    def _paste_needs_defects(self):
        if any(g.kind == "paste" for g in self.generators) and self.defects is None:
            raise ValueError("a 'paste' generator needs a defects: section (folder and masks)")
        return self


def _allowed_here(model: type[BaseModel] | None) -> str:
    return ", ".join(model.model_fields) if model is not None else "?"


def _submodel(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        if isinstance(part, int):
            continue
        f = model.model_fields.get(str(part))
        if f is None:
            return None
        ann = f.annotation
        args = typing.get_args(ann)
        cands = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        for a in args:  # list[Model]
            cands += [b for b in typing.get_args(a) if isinstance(b, type) and issubclass(b, BaseModel)]
        if not cands:
            return None
        model = cands[0]
    return model


def _describe(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc)
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            allowed = _allowed_here(_submodel(model, loc[:-1]))
            lines.append(f"unknown key {key!r} (value {value!r}); allowed keys: {allowed}")
        elif e["type"] in ("literal_error", "enum"):
            lines.append(f"key {key!r}: value {value!r} is not allowed; allowed values: {e['ctx']['expected']}")
        elif e["type"] == "missing":
            lines.append(f"key {key!r} is missing (required)")
        elif e["type"] == "value_error":
            msg = str(e.get("ctx", {}).get("error", e["msg"]))
            if "key '" in msg:  # a nested description: put this location in front of its keys
                lines.append(msg.replace("key '", f"key '{key}." if key else "key '"))
            else:
                lines.append(f"key {key or '(top level)'!r}: {msg}")
        else:
            lines.append(f"key {key!r}: value {value!r} is invalid: {e['msg']}")
    return "; ".join(lines) if prefix else "\n  ".join(lines)


def load_synth_config(
    path: str | os.PathLike | None = None, *, data: dict | None = None, overrides: dict[str, Any] | None = None
) -> SynthConfig:
    """Read and validate a synthesis YAML file (or a dict).

    Parameters
    ----------
    path : path, optional
        YAML file.
    data : dict, optional
        The parsed config instead of a file.
    overrides : dict, optional
        Top-level keys replaced after reading (e.g. ``{"seed": 3}``).

    Raises
    ------
    SynthConfigError
        Naming the file, every bad key, its value and the allowed keys or values.
    """
    source = "config"
    if path is not None:
        source = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except FileNotFoundError as err:
            raise SynthConfigError(f"synthesis config {source!r} does not exist") from err
        except yaml.YAMLError as err:
            raise SynthConfigError(f"synthesis config {source!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise SynthConfigError(f"synthesis config {source!r} must be a mapping, got {type(data).__name__}")
    data = {**data, **(overrides or {})}
    try:
        return SynthConfig.model_validate(data)
    except ValidationError as err:
        raise SynthConfigError(f"invalid synthesis config {source}:\n  " + _describe(err, SynthConfig)) from err


def generator_params(gen: GeneratorConfig) -> dict[str, Any]:
    """A generator's params, validated and typed (lists become tuples), only the keys given."""
    return PARAM_MODELS[gen.kind].model_validate(gen.params).model_dump(exclude_unset=True)


def augment_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """An augmentation's params, validated and typed, only the keys given."""
    return AUGMENT_MODELS[name].model_validate(params).model_dump(exclude_unset=True)


def generator_weights(cfg: SynthConfig) -> np.ndarray:
    """Normalised selection weights of the generators."""
    w = np.array([g.weight for g in cfg.generators], float)
    return w / w.sum()
