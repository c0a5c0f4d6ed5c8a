"""Phantom calibration: certificates, single-material and Mindways fits, rods from masks or found.

Single material (CaHA): ``HU = a·ρ + b`` by least squares over the rods, so
``ρ = (HU − b)/a``: slope ``1/a`` mg/cm³ per HU, intercept ``−b/a``.

Mindways Model 3 (two components, SCIENCE §3): fit ``HU − ρ_water = σ_ref·ρ_K2HPO4 + β_ref``, then
``σ_CT = σ_ref − 0.2174``, ``β_CT = β_ref + 999.6`` and ``ρ_K2HPO4 = (HU − β_CT)/σ_CT``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage as ndi

from volbmd.calibrate.base import Calibration, RodResult, ScannerInfo, r_squared
from volbmd.config import CalibrationConfig, load_yaml_model
from volbmd.errors import ConfigError, InputError
from volbmd.volume import Volume

__all__ = [
    "PhantomRod",
    "PhantomDefinition",
    "load_phantom",
    "shipped_phantoms",
    "fit_single",
    "fit_mindways",
    "calibrate_from_hu",
    "rod_hu_from_mask",
    "find_rods",
    "MINDWAYS_SIGMA_OFFSET",
    "MINDWAYS_BETA_OFFSET",
]

MINDWAYS_SIGMA_OFFSET = 0.2174
MINDWAYS_BETA_OFFSET = 999.6


class PhantomRod(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    density_mg_cm3: float
    water_mg_cm3: float | None = None


class PhantomDefinition(BaseModel):
    """A phantom certificate: rods in the order of their label ids (1, 2, …) or --hu values."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    material: Literal["HA", "K2HPO4"]
    model: Literal["single", "mindways"] = "single"
    rods: list[PhantomRod] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self):
        if self.model == "mindways":
            missing = [r.name for r in self.rods if r.water_mg_cm3 is None]
            if missing:
                raise ValueError(f"mindways rods need water_mg_cm3 (missing for {missing})")
            if self.material != "K2HPO4":
                raise ValueError("the mindways model is for K2HPO4 phantoms")
        if len({r.density_mg_cm3 for r in self.rods}) < 2:
            raise ValueError("rods need at least two different densities")
        return self

    def expected_hu_order(self) -> list[int]:
        """Rod indices from lowest to highest expected HU (Mindways: water + K2HPO4 both count)."""
        if self.model == "mindways":
            key = [r.water_mg_cm3 + 1.5 * r.density_mg_cm3 for r in self.rods]  # type: ignore[operator]
        else:
            key = [r.density_mg_cm3 for r in self.rods]
        return list(np.argsort(key, kind="stable"))


def shipped_phantoms() -> list[str]:
    folder = resources.files("volbmd_configs") / "phantoms"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_phantom(name_or_file: str | os.PathLike) -> PhantomDefinition:
    """A shipped phantom by name (``bmas200``, ``mindways-model3``, …) or a certificate YAML file."""
    text = str(name_or_file)
    if text in shipped_phantoms():
        return load_yaml_model(PhantomDefinition, resources.files("volbmd_configs") / "phantoms" / f"{text}.yaml")
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml") and path.exists():
        return load_yaml_model(PhantomDefinition, path)
    raise ConfigError(f"unknown phantom '{text}'; shipped: {', '.join(shipped_phantoms())}, or a certificate .yaml file")


def _check_hu(hu, n_rods: int, phantom: str) -> np.ndarray:
    hu = np.asarray(hu, dtype=np.float64).ravel()
    if hu.size != n_rods:
        raise InputError(f"{hu.size} rod HU values given, phantom '{phantom}' has {n_rods} rods")
    if hu.size < 2:
        raise InputError("at least 2 rods are needed for a calibration")
    if not np.all(np.isfinite(hu)):
        raise InputError(f"rod HU values must be finite numbers, got {hu.tolist()}")
    return hu


def _line_cov(x: np.ndarray, y: np.ndarray, a: float, b: float) -> np.ndarray | None:
    """Least-squares covariance of (a, b) in y = a·x + b from the residuals (None for 2 points)."""
    if x.size <= 2:
        return None
    resid = y - (a * x + b)
    s2 = float(resid @ resid) / (x.size - 2)
    X = np.column_stack([x, np.ones_like(x)])
    return s2 * np.linalg.inv(X.T @ X)


def _density_cov(a: float, b: float, cov_ab: np.ndarray | None) -> list[list[float]] | None:
    """Covariance of (slope, intercept) = (1/a, −b/a) by the delta method."""
    if cov_ab is None:
        return None
    jac = np.array([[-1.0 / a**2, 0.0], [b / a**2, -1.0 / a]])
    return [[float(v) for v in row] for row in jac @ cov_ab @ jac.T]


