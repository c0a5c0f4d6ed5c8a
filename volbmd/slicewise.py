"""Axial-slice operations on whole volumes at once (canonical frame: axis 0 is the slice axis).

scipy's 2D hole filling called slice by slice dominates the run time of a 400-slice scan; labelling
the background once in 3D with in-plane connectivity gives the same holes in one C call.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["IN_PLANE", "slice_holes", "fill_holes_slicewise", "patient_mask", "label_stats"]

#: 4-connectivity within each axial slice, none between slices (scipy's 2D default for holes).
IN_PLANE = np.zeros((3, 3, 3), bool)
IN_PLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def slice_holes(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the holes of every axial slice of ``mask`` (3D bool): background regions of a slice not
    connected to the slice's border, each with its own label (0 elsewhere). Returns (labels, n)."""
    background, n = ndi.label(~mask, structure=IN_PLANE)
    if n == 0:
        return background, 0
    edge = np.concatenate(
        [
            background[:, 0, :].ravel(),
            background[:, -1, :].ravel(),
            background[:, :, 0].ravel(),
            background[:, :, -1].ravel(),
        ]
    )
    hole = np.ones(n + 1, bool)
    hole[np.unique(edge)] = False
    hole[0] = False
    new_id = np.zeros(n + 1, np.int32)
    new_id[hole] = np.arange(1, int(hole.sum()) + 1)
    return new_id[background], int(hole.sum())


def fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes`` applied to each axial slice, in one pass."""
    holes, n = slice_holes(mask)
    return mask | (holes > 0) if n else mask.copy()


def patient_mask(hu: np.ndarray, threshold_hu: float) -> np.ndarray:
    """The patient: the largest connected region above ``threshold_hu`` (not the table, not air),
    holes filled in every axial slice (lungs, bowel gas). Empty when nothing is above it."""
    solid = hu > threshold_hu
    objects, n = ndi.label(solid)
    if n == 0:
        return solid
    sizes = np.bincount(objects.ravel())
    sizes[0] = 0
    return fill_holes_slicewise(objects == int(np.argmax(sizes)))


def label_stats(
    labels: np.ndarray, n: int, values: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per label 1..n (index 0 unused): voxel count, centroid (z, y, x) in index units and, when
    ``values`` is given, the mean of ``values`` over the label. Only labelled voxels are visited,
    so it is fast for sparse labels (scipy's center_of_mass sweeps the whole volume per axis)."""
    where = np.nonzero(labels)
    lab = labels[where]
    counts = np.bincount(lab, minlength=n + 1).astype(np.float64)
    safe = np.maximum(counts, 1.0)
    centroid = np.stack([np.bincount(lab, weights=w, minlength=n + 1) / safe for w in where], axis=1)
    mean = None if values is None else np.bincount(lab, weights=values[where].astype(np.float64), minlength=n + 1) / safe
    return counts, centroid, mean
