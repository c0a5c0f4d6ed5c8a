"""What `volbmd train bmd` and `volbmd train seg` share: the training cohort (a manifest, or a
synthetic cohort made on the spot), reading a training YAML, and writing result files atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from volbmd.errors import ConfigError, InputError

__all__ = [
    "Strict",
    "TrainConfig",
    "CohortConfig",
    "SyntheticCohortConfig",
    "load_training_yaml",
    "cohort_manifest",
    "write_file",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticCohortConfig(Strict):
    n_scans: int = 80
    levels: list[str] = ["L1", "L2", "L3"]
    test_share: float = 0.25
    seed: int = 0


class CohortConfig(Strict):
    manifest: str | None = None  # a CSV (scan, labels, level, bmd_mg_cm3, split), relative to the config
    synthetic: SyntheticCohortConfig | None = None
    label_scheme: str = "verse"


class TrainConfig(Strict):
    """The part every training config has."""

    kind: str
    cohort: CohortConfig


Config = TypeVar("Config", bound=TrainConfig)


def load_training_yaml(path: str | os.PathLike, model: type[Config], kind: str) -> tuple[Config, Path]:
    """The config of ``path`` validated as ``model`` (its ``kind`` must be ``kind``, its cohort a
    manifest or a synthetic section), and the folder relative paths in it start from."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError("not found", path)
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"not YAML ({exc})", path) from None
    if isinstance(content, dict) and content.get("kind", kind) != kind:
        raise ConfigError(f"kind {content['kind']!r}: this command trains '{kind}' models", path)
    try:
        config = model.model_validate(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"invalid training config: {where}: {first['msg']}{more}", path) from None
    cohort = config.cohort
    if (cohort.manifest is None) == (cohort.synthetic is None):
        raise ConfigError("cohort needs either a manifest or a synthetic section", path)
    return config, path.parent


def cohort_manifest(cohort: CohortConfig, base: Path, out: Path, say=print) -> Path:
    """The cohort's manifest: the given one (relative to ``base``), or a synthetic cohort made in
    ``out``/cohort."""
    if cohort.synthetic is None:
        return (base / str(cohort.manifest)).resolve()
    from volbmd.models.synthetic import SyntheticCohortOptions, make_synthetic_cohort

    s = cohort.synthetic
    say(f"making a synthetic cohort of {s.n_scans} scans in {out / 'cohort'}")
    options = SyntheticCohortOptions(n_scans=s.n_scans, levels=tuple(s.levels), test_share=s.test_share, seed=s.seed)
    return make_synthetic_cohort(out / "cohort", options)


def write_file(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` atomically."""
    from volbmd.io import atomic_output

    with atomic_output(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
