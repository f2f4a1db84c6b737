"""The one configuration machinery of raremine: read YAML, apply ``--set``, build models, explain errors.

Both configuration systems use it: the mining config (:mod:`mining.config`,
``configs/default.yaml``) and the synthesis config (:mod:`synthesis.config`,
``configs/synth-*.yaml``). It depends on PyYAML and pydantic only, so either
can import it without importing the other (or torch).

- :func:`read_yaml` reads a file into a mapping, with one message per way a
  file can be wrong (missing, a folder, unreadable, not UTF-8, not YAML, not
  a mapping).
- :func:`apply_override` applies one ``--set key.sub=value`` assignment (the
  value parsed as a YAML scalar or flow collection) to the raw mapping before
  validation.
- :func:`describe_errors` turns a pydantic ``ValidationError`` into lines that
  each name the dotted key, the value given and what is allowed.
- :func:`signature_params` and :func:`params_model` derive a model from a
  function's or constructor's keyword arguments, so a config section and the
  code it configures share one list of keys and one set of defaults.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names key, value and what is allowed."""


# -- reading -------------------------------------------------------------------------------------------
def read_yaml(path: str | os.PathLike, *, what: str = "config file", error: type[ConfigError] = ConfigError) -> dict:
    """Read a YAML file that must hold a mapping (an empty file is an empty mapping).

    Parameters
    ----------
    path : path
        The file.
    what : str
        How messages name the file (``"config file"``, ``"synthesis config"``).
    error : type
        The :class:`ConfigError` subclass raised.

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        When the file is missing, a folder, unreadable, not UTF-8, not YAML or
        not a mapping; the message names the file and says what to do.
    """
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh)
    except FileNotFoundError as err:
        raise error(f"{what} {source!r} does not exist") from err
    except IsADirectoryError as err:
        raise error(f"{what} {source!r} is a folder: give a YAML file") from err
    except PermissionError as err:
        raise error(f"{what} {source!r} cannot be read: permission denied") from err
    except UnicodeDecodeError as err:
        raise error(
            f"{what} {source!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}):"
            " save it as UTF-8"
        ) from err
    except yaml.YAMLError as err:
        raise error(f"{what} {source!r} is not valid YAML: {err}") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise error(f"{what} {source!r} must hold a mapping of keys, got {type(loaded).__name__}")
    return loaded


# -- --set overrides ----------------------------------------------------------------------------------
def parse_override(assignment: str, *, error: type[ConfigError] = ConfigError) -> tuple[list[str], Any]:
    """Split one ``key.sub=value`` assignment into its key path and its YAML value.

    Parameters
    ----------
    assignment : str
        ``section.key=value``; the value is read as YAML (``3``, ``0.5``,
        ``true``, ``null``, ``text``, ``[a, b]``, ``{k: v}``); empty is ``""``.
    error : type
        The :class:`ConfigError` subclass raised.

    Returns
    -------
    parts : list of str
        The dotted key, split.
    value : object

    Raises
    ------
    ConfigError
        If the assignment has no ``=``, an empty key or a value that is not YAML.
    """
    if "=" not in assignment:
        raise error(f"override {assignment!r} must look like section.key=value")
    key, _, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise error(f"override {assignment!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise error(
            f"override {assignment!r}: the value {raw!r} of key {key.strip()!r} is not a valid YAML value "
            f"({problem}); allowed: a scalar (3, 0.5, true, text) or a flow list/mapping such as [a, b] or {{k: v}}"
        ) from None
    return parts, value


def apply_override(data: dict, assignment: str, *, error: type[ConfigError] = ConfigError) -> None:
    """Apply one ``section.key=value`` override to a raw config mapping, in place.

    Parameters
    ----------
    data : dict
        The mapping read from the file (sections are created when missing).
    assignment : str
        See :func:`parse_override`.
    error : type
        The :class:`ConfigError` subclass raised.

    Raises
    ------
    ConfigError
        As :func:`parse_override`, or when a key on the path is a value, not a section.
    """
    parts, value = parse_override(assignment, error=error)
    _set(data, parts, value, assignment, error)


def _set(data: dict, parts: list[str], value: Any, assignment: str, error: type[ConfigError]) -> None:
    node = data
    for i, p in enumerate(parts[:-1]):
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            where = ".".join(parts[: i + 1])
            raise error(f"override {assignment!r}: {where!r} is a value ({nxt!r}), not a section")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(
    data: dict, overrides: Iterable[str] | Mapping[str, Any] | None, *, error: type[ConfigError] = ConfigError
) -> list[str]:
    """Apply ``--set`` assignments (or a mapping of dotted key to value) in order; return them as text.

    Parameters
    ----------
    data : dict
        The raw mapping, changed in place.
    overrides : list of str or mapping, optional
        ``key.sub=value`` strings, or ``{"key.sub": value}`` (values taken as they are).
    error : type
        The :class:`ConfigError` subclass raised.

    Returns
    -------
    list of str
        One ``key=value`` per override, for naming the source in messages.
    """
    applied = []
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            _set(data, str(key).split("."), value, f"{key}={value}", error)
            applied.append(f"{key}={value}")
        return applied
    for o in overrides or []:
        apply_override(data, o, error=error)
        applied.append(o)
    return applied


