"""A synthetic cohort with known BMD, so the deep-learning path runs and is measured honestly (on
synthetic data only: clinical accuracy needs real QCT-labelled scans, trained on with the same
manifest).

Each scan is a spine phantom (:func:`volbmd.phantoms.make_spine_phantom`: elliptic bodies with a
cortical shell and endplates, discs, arches) with per-scan variation of body size and height, cortical
thickness and density, slice thickness and in-plane resolution; the trabecular core gets a BMD drawn
per level, turned into HU by a QCT-like line (``BMD = 0.8·HU + 2``) and a kVp-like scale of all
attenuation, a smooth trabecular texture, partial volume (a blur of about the voxel size) and
Gaussian noise. The manifest has one row per level: scan, labels, level, bmd_mg_cm3, split.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SyntheticCohortOptions", "make_synthetic_cohort", "MANIFEST_COLUMNS", "HU_TO_BMD"]

MANIFEST_COLUMNS = ("scan", "labels", "level", "bmd_mg_cm3", "split")
#: The synthetic truth: BMD (mg/cm³) = slope · HU + intercept, before the kVp-like scale.
HU_TO_BMD = (0.8, 2.0)


@dataclass(frozen=True)
class SyntheticCohortOptions:
    n_scans: int = 80
    levels: tuple[str, ...] = ("L1", "L2", "L3")
    bmd_range_mg_cm3: tuple[float, float] = (30.0, 210.0)
    kvp_scale: tuple[float, float] = (0.97, 1.03)
    noise_hu: tuple[float, float] = (8.0, 30.0)
    slice_mm: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0)
    in_plane_mm: tuple[float, float] = (0.6, 1.0)
    test_share: float = 0.25
    seed: int = 0


def _scan(rng: np.random.Generator, options: SyntheticCohortOptions, seed: int):
    from scipy import ndimage as ndi

    from volbmd.phantoms import make_spine_phantom

    slope, intercept = HU_TO_BMD
    bmd = {lvl: float(rng.uniform(*options.bmd_range_mg_cm3)) for lvl in options.levels}
    hu = {lvl: (b - intercept) / slope for lvl, b in bmd.items()}
    in_plane = float(rng.uniform(*options.in_plane_mm))
    spacing = (float(rng.choice(options.slice_mm)), in_plane, in_plane)
    heights = {lvl: float(rng.uniform(22.0, 30.0)) for lvl in options.levels}
    p = make_spine_phantom(
        options.levels,
        spacing_mm=spacing,
        trabecular_hu=hu,
        cortical_hu=float(rng.uniform(550.0, 850.0)),
        posterior_hu=float(rng.uniform(350.0, 550.0)),
        cortical_thickness_mm=float(rng.uniform(1.0, 2.0)),
        body_height_mm=heights,
        body_semi_axes_mm=(float(rng.uniform(13.0, 17.0)), float(rng.uniform(18.0, 23.0))),
        disc_height_mm=float(rng.uniform(7.0, 11.0)),
        field_of_view_mm=(150.0, 150.0),
        seed=seed,
        dtype=np.float32,
    )
    scale = float(rng.uniform(*options.kvp_scale))
    array = p.volume.array.astype(np.float32)
    tissue = array > -900
    array[tissue] *= scale  # a kVp-like change of every attenuation (air stays air)
    texture = ndi.gaussian_filter(rng.standard_normal(array.shape).astype(np.float32), 1.2 / np.asarray(spacing))
    texture *= 25.0 / max(float(texture.std()), 1e-6)
    array += np.where(p.bodies.array > 0, texture, 0.0).astype(np.float32)
    array = ndi.gaussian_filter(array, 0.5)  # partial volume: about a voxel of blur
    array += rng.normal(0.0, float(rng.uniform(*options.noise_hu)), array.shape).astype(np.float32)
    volume = p.volume.with_array(np.round(array).astype(np.int16))
    return volume, p.labels, bmd


def make_synthetic_cohort(out_dir: str | os.PathLike, options: SyntheticCohortOptions | None = None) -> Path:
    """Write ``options.n_scans`` scans with their labels and the manifest; returns the manifest.
    Whole scans go to one split (train or test), never levels of one scan to both."""
    import volbmd

    options = options or SyntheticCohortOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(options.seed)
    n_test = int(round(options.n_scans * options.test_share))
    test = set(rng.choice(options.n_scans, size=n_test, replace=False).tolist())
    rows = []
    for i in range(options.n_scans):
        volume, labels, bmd = _scan(rng, options, seed=options.seed * 100_000 + i)
        scan_name, labels_name = f"scan{i:04d}.nii.gz", f"labels{i:04d}.nii.gz"
        volbmd.write_volume(volume, out / scan_name)
        volbmd.write_volume(labels, out / labels_name)
        split = "test" if i in test else "train"
        rows += [(scan_name, labels_name, lvl, f"{b:.2f}", split) for lvl, b in bmd.items()]
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
    return manifest
