"""kVp normalisation, contrast correction, K2HPO4 ↔ HA conversion and contrast phase detection."""

from __future__ import annotations

import numpy as np

from volbmd.config import CalibrationConfig

__all__ = [
    "kvp_factor",
    "normalise_hu_to_120kvp",
    "k2hpo4_per_ha",
    "convert_density",
    "contrast_phase_from_aorta",
    "contrast_correction_hu",
]


def _interp_table(table: dict[int, float], x: float) -> float:
    keys = sorted(table)
    return float(np.interp(x, keys, [table[k] for k in keys]))


def kvp_factor(kvp: float, config: CalibrationConfig) -> float:
    """Vertebral HU at ``kvp`` divided by HU at 120 kVp (e.g. 1.05 at 100 kVp)."""
    return 1.0 + _interp_table(config.kvp_correction.hu_change_vs_120, float(kvp))


def normalise_hu_to_120kvp(hu, kvp: float | None, config: CalibrationConfig):
    """HU as it would read at 120 kVp, and whether a change was applied."""
    if kvp is None or not config.kvp_correction.enabled or abs(float(kvp) - 120.0) < 0.5:
        return hu, False
    return np.asarray(hu, dtype=np.float64) / kvp_factor(kvp, config), True


def k2hpo4_per_ha(kvp: float | None, config: CalibrationConfig) -> float:
    """BMD_K2HPO4 / BMD_HA at ``kvp`` (0.86 at 80 kVp, 0.81 at 140 kVp; 120 kVp when unknown)."""
    return _interp_table(config.k2hpo4_per_ha, 120.0 if kvp is None else float(kvp))


def convert_density(value, source: str, target: str, kvp: float | None, config: CalibrationConfig):
    """Convert mg/cm³ between "K2HPO4" and "HA" equivalents."""
    if source == target or value is None:
        return value
    ratio = k2hpo4_per_ha(kvp, config)
    if source == "HA" and target == "K2HPO4":
        return np.asarray(value) * ratio
    if source == "K2HPO4" and target == "HA":
        return np.asarray(value) / ratio
    raise ValueError(f"unknown materials {source!r} → {target!r}")


def contrast_phase_from_aorta(aorta_hu: float | None) -> str | None:
    """Phase from the aortic blood HU: native < 80, portal venous 80–200, arterial > 200.

    Native blood reads ≈ 40 HU; contrast adds ≈ +110 (portal venous) and ≈ +210 (arterial) HU
    (SCIENCE §4).
    """
    if aorta_hu is None:
        return None
    if aorta_hu < 80.0:
        return "native"
    return "portal_venous" if aorta_hu <= 200.0 else "arterial"


def contrast_correction_hu(phase: str | None, config: CalibrationConfig, aorta_hu: float | None = None) -> float:
    """HU to subtract from trabecular HU for the phase (0 when disabled or native/unknown).

    When the phase comes from the aortic HU, the correction ramps linearly across ±10 HU around
    the phase limits (80 and 200 HU), so two nearly identical scans never differ by a whole
    correction."""
    if not config.contrast_correction.enabled:
        return 0.0
    table = config.contrast_correction.hu
    if aorta_hu is not None:
        ramp = lambda hu, limit: float(np.clip((hu - (limit - 10.0)) / 20.0, 0.0, 1.0))  # noqa: E731
        portal = table["portal_venous"] * ramp(aorta_hu, 80.0)
        return float(portal + (table["arterial"] - table["portal_venous"]) * ramp(aorta_hu, 200.0))
    if phase == "arterial":
        return float(table["arterial"])
    if phase == "portal_venous":
        return float(table["portal_venous"])
    return 0.0
