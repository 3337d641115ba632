"""Strict conversion of plain config mappings (YAML / Snakemake params) into dataclasses.

Every config dataclass in `ddae` is built through `from_mapping`, which rejects unknown keys,
missing required keys and values of the wrong type with a `ConfigError` naming the key and where
it is (e.g. ``runs.ddpm.training.lr``). Checkpoints store the plain mapping (`to_mapping`), so
a model rebuilds from its file without pickled classes (nanoGPT-style).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


Key = str | int  # one step of a key path: a mapping key or a list index


def dotted_key(path: tuple[Key, ...] | list[Key]) -> str:
    """``("pretraining", "run", "epochs", 0)`` -> ``pretraining.run.epochs[0]``."""
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text or "(top level)"


class ConfigError(ValueError):
    """A config value is missing, misspelt or of the wrong type; the message names the key.

    ``key``, when given, is the key's path in config.yaml: `ddae.config_messages` then adds its
    line and the YAML anchor it belongs to.
    """

    def __init__(self, message: str, key: tuple[Key, ...] | None = None) -> None:
        super().__init__(message)
        self.key = key


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if annotation is Any:
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML .nan / .inf, JSON 1e999
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation in (bool, str):
        if not isinstance(value, annotation):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported annotation {annotation!r}")


def from_mapping(cls: type[T], mapping: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `mapping`; unknown or missing keys raise `ConfigError`."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {mapping!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        key = f"{where}.{name}"
        if name in mapping:
            kwargs[name] = _convert(mapping[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from error


def tagged_config(
    spec: Mapping[str, Any], tag: str, configs: Mapping[str, type], where: str
) -> Any:
    """Config of the entry named by ``spec[tag]`` (e.g. ``{"arch": "ddpmpp", ...}``).

    ``configs`` maps names to config dataclasses (`ddae.settings.networks.NETWORK_CONFIGS`,
    `ddae.settings.frameworks.FRAMEWORK_CONFIGS`); every other key of ``spec`` must be a field
    of the named one.
    """
    if not isinstance(spec, Mapping) or tag not in spec:
        raise ConfigError(f"{where}.{tag}: required key is missing")
    name = spec[tag]
    if name not in configs:
        raise ConfigError(f"{where}.{tag}: unknown {name!r} (choose from {sorted(configs)})")
    return from_mapping(configs[name], {k: v for k, v in spec.items() if k != tag}, where)


def to_mapping(config: Any) -> dict[str, Any]:
    """Plain-data mapping of a config dataclass (tuples become lists), safe for torch.load."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)
