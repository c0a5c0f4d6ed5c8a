"""PDFF from scanner-separated Dixon images (mDixon water and fat magnitudes).

Magnitude images carry a noise floor: where one species is absent its magnitude is Rician noise,
not zero, so a plain F/(W+F) reads a few percent of fat in pure water and of water in pure fat. The
noise σ is estimated from the background (Rayleigh: median magnitude = σ·√(2 ln 2)) and each image is
corrected as √max(M² − 2σ², 0) (the second moment of a Rician magnitude is A² + 2σ²). Voxels whose
total signal is below ``min_snr``·σ get no PDFF (NaN)."""

from __future__ import annotations

import numpy as np

__all__ = ["noise_sigma", "pdff_from_magnitudes"]


def noise_sigma(water: np.ndarray, fat: np.ndarray, *, background_fraction: float = 0.2) -> float:
    """σ of the complex noise, from the voxels whose total magnitude is below ``background_fraction``
    of the 99th percentile (air, and a little dark tissue, which the median shrugs off). 0 when there
    is no such background."""
    total = np.asarray(water, np.float64) + np.asarray(fat, np.float64)
    background = total < background_fraction * np.percentile(total, 99)
    if np.count_nonzero(background) < 100:
        return 0.0
    medians = [float(np.median(np.asarray(img, np.float64)[background])) for img in (water, fat)]
    return float(np.mean(medians) / np.sqrt(2 * np.log(2)))


def pdff_from_magnitudes(
    water: np.ndarray, fat: np.ndarray, *, sigma: float | None = None, min_snr: float = 5.0
) -> tuple[np.ndarray, float]:
    """PDFF in percent (NaN where the signal is below ``min_snr``·σ) and the σ used (estimated from
    the background when not given)."""
    w = np.asarray(water, np.float64)
    f = np.asarray(fat, np.float64)
    if w.shape != f.shape:
        raise ValueError(f"water {w.shape} and fat {f.shape} images differ in shape")
    if np.any(w < 0) or np.any(f < 0):
        raise ValueError("water and fat must be magnitude images (no negative values)")
    s = noise_sigma(w, f) if sigma is None else float(sigma)
    w_c = np.sqrt(np.maximum(w**2 - 2 * s**2, 0.0))
    f_c = np.sqrt(np.maximum(f**2 - 2 * s**2, 0.0))
    total = w_c + f_c
    valid = (w + f) > max(min_snr * s, 0.0)
    valid &= total > 0
    pdff = np.full(w.shape, np.nan, np.float32)
    pdff[valid] = (100.0 * f_c[valid] / total[valid]).astype(np.float32)
    return pdff, s