# -- error messages ----------------------------------------------------------------------------------------
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
    "tuple_type": "a list",
    "dict_type": "a mapping",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (itself, inside Optional, inside list[...])."""
    out = []
    for a in (annotation, *typing.get_args(annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            out.append(a)
        else:
            out += [b for b in typing.get_args(a) if isinstance(b, type) and issubclass(b, BaseModel)]
    return out


def submodel(model: type[BaseModel] | None, loc: Iterable) -> type[BaseModel] | None:
    """The section model at ``loc`` inside ``model`` (list positions skipped); None when it is not a model."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        models = _models_in(field.annotation) if field is not None else []
        model = models[0] if models else None
    return model


def _allowed(e: dict, model: type[BaseModel], loc: tuple) -> str:
    """What a failed key accepts, in words (from pydantic's error type and context)."""
    typ, ctx = e["type"], e.get("ctx") or {}
    if typ in _BOUNDS:
        bound = next(iter(v for k, v in ctx.items() if k in ("ge", "gt", "le", "lt")), "?")
        return f"a number {_BOUNDS[typ]} {bound}"
    if typ == "multiple_of":
        return f"a multiple of {ctx.get('multiple_of')}"
    if typ in ("literal_error", "enum"):
        return f"one of {ctx.get('expected')}"
    if typ == "string_pattern_mismatch":
        return f"a string matching {ctx.get('pattern')}"
    if typ == "too_short":
        return f"at least {ctx.get('min_length')} item(s)"
    if typ == "too_long":
        return f"at most {ctx.get('max_length')} item(s)"
    if typ == "model_type":
        section = submodel(model, loc)
        return f"a mapping with keys {', '.join(section.model_fields)}" if section else "a mapping"
    return _ALLOWED_BY_TYPE.get(typ, e["msg"])


def describe_errors(err: ValidationError, model: type[BaseModel], *, prefix: str = "") -> list[str]:
    """One line per error of ``err``: the dotted key, the value given and what is allowed.

    Parameters
    ----------
    err : pydantic.ValidationError
        From ``model.model_validate``.
    model : type of BaseModel
        The model validated (to list the allowed keys of a section).
    prefix : str
        Dotted key put in front of every key (a section validated on its own).

    Returns
    -------
    list of str
    """
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc)
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            section = submodel(model, loc[:-1])
            names = list(section.model_fields) if section is not None else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"unknown key {key!r} (value {value!r}){hint}; allowed keys: {', '.join(names) or '?'}")
        elif e["type"] == "missing":
            lines.append(f"key {key!r} is missing (required)")
        elif e["type"] == "value_error":  # the validator's message says what is allowed
            msg = str((e.get("ctx") or {}).get("error", e["msg"]))
            if msg.startswith(_NESTED):  # a section's own description: put this location in front of its keys
                lines += [
                    m.replace("key '", f"key '{key}." if key else "key '") for m in msg[len(_NESTED) :].split("\n")
                ]
            elif isinstance(value, dict) or not loc:  # a check over a whole section
                lines.append(f"key {key or '(top level)'!r}: {msg}")
            else:
                lines.append(f"key {key!r}: value {value!r} is not allowed: {msg}")
        else:
            lines.append(f"key {key!r}: value {value!r} is not allowed; allowed: {_allowed(e, model, loc)}")
    return lines


#: Marks a validator's message that is itself a list of key descriptions (see :func:`nested_error`).
_NESTED = "\x00nested\x00"


def nested_error(err: ValidationError, model: type[BaseModel], *, prefix: str = "") -> ValueError:
    """A ``ValueError`` for a validator to raise when a sub-mapping fails its own model.

    :func:`describe_errors` of the outer model unpacks it, putting the outer
    location in front of every key, so a nested failure reads like any other.

    Parameters
    ----------
    err : pydantic.ValidationError
        The sub-mapping's failure.
    model : type of BaseModel
        The sub-mapping's model.
    prefix : str
        Dotted key of the sub-mapping inside the field that failed.

    Returns
    -------
    ValueError
    """
    return ValueError(_NESTED + "\n".join(describe_errors(err, model, prefix=prefix)))


def unknown_key_error(key: str, value: Any, allowed: Iterable[str]) -> ValueError:
    """A ``ValueError`` for a validator to raise for an unknown key of a free mapping (worded as the model's own).

    Parameters
    ----------
    key : str
        The key, relative to the field whose validator raises.
    value : object
        Its value.
    allowed : iterable of str
        The keys allowed there.

    Returns
    -------
    ValueError
    """
    allowed = list(allowed)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"{_NESTED}unknown key {key!r} (value {value!r}){hint}; allowed keys: {', '.join(allowed)}")


