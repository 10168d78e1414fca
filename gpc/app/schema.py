"""Typed schemas for every file and command config, checked once at load, each error naming the field.

A schema is a dataclass whose field types say what is allowed (bool, int, float, str, Literal choices,
Optional, lists, tuples, string-keyed dicts, nested dataclasses, unions of these) and whose field metadata may
add `minimum`, `maximum`, `below`, `positive` and `doc`. `check(Schema, raw, where)` refuses unknown keys
(with "did you mean" where one is close), missing required fields and values of the wrong type or range,
then builds the dataclass (whose own `__post_init__` may check more: its `ValueError("field: ...")` is
reported under the field). `describe` lists the fields for the documentation, so the docs are generated from
the same source as the checks.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from typing import Any, Literal, Mapping, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from gpc.errors import ConfigError


def check(schema: type, raw: Any, where: str, field: str = "", require_all: bool = False):
    """`raw` (a mapping, DictConfig included) as an instance of the dataclass `schema`. With `require_all`,
    fields with defaults are required too (a checkpoint's config must not be completed from defaults)."""
    return _value(schema, _plain(raw), where, field, require_all)


def _plain(raw: Any) -> Any:
    if isinstance(raw, (DictConfig, ListConfig)):
        return OmegaConf.to_container(raw, resolve=True)
    return raw


def _fail(where: str, field: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _value(kind: Any, value: Any, where: str, field: str, require_all: bool = False, meta: Mapping = {}) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if dataclasses.is_dataclass(kind):
        return _dataclass(kind, value, where, field, require_all)
    if origin in (Union, types.UnionType):
        return _union(args, value, where, field, require_all, meta)
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise _fail(where, field, f"need one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(where, field, f"need a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _fail(where, field, f"need {len(args)} items, got {len(value)}")
            return tuple(_value(a, v, where, f"{field}[{i}]", require_all) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_value(item, v, where, f"{field}[{i}]", require_all, meta) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(where, field, f"need a mapping, got {value!r}")
        key_kind, item = args if args else (str, Any)
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise _fail(where, field, f"keys must be strings, got {key!r}")
            out[key] = _value(item, v, where, _join(field, key), require_all, meta)
        return out
    return _scalar(kind, value, where, field, meta)


def _requirement(kind: Any, meta: Mapping) -> str:
    """What a number field needs, in words: `an integer >= 1`, `a number > 0 and < 1`."""
    bounds = []
    if "minimum" in meta:
        bounds.append(f">= {meta['minimum']}")
    if meta.get("positive"):
        bounds.append("> 0")
    if "maximum" in meta:
        bounds.append(f"<= {meta['maximum']}")
    if "below" in meta:
        bounds.append(f"< {meta['below']}")
    noun = "an integer" if kind is int else "a number"
    return f"{noun} {' and '.join(bounds)}" if bounds else noun


def _scalar(kind: Any, value: Any, where: str, field: str, meta: Mapping) -> Any:
    if kind is type(None):
        if value is not None:
            raise _fail(where, field, f"need null, got {value!r}")
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise _fail(where, field, f"need true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise _fail(where, field, f"need a string, got {value!r}")
        if not value and not meta.get("allow_empty"):
            raise _fail(where, field, "need a non-empty string")
        return value
    if kind not in (int, float):
        raise TypeError(f"schema type {kind!r} of {field} is not supported")
    need = f"need {_requirement(kind, meta)}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if kind is int else numbers.Real):
        raise _fail(where, field, need)
    value = kind(value)
    if kind is float and not math.isfinite(value):
        raise _fail(where, field, f"need a finite number, got {value!r}")
    if ("minimum" in meta and value < meta["minimum"]) or ("maximum" in meta and value > meta["maximum"]) or \
            (meta.get("positive") and not value > 0) or ("below" in meta and not value < meta["below"]):
        raise _fail(where, field, need)
    return value


def _union(args, value, where, field, require_all, meta):
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    # Mappings go to the dataclass option, scalars to the others: the error then comes from the right one.
    if isinstance(value, Mapping):
        chosen = [a for a in options if dataclasses.is_dataclass(a) or typing.get_origin(a) is dict] or options
    else:
        chosen = [a for a in options if not dataclasses.is_dataclass(a)] or options
    errors = []
    for option in chosen:
        try:
            return _value(option, value, where, field, require_all, meta)
        except ConfigError as err:
            errors.append(err)
    if len(errors) == 1 and (isinstance(value, Mapping) or len(chosen) == len(options)):
        raise errors[0]
    wanted = " or ".join(_shape(option) for option in options)
    raise _fail(where, field, f"need {wanted}, got {value!r}")


def _shape(kind: Any) -> str:
    """A value of `kind` as a user would write it: `{topic: ..., timeout_s: ...}` for a mapping."""
    if dataclasses.is_dataclass(kind):
        return "{" + ", ".join(f"{f.name}: ..." for f in dataclasses.fields(kind) if f.init) + "}"
    return _type_name(kind)


def _dataclass(schema: type, value: Any, where: str, field: str, require_all: bool):
    if isinstance(value, schema):
        return value
    if not isinstance(value, Mapping):
        raise _fail(where, field, f"need a mapping of {', '.join(f.name for f in dataclasses.fields(schema))}, "
                                  f"got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    hints = typing.get_type_hints(schema)
    for key in value:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(fields)}"
            raise _fail(where, _join(field, str(key)), f"unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if name not in value:
            if not has_default or (require_all and not f.metadata.get("optional")):
                raise _fail(where, _join(field, name), "missing")
            continue
        kwargs[name] = _value(hints[name], value[name], where, _join(field, name), require_all, f.metadata)
    try:
        return schema(**kwargs)
    except ValueError as err:
        message = str(err)
        sub, _, rest = message.partition(": ")
        if rest and sub in fields:  # the dataclass named one of its fields
            raise _fail(where, _join(field, sub), rest) from None
        raise _fail(where, field, message) from None


def _type_name(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return "any"
    if dataclasses.is_dataclass(kind):
        return "mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " or ".join(repr(a) if not isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[1])}" if args else "mapping"
    return {type(None): "null", bool: "bool", int: "int", float: "number", str: "string"}.get(kind, str(kind))


def describe(schema: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(field, type, default, doc) for every field, nested dataclasses flattened as `outer.inner`."""
    rows = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if not f.init:
            continue
        kind = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default = repr(f.default) if not isinstance(f.default, str) else f.default
        elif f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            default = "(see below)" if dataclasses.is_dataclass(made) else repr(made)
        else:
            default = "required"
        rows.append((prefix + f.name, _type_name(kind), default, f.metadata.get("doc", "")))
        if dataclasses.is_dataclass(kind):
            rows += describe(kind, f"{prefix}{f.name}.")
        elif typing.get_origin(kind) is list and dataclasses.is_dataclass(item := (typing.get_args(kind) or [None])[0]):
            rows += describe(item, f"{prefix}{f.name}[].")  # the fields of each item
    return rows


def markdown_table(schema: type) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{name}` | {cell(kind)} | {cell(default)} | {cell(meaning)} |"
              for name, kind, default, meaning in describe(schema)]
    return "\n".join(lines)


def doc(text: str, **meta) -> dict:
    """Field metadata: `field(default=..., metadata=doc("why", minimum=1))`."""
    return {"doc": text, **meta}
