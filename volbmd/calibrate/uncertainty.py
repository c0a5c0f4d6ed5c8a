"""How uncertain a measured trabecular HU is: the standard error of an ROI's mean under the scan's
noise. (The calibration's own uncertainty is its covariance, see ``Calibration.density_sd``.)"""

from __future__ import annotations

import math

__all__ = ["scan_noise_hu", "roi_mean_se_hu"]


def scan_noise_hu(calibration) -> float | None:
    """The scan's voxel noise (HU SD at full resolution) from the internal calibration's fat and
    muscle: their robust SD on the working grid, scaled back by the number of voxels averaged per
    block (white noise). None when the calibration holds no reference tissues."""
    tissues = calibration.reference_tissues or {}
    sds = [tissues[t]["sd_hu"] for t in ("fat", "muscle") if t in tissues and "sd_hu" in tissues[t]]
    block = calibration.details.get("block_voxels")
    if not sds or not block:
        return None
    return float(min(sds) * math.sqrt(block))


def roi_mean_se_hu(measurement, calibration, *, masks_given: bool = False, boundary_jitter_voxels: float = 0.25) -> float:
    """Standard error (HU) of a level's trabecular mean in a repeat scan: the scan's noise over the
    square root of the ROI's voxels (taken as independent; without a noise estimate the ROI's own
    SD stands in, an upper bound as it holds the trabecular texture too) and, unless the masks are
    given (fixed), the boundary term: how far the mean moves when the mask boundary moves by a
    voxel (the ROI mean minus the mean one voxel inside), times how far a segmenter's boundary moves
    between repeat scans (``boundary_jitter_voxels``; a whole voxel overstated the SD 2–36× on the
    development CTs, where stable levels repeat within 0.2–1 %). Segmentation changes that are not a
    small boundary movement (a disc plane moving by a slice) are not predicted by any term: see
    ``volbmd.repeatability`` for an SD measured by repeating the analysis."""
    n = max(int(measurement.trabecular_n_voxels or 0), 1)
    noise = scan_noise_hu(calibration)
    sd = measurement.trabecular_hu_sd or 0.0
    sigma = sd if noise is None else min(noise, sd) if sd else noise
    var = sigma**2 / n
    shift = getattr(measurement, "trabecular_hu_boundary_shift", None)
    if not masks_given and shift is not None:
        var += (boundary_jitter_voxels * shift) ** 2
    return float(math.sqrt(var))
