"""The ``raremine synth`` configuration: YAML validated by pydantic, errors naming key, value and allowed values.

Keys of a generator's ``params`` are the keyword arguments of its function in
:mod:`synthesis.procedural` (or of :func:`synthesis.paste.paste`), checked
against the function's signature, so the YAML and the code cannot drift.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mining.configfile import (
    ConfigError,
    apply_overrides,
    function_params,
    invalid,
    nested_error,
    params_model,
    read_yaml,
)
from synthesis.augment import classic, cutout, gridmask
from synthesis.paste import paste
from synthesis.procedural import SIMULATORS

SKIMAGE_TEXTURES = ("brick", "gravel", "grass", "camera", "moon", "coins", "text", "page")
GENERATOR_KINDS = (*SIMULATORS, "paste")


class SynthConfigError(ConfigError):
    """A synthesis config is invalid; the message names the key, the value and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _params_model(name: str, fn: Callable, skip: Iterable[str]) -> type[BaseModel]:
    """A pydantic model whose fields are ``fn``'s keyword arguments (minus ``skip`` and arrays), defaults included."""
    params = [p for p in function_params(fn, skip=skip) if "ndarray" not in str(p.annotation)]
    return params_model(name, params, base=_Section)


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
            raise nested_error(err, model, prefix="params") from None
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
                raise nested_error(err, model, prefix=name) from None
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


def load_synth_config(
    path: str | os.PathLike | None = None,
    *,
    data: dict | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
) -> SynthConfig:
    """Read and validate a synthesis YAML file (or a dict).

    Parameters
    ----------
    path : path, optional
        YAML file.
    data : dict, optional
        The parsed config instead of a file.
    overrides : list of str or mapping, optional
        ``--set`` assignments (``key.sub=value``, the same syntax as the mining
        config's) or a mapping of dotted key to value (e.g. ``{"seed": 3}``),
        applied after reading.

    Raises
    ------
    SynthConfigError
        Naming the file, every bad key, its value and the allowed keys or values.
    """
    source = "config"
    if path is not None:
        source = os.fspath(path)
        data = read_yaml(path, what="synthesis config", error=SynthConfigError)
    if not isinstance(data, dict):
        raise SynthConfigError(f"synthesis config {source!r} must be a mapping, got {type(data).__name__}")
    data = copy.deepcopy(data)
    for o in apply_overrides(data, overrides, error=SynthConfigError):
        source += f" + --set {o}"
    try:
        return SynthConfig.model_validate(data)
    except ValidationError as err:
        raise SynthConfigError(invalid(err, SynthConfig, source, what="synthesis config")) from err


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
