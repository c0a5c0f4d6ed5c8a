"""Vertebral level names, their order, and the id maps (integer ids live only in configs/labels)."""

from __future__ import annotations

from importlib import resources

from pydantic import field_validator

from volbmd.errors import ConfigError
from volbmd.yaml_models import StrictModel, load_yaml_model

__all__ = ["LEVELS", "level_rank", "is_level", "load_label_scheme", "other_structure_ids", "LABEL_SCHEMES", "LabelScheme"]

#: Cranio-caudal order, transitional levels included.
LEVELS: tuple[str, ...] = (
    tuple(f"C{i}" for i in range(1, 8))
    + tuple(f"T{i}" for i in range(1, 14))
    + tuple(f"L{i}" for i in range(1, 7))
    + ("S1",)
)
LABEL_SCHEMES = ("verse", "totalseg")
_RANK = {name: i for i, name in enumerate(LEVELS)}


def is_level(name: str) -> bool:
    return name in _RANK


def level_rank(name: str) -> int:
    """Position from the skull down (C1 = 0); raises KeyError for unknown names."""
    return _RANK[name]


class LabelScheme(StrictModel):
    name: str
    description: str = ""
    ids: dict[str, int]
    #: Inclusive range of the ids the scheme gives to other structures (organs, other bones): a
    #: mask may hold them, and they are ignored.
    other_id_range: tuple[int, int] | None = None

    @field_validator("ids")
    @classmethod
    def _valid_ids(cls, ids: dict[str, int]) -> dict[str, int]:
        unknown = [k for k in ids if not is_level(k)]
        if unknown:
            raise ValueError(f"unknown level names {unknown}")
        if len(set(ids.values())) != len(ids):
            raise ValueError("two levels share one id")
        if any(v <= 0 for v in ids.values()):
            raise ValueError("ids must be positive (0 is background)")
        return ids


def _scheme(name: str) -> LabelScheme:
    if name not in LABEL_SCHEMES:
        raise ConfigError(f"unknown label scheme '{name}'; choose one of {', '.join(LABEL_SCHEMES)}")
    return load_yaml_model(LabelScheme, resources.files("volbmd_configs") / "labels" / f"{name}.yaml")


def load_label_scheme(name: str) -> dict[str, int]:
    """Level → id for a shipped scheme ("verse", "totalseg")."""
    return dict(_scheme(name).ids)


def other_structure_ids(name: str) -> set[int]:
    """The ids a scheme gives to structures other than vertebrae (ignored in a mask)."""
    scheme = _scheme(name)
    if scheme.other_id_range is None:
        return set()
    lo, hi = scheme.other_id_range
    return set(range(lo, hi + 1)) - set(scheme.ids.values())