def fit_single(density_mg_cm3, hu) -> dict[str, Any]:
    """Least squares ``HU = a·ρ + b``. Returns a, b, slope (1/a), intercept (−b/a) and R²."""
    rho = np.asarray(density_mg_cm3, dtype=np.float64)
    hu = np.asarray(hu, dtype=np.float64)
    a, b = np.polyfit(rho, hu, 1)
    if not np.isfinite(a) or abs(a) < 1e-9:
        raise InputError("rod HU does not change with density: the fit has no slope")
    return {
        "a_hu_per_mg_cm3": float(a),
        "b_hu": float(b),
        "slope": float(1.0 / a),
        "intercept": float(-b / a),
        "r2": r_squared(rho, hu, a, b),
        "cov": _density_cov(a, b, _line_cov(rho, hu, a, b)),
    }


def fit_mindways(k2hpo4_mg_cm3, water_mg_cm3, hu) -> dict[str, Any]:
    """The Mindways two-component fit. Returns σ_ref, β_ref, σ_CT, β_CT, slope, intercept, R², r."""
    k = np.asarray(k2hpo4_mg_cm3, dtype=np.float64)
    y = np.asarray(hu, dtype=np.float64) - np.asarray(water_mg_cm3, dtype=np.float64)
    sigma_ref, beta_ref = np.polyfit(k, y, 1)
    sigma_ct = sigma_ref - MINDWAYS_SIGMA_OFFSET
    beta_ct = beta_ref + MINDWAYS_BETA_OFFSET
    if abs(sigma_ct) < 1e-9:
        raise InputError("Mindways fit gives σ_CT = 0: check the rod HU values")
    r2 = r_squared(k, y, sigma_ref, beta_ref)
    # σ_CT and β_CT differ from σ_ref and β_ref by constants: the same covariance
    return {
        "sigma_ref": float(sigma_ref),
        "beta_ref": float(beta_ref),
        "sigma_ct": float(sigma_ct),
        "beta_ct": float(beta_ct),
        "slope": float(1.0 / sigma_ct),
        "intercept": float(-beta_ct / sigma_ct),
        "r2": r2,
        "r": float(np.sign(sigma_ref) * np.sqrt(max(r2, 0.0))),
        "cov": _density_cov(sigma_ct, beta_ct, _line_cov(k, y, sigma_ref, beta_ref)),
    }


def calibrate_from_hu(
    phantom: PhantomDefinition,
    hu,
    config: CalibrationConfig | None = None,
    *,
    n_voxels=None,
    scanner: ScannerInfo | None = None,
) -> Calibration:
    """Fit a calibration from the rods' mean HU (in the certificate's rod order), with R² gates.

    Raises:
        InputError: fewer than 2 rods, a rod count that does not match, non-finite HU, or
            1 − R² above the fail gate.
    """
    config = config or CalibrationConfig()
    hu = _check_hu(hu, len(phantom.rods), phantom.name)
    rho = np.array([r.density_mg_cm3 for r in phantom.rods])
    if phantom.model == "mindways":
        water = np.array([r.water_mg_cm3 for r in phantom.rods], dtype=np.float64)
        fit = fit_mindways(rho, water, hu)
    else:
        fit = fit_single(rho, hu)
    if phantom.model == "mindways":
        # rods differ in their water content: residuals live in the reference regression
        fitted = (hu - water - fit["beta_ref"]) / fit["sigma_ref"]
    else:
        fitted = fit["slope"] * hu + fit["intercept"]
    rods = [
        RodResult(
            name=r.name,
            density_mg_cm3=r.density_mg_cm3,
            water_mg_cm3=r.water_mg_cm3,
            hu=float(h),
            n_voxels=None if n_voxels is None else int(n_voxels[i]),
            fitted_density_mg_cm3=float(f),
            residual_mg_cm3=float(f - r.density_mg_cm3),
        )
        for i, (r, h, f) in enumerate(zip(phantom.rods, hu, fitted))
    ]
    gap = 1.0 - fit["r2"]
    if gap > config.fail_1_minus_r2:
        worst = max(rods, key=lambda r: abs(r.residual_mg_cm3 or 0))
        raise InputError(
            f"phantom fit too poor: R² = {fit['r2']:.4f} (1 − R² = {gap:.3f} > {config.fail_1_minus_r2}); "
            f"largest residual {worst.residual_mg_cm3:+.1f} mg/cm³ at rod {worst.name}: check rod order and ROIs"
        )
    warnings = []
    if gap > config.warn_1_minus_r2:
        warnings.append(f"phantom fit R² = {fit['r2']:.4f} (1 − R² = {gap:.3f} > {config.warn_1_minus_r2})")
    return Calibration(
        method="phantom",
        material=phantom.material,
        slope=fit["slope"],
        intercept=fit["intercept"],
        r2=fit["r2"],
        phantom=phantom.name,
        model=phantom.model,
        rods=rods,
        scanner=scanner or ScannerInfo(),
        warnings=warnings,
        details={k: v for k, v in fit.items() if k not in ("slope", "intercept", "r2", "cov")},
        slope_intercept_cov=fit["cov"],
    )


