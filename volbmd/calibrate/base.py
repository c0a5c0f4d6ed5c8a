"""The calibration result: ``density_mg_cm3 = slope · HU + intercept`` for one material.

Saved as calibration.json (schema below) so a phantom scan calibrates later patient scans from the
same scanner and protocol (asynchronous QCT).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from volbmd.errors import ConfigError, InputError
from volbmd.io import atomic_output

__all__ = [
    "Calibration",
    "RodResult",
    "ScannerInfo",
    "load_calibration",
    "save_calibration",
    "r_squared",
    "CALIBRATION_SCHEMA_VERSION",
]

CALIBRATION_SCHEMA_VERSION = "1.0"


def r_squared(x, y, slope: float, intercept: float) -> float:
    """Coefficient of determination of the line ``y = slope · x + intercept`` (1 when y is constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 if ss_tot == 0 else 1.0 - float(np.sum((y - (slope * x + intercept)) ** 2)) / ss_tot


class RodResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    density_mg_cm3: float
    hu: float
    water_mg_cm3: float | None = None
    n_voxels: int | None = None
    fitted_density_mg_cm3: float | None = None
    residual_mg_cm3: float | None = None


class ScannerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manufacturer: str | None = None
    model: str | None = None
    kvp: float | None = None
    convolution_kernel: str | None = None
    date: str | None = None


class Calibration(BaseModel):
    """A linear HU → density map with its provenance and fit quality."""

    model_config = ConfigDict(extra="forbid")
    schema_version: str = CALIBRATION_SCHEMA_VERSION
    method: Literal["phantom", "stored", "internal", "none"]
    material: Literal["HA", "K2HPO4"] | None = None
    slope: float | None = None  # mg/cm³ per HU
    intercept: float | None = None  # mg/cm³
    r2: float | None = None
    phantom: str | None = None
    model: Literal["single", "mindways"] | None = None
    rods: list[RodResult] = []
    reference_tissues: dict[str, dict] = {}
    scanner: ScannerInfo = ScannerInfo()
    warnings: list[str] = []
    details: dict[str, float] = {}
    #: statistical covariance of (slope, intercept): [[var slope, cov], [cov, var intercept]]
    slope_intercept_cov: list[list[float]] | None = None

    def to_density(self, hu):
        """mg/cm³ of ``material`` for HU values (scalar or array); raises if method is "none"."""
        if self.slope is None or self.intercept is None:
            raise ValueError("no calibration: densities are not available")
        return self.slope * np.asarray(hu, dtype=np.float64) + self.intercept

    def density_sd(self, hu, hu_se: float = 0.0) -> float:
        """SD (mg/cm³) of ``to_density(hu)`` from the calibration's own uncertainty and an HU
        standard error ``hu_se`` of the measured value (independent of each other)."""
        if self.slope is None:
            raise ValueError("no calibration: densities are not available")
        return float(np.sqrt(max((self.slope * hu_se) ** 2 + self.line_variance(hu), 0.0)))

    def line_variance(self, hu) -> float:
        """Variance (mg/cm³)² of the calibration line at ``hu`` from its statistical covariance (0
        without one)."""
        if self.slope_intercept_cov is None:
            return 0.0
        c = np.asarray(self.slope_intercept_cov, dtype=np.float64)
        return float(hu * hu * c[0, 0] + 2 * hu * c[0, 1] + c[1, 1])


def hu_se_from_density_sd(calibration: Calibration, hu: float, density_sd: float) -> float:
    """The HU standard error that :meth:`Calibration.density_sd` turned into ``density_sd`` at ``hu``
    (its inverse: what a stored level SD says about the level's own measurement)."""
    var = density_sd**2 - calibration.line_variance(hu)
    return float(np.sqrt(max(var, 0.0))) / abs(calibration.slope or 1.0)


def save_calibration(calibration: Calibration, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(calibration.model_dump(mode="json"), indent=2) + "\n")
    return path


def load_calibration(path: str | os.PathLike) -> Calibration:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("calibration file not found", path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"not a calibration JSON file ({exc})", path) from None
    try:
        cal = Calibration.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {first['msg']}", path) from None
    major = str(data.get("schema_version", CALIBRATION_SCHEMA_VERSION)).split(".")[0] if isinstance(data, dict) else ""
    if major != CALIBRATION_SCHEMA_VERSION.split(".")[0]:
        raise ConfigError(
            f"calibration schema version {data.get('schema_version')!r} is not one this volbmd reads "
            f"({CALIBRATION_SCHEMA_VERSION})",
            path,
        )
    if cal.method != "none" and (
        cal.slope is None or cal.intercept is None or not np.isfinite([cal.slope, cal.intercept]).all()
    ):
        raise ConfigError("calibration has no finite slope and intercept", path)
    if cal.method != "none" and cal.slope is not None and cal.slope <= 0:
        raise ConfigError(
            f"calibration slope must be positive (denser bone has higher HU), got {cal.slope:g} mg/cm³ per HU", path
        )
    if cal.method != "none" and cal.material is None:
        raise ConfigError(
            "calibration names no material (HA or K2HPO4): its densities cannot be compared to thresholds", path
        )
    return cal
