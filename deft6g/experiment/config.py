"""Configuration files checked key by key before any work starts: a study's configuration is a dataclass, a TOML
file replaces some of its keys, and a refused value raises `ConfigError` naming the key."""

import math
import re
import tomllib
from dataclasses import asdict, fields, is_dataclass, replace
from os import PathLike
from typing import get_args, get_origin

from deft6g.deprecation import renamed_keys


MAX_SEED = 2 ** 32 - 1
"""The largest seed a configuration or --seed takes."""


class ConfigError(ValueError):
    """A configuration value a study refuses: the message starts with "configuration key '<key>'" (or names the
    file that cannot be read)."""


def read_toml(path):
    """The TOML file at `path` as a dict; a file that cannot be read or is no TOML raises ConfigError."""
    if not isinstance(path, (str, PathLike)):
        raise TypeError(f"`path` must be a TOML file path, got {type(path).__name__}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"configuration file {path}: {err}") from None


def load_flat_config(cfg, path=None, renamed=None):
    """`cfg` (a dataclass configuration with top-level keys) with the keys of the TOML file `path` replaced (None:
    unchanged). renamed: {old key: (new key, convert)} mapped with a warning (`deft6g.deprecation.renamed_keys`).
    Raises ConfigError naming the key: an unreadable file, unknown keys, values of another type, values the
    configuration's own checks (its __post_init__, a ValueError naming the key in backticks) refuse."""
    if path is None:
        return cfg
    data = renamed_keys(read_toml(path), renamed or {}, str(path), ConfigError)
    for key, value in data.items():
        if not hasattr(cfg, key):
            raise ConfigError(f"configuration key {key!r}: unknown; known: {sorted(asdict(cfg))}")
        default = getattr(cfg, key)
        number = isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)
        if not (number or default is None or type(value) is type(default)):
            raise ConfigError(f"configuration key {key!r}: expected {type(default).__name__}, got {value!r}")
    try:
        return replace(cfg, **data)
    except ValueError as err:
        key = re.search(r"`(\w+)`", str(err))
        raise ConfigError(f"configuration key {key[1] if key else '?'!r}: {err}") from err


def require(ok, key, message):
    """ConfigError "configuration key '<key>': <message>" unless `ok`."""
    if not ok:
        raise ConfigError(f"configuration key {key!r}: {message}")


def require_int(value, key, low, high=None):
    """`value` (already checked to be an int) lies in [low, high] (high None: no upper bound)."""
    require(low <= value and (high is None or value <= high), key,
            f"must be an integer in [{low}, {'inf' if high is None else high}], got {value!r}")


def require_positive(value, key):
    """`value` (a number) is > 0."""
    require(value > 0, key, f"must be > 0, got {value!r}")


_KINDS = {bool: "a boolean (true or false, not a string)", int: "an integer", float: "a finite number",
          str: "a string"}


def _is(value, kind):
    """Whether `value` is a TOML value of the field type `kind` (bool, int, float: int or float, finite; str)."""
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def check_fields(section, prefix=""):
    """Every field of the dataclass `section` holds its annotated type: a section (a dataclass, checked in turn,
    its keys named `prefix` + section + "."), bool, int, float or str, or a list of one of them without repeated
    values (lists are grids or sets: a repeat would count a point twice). Raises ConfigError naming the key."""
    for f in fields(section):
        key, value = prefix + f.name, getattr(section, f.name)
        if is_dataclass(f.type):
            require(isinstance(value, f.type), key, f"must be a table (section), got {value!r}")
            check_fields(value, key + ".")
        elif get_origin(f.type) is list:
            kind = get_args(f.type)[0]
            require(isinstance(value, list) and all(_is(v, kind) for v in value), key,
                    f"must be a list whose every entry is {_KINDS[kind]}, got {value!r}")
            repeated = sorted({v for i, v in enumerate(value) if v in value[:i]}, key=str)
            require(not repeated, key, f"must not repeat a value (each is one point or item), got {repeated} "
                                       f"more than once in {value!r}")
        else:
            require(_is(value, f.type), key, f"must be {_KINDS[f.type]}, got {value!r}")