def rod_hu_from_mask(volume: Volume, rods_mask: Volume, n_rods: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean HU and voxel count of label k = rod k (1 … n_rods) in a rod mask on the scan's grid."""
    rods_mask.geometry.require_match(volume.geometry, "rod mask", rods_mask.source)
    labels = np.asarray(rods_mask.array)
    present = sorted(set(np.unique(labels).tolist()) - {0})
    if present != list(range(1, len(present) + 1)) or len(present) != n_rods:
        raise InputError(
            f"rod mask has labels {present[:12]}; the phantom has {n_rods} rods, labelled 1…{n_rods} in certificate order",
            rods_mask.source,
        )
    idx = np.arange(1, n_rods + 1)
    counts = ndi.sum_labels(np.ones(labels.shape, np.int64), labels, idx)
    means = ndi.mean(volume.array.astype(np.float64), labels, idx)
    return np.asarray(means, dtype=np.float64), np.asarray(counts, dtype=np.int64)


def find_rods(
    volume: Volume, phantom: PhantomDefinition, *, min_contrast_hu: float = 20.0, min_area_mm2: float = 20.0
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Find the rods of a phantom scanned outside (below) the body; match them to the certificate.

    Rods are long cylinders along z, so they are found on the median image along z: in each object
    other than the body (the largest object above −500 HU), compact discs that differ from the
    object's base material by at least ``min_contrast_hu``. Their HU is the mean over a core disc
    (70 % of the radius) through the central 80 % of slices. Rods are matched to the certificate by
    HU order (Mindways: by the expected HU from water and K2HPO4 together).

    Returns:
        HU and voxel counts in certificate order, and per rod its centre (for the report).
    Raises:
        InputError: no phantom object, or a rod count that does not match the certificate.
    """
    from volbmd.geometry import canonicalize

    canon, _ = canonicalize(volume, copy=False)
    arr = canon.array
    nz = arr.shape[0]
    z0, z1 = int(0.1 * nz), max(int(0.9 * nz), int(0.1 * nz) + 1)
    median = np.median(arr[z0:z1], axis=0).astype(np.float64)
    sy, sx = canon.spacing_mm[1], canon.spacing_mm[2]
    px_area = sy * sx
    objects, n = ndi.label(median > -500)
    if n < 2:
        raise InputError("no rod phantom found beside the body; pass the rods with --rods MASK", volume.source)
    sizes = ndi.sum_labels(np.ones_like(objects), objects, np.arange(1, n + 1))
    body = int(np.argmax(sizes)) + 1
    candidates: list[dict[str, Any]] = []
    for k in range(1, n + 1):
        if k == body or sizes[k - 1] * px_area < 500:
            continue
        obj = ndi.binary_fill_holes(objects == k)
        inner = ndi.binary_erosion(obj, iterations=max(1, int(round(2.0 / min(sy, sx)))))
        base = float(np.median(median[inner])) if inner.any() else float(np.median(median[obj]))
        blobs, nb = ndi.label(inner & (np.abs(median - base) >= min_contrast_hu))
        for b, sl in enumerate(ndi.find_objects(blobs), start=1):
            disc = blobs[sl] == b
            area = disc.sum() * px_area
            h, w = (sl[0].stop - sl[0].start) * sy, (sl[1].stop - sl[1].start) * sx
            fill = area / max(h * w, 1e-9)
            if area < min_area_mm2 or fill < 0.6 or max(h, w) > 1.6 * min(h, w):
                continue
            cy, cx = ndi.center_of_mass(disc)
            candidates.append({"center_yx": (sl[0].start + cy, sl[1].start + cx), "radius_mm": float(np.sqrt(area / np.pi))})
    if len(candidates) != len(phantom.rods):
        raise InputError(
            f"found {len(candidates)} rod-like inserts, phantom '{phantom.name}' has {len(phantom.rods)} rods; "
            "pass the rods with --rods MASK",
            volume.source,
        )
    yy, xx = np.mgrid[: arr.shape[1], : arr.shape[2]]
    hu, counts = [], []
    for c in candidates:
        dist_mm = np.hypot((yy - c["center_yx"][0]) * sy, (xx - c["center_yx"][1]) * sx)
        core = dist_mm <= 0.7 * c["radius_mm"]
        values = arr[z0:z1][:, core].astype(np.float64)
        c["hu"] = float(values.mean())
        hu.append(c["hu"])
        counts.append(values.size)
    by_hu = np.argsort(hu, kind="stable")
    order = phantom.expected_hu_order()
    out_hu = np.empty(len(hu))
    out_n = np.empty(len(hu), np.int64)
    matched = [None] * len(hu)
    for rank, rod_index in enumerate(order):
        found = by_hu[rank]
        out_hu[rod_index] = hu[found]
        out_n[rod_index] = counts[found]
        matched[rod_index] = candidates[found]
    return out_hu, out_n, matched  # type: ignore[return-value]
