"""One config machinery for every stage: frozen dataclasses loaded from YAML presets plus ``key=value`` overrides.

Why hand-written rather than OmegaConf/Hydra: the project needs exactly four things and no more — unknown keys
rejected with the valid ones listed (and the nearest one suggested), every value type-checked against the
dataclass annotation before any heavy work starts, dotted overrides from the command line, and the resolved
config written back as YAML into each run directory. Stage configs (data, train, analysis) are plain frozen
dataclasses whose ``__post_init__`` checks ranges and cross-field rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range; the message names the field."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert lists to tuples and ints to floats where declared."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: expected one of {list(allowed)}, got {value!r}")
        return value
    if origin in (tuple, list, Sequence):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string; people write it that way
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def unknown_key_error(cls: type, key: str, prefix: str = "") -> ConfigError:
    """The error for a key ``cls`` does not have: lists the valid keys and suggests the nearest."""
    valid = [f.name for f in dataclasses.fields(cls)]
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{prefix}{near[0]}'?" if near else ""
    return ConfigError(f"unknown key '{prefix}{key}' for {cls.__name__}.{hint} Valid keys: {', '.join(valid)}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``: unknown keys rejected, every value type-checked. A dataclass with an
    ``OPEN_FIELD`` class attribute collects the keys it does not declare into that mapping field instead (whoever
    consumes the mapping validates them)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = getattr(cls, "OPEN_FIELD", None)  # a section that passes keys it does not declare on (see GRPOSettings)
    data = dict(data)
    if extra is not None:
        passed = {str(k): data.pop(k) for k in list(data) if k not in names}
        if passed:
            data[extra] = {**(data.get(extra) or {}), **passed}
    for key in data:
        if key not in names:
            raise unknown_key_error(cls, str(key), prefix)
    kwargs = {key: _coerce(value, hints[key], f"{prefix}{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field without a default
        raise ConfigError(f"{cls.__name__}: {e}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3); the value is read as YAML, so ``[3, 4]``, ``true`` and ``null`` work."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (for example seed=7)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    return key.strip().split("."), value


def _merged(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``parent``: sections (mappings) merge key by key, any other value (lists included) replaces."""
    out = dict(parent)
    for key, value in child.items():
        below = out.get(key)
        out[key] = _merged(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return out


def read_preset(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping a YAML preset declares, with ``extends: <preset>`` resolved: the named preset (a name in the same
    folder, or a path) read first and this file's keys merged over it (:func:`_merged`), to any depth."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level")
    data = dict(loaded or {})
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"config file {str(path)!r}: extends: expected a preset name, got {parent!r}")
    where = find_preset(parent, path.parent, f"{path.name}: extends")
    if where.resolve() in _chain or where.resolve() == path.resolve():
        names = " -> ".join(p.name for p in (*_chain, path.resolve(), where.resolve()))
        raise ConfigError(f"config file {str(path)!r}: extends forms a cycle ({names})")
    return _merged(read_preset(where, (*_chain, path.resolve())), data)


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``cls`` from a YAML preset (optional, ``extends:`` resolved) with ``key=value`` overrides on top."""
    data: dict[str, Any] = read_preset(path) if path is not None else {}
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return from_dict(cls, data)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (tuples as lists), ready for YAML or JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_hash(cfg: Any) -> str:
    """Short stable hash of a config's resolved values, or of a JSON-able dict (identifies an artifact's inputs)."""
    blob = json.dumps(cfg if isinstance(cfg, dict) else to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def dump_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from tasks.atomic import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def find_preset(preset: str, directory: Path, what: str = "preset") -> Path:
    """``<directory>/<preset>.yaml`` for a preset name, or the path itself when given a YAML file; a clear error
    listing the presets that exist otherwise."""
    p = Path(preset)
    if p.suffix in (".yaml", ".yml"):
        return p
    path = directory / f"{preset}.yaml"
    if not path.is_file():
        names = sorted(x.stem for x in directory.glob("*.yaml"))
        raise ConfigError(f"{what} {preset!r} not found: expected one of {names} or a path to a YAML file")
    return path
