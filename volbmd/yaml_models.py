"""YAML files validated as pydantic models: the loader every config file goes through.

Errors name the file and the field: ``configs/x.yaml: measurement.roi: Input should be ...``. This
module depends on nothing else in volbmd but its errors, so any module may use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from volbmd.errors import ConfigError

__all__ = ["StrictModel", "load_yaml_model", "merge_settings", "format_validation"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """A frozen model that refuses unknown keys (a typo in a YAML file is an error, not ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def format_validation(err: ValidationError, source) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def load_yaml_model(model: type[M], path, overrides: dict[str, Any] | None = None) -> M:
    """Read YAML from ``path`` (a file or an importlib resource) and validate it as ``model``."""
    try:
        text = Path(path).read_text() if isinstance(path, (str, os.PathLike)) else path.read_text()
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config ({exc.strerror})", path) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{where}", path) from None
    if not isinstance(data, dict):
        raise ConfigError("config must be a mapping of keys to values", path)
    if overrides:
        data = merge_settings(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation(err, path), path) from None


def merge_settings(base: dict, extra: dict) -> dict:
    """Nested dicts merged key by key (``extra`` wins); sections are never replaced whole."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = value
    return out