def invalid(err: ValidationError, model: type[BaseModel], source: str, *, what: str = "configuration") -> str:
    """The whole message for a config that failed validation: ``invalid <what> in <source>:`` and one key per line.

    Parameters
    ----------
    err : pydantic.ValidationError
    model : type of BaseModel
        The model validated.
    source : str
        The file and overrides (``configs/x.yaml + --set mine.workers=0``).
    what : str
        What kind of config (``configuration``, ``synthesis config``).

    Returns
    -------
    str
    """
    return f"invalid {what} in {source}:\n  " + "\n  ".join(describe_errors(err, model))


# -- models from signatures --------------------------------------------------------------------------------
class Param(typing.NamedTuple):
    """One keyword argument: its name, annotation (a type, or ``Any``) and default."""

    name: str
    annotation: Any
    default: Any


def function_params(fn: Callable, *, skip: Iterable[str] = (), kinds=(inspect.Parameter.KEYWORD_ONLY,)) -> list[Param]:
    """The keyword arguments of an imported function (type hints resolved), in order.

    Parameters
    ----------
    fn : callable
    skip : iterable of str
        Argument names left out.
    kinds : tuple
        The :class:`inspect.Parameter` kinds taken (default: keyword-only).

    Returns
    -------
    list of Param
    """
    hints = typing.get_type_hints(fn)
    return [
        Param(p.name, hints.get(p.name, Any), p.default)
        for p in inspect.signature(fn).parameters.values()
        if p.kind in kinds and p.name not in set(skip) and p.default is not p.empty
    ]


#: Names an annotation may use when it is read from source (builtins and typing only).
_ANNOTATION_NAMESPACE = {"Any": Any, "Literal": typing.Literal, "typing": typing}


def signature_params(target: str) -> list[Param]:
    """The keyword arguments of ``"module:Class"``'s constructor, read from its source without importing it.

    Scorer modules import torch or scikit-learn; reading a config must not.
    Defaults must be literals (numbers, strings, None, tuples, lists, dicts);
    annotations are evaluated with builtins only, and fall back to ``Any``.

    Parameters
    ----------
    target : str
        ``"package.module:Class"``.

    Returns
    -------
    list of Param
        In the constructor's order (``self`` and ``*args``/``**kwargs`` left out).

    Raises
    ------
    LookupError
        When the module, class or ``__init__`` is not found.
    ValueError
        When a default is not a literal.
    """
    module, cls = target.split(":")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise LookupError(f"module {module!r} not found")
    with open(spec.origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), spec.origin)
    klass = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
    init = klass and next((n for n in klass.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        raise LookupError(f"{target}.__init__ not found in {spec.origin}")
    a = init.args
    positional = a.posonlyargs + a.args
    pairs = list(zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True))
    pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
    out = []
    for arg, default in pairs:
        try:
            value = ast.literal_eval(default)
        except ValueError as err:
            raise ValueError(f"{target}: the default of {arg.arg!r} is not a literal ({ast.unparse(default)})") from err
        annotation: Any = Any
        if arg.annotation is not None:
            try:
                annotation = eval(ast.unparse(arg.annotation), {"__builtins__": __builtins__}, _ANNOTATION_NAMESPACE)
            except Exception:  # a name from the module: the default still names the key
                annotation = Any
        out.append(Param(arg.arg, annotation, value))
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def params_model(
    name: str,
    params: Iterable[Param],
    constraints: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    base: type[BaseModel] = _Strict,
    doc: str | None = None,
) -> type[BaseModel]:
    """A pydantic model whose fields are ``params`` (names, types and defaults), narrowed by ``constraints``.

    Parameters
    ----------
    name : str
        The model's name.
    params : iterable of Param
        From :func:`signature_params` or :func:`function_params`: the one
        source of the keys and their defaults.
    constraints : mapping, optional
        Per key, keyword arguments of :func:`pydantic.Field` (``ge``,
        ``description``, ...) plus ``type`` to narrow the annotation (e.g. a
        ``Literal`` for a ``str`` argument) and ``default`` only for an
        argument whose default is None (meaning "resolved by the code"), to
        name the value it resolves to.
    base : type of BaseModel
        The model's base (its ``model_config`` and validators are kept).
    doc : str, optional
        The model's docstring.

    Returns
    -------
    type of BaseModel

    Raises
    ------
    KeyError
        When ``constraints`` names a key that is not a parameter.
    ValueError
        When ``constraints`` gives a default to a parameter that has one.
    """
    params = list(params)
    constraints = dict(constraints or {})
    unknown = set(constraints) - {p.name for p in params}
    if unknown:
        raise KeyError(f"{name}: constraints for {sorted(unknown)}, which are not parameters")
    fields: dict[str, Any] = {}
    for p in params:
        extra = dict(constraints.get(p.name, {}))
        typ = extra.pop("type", p.annotation)
        default = p.default
        if "default" in extra:
            if default is not None:
                raise ValueError(f"{name}.{p.name}: the code's default {default!r} is the only default")
            default = extra.pop("default")
        fields[p.name] = (typ, Field(default, **extra))
    model = create_model(name, __base__=base, **fields)
    if doc:
        model.__doc__ = doc
    return model
