"""The ``masks`` backend: import existing vertebra label maps.

Either one multilabel file (VerSe or TotalSegmentator v2 ids) or a folder of per-level binary files
named like TotalSegmentator's output (``vertebrae_L1.nii.gz``) or by the level alone (``L1.nii.gz``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from volbmd.errors import InputError
from volbmd.geometry import canonicalize, uncanonicalize
from volbmd.io import load_volume
from volbmd.io._atomic import full_suffix
from volbmd.labels import level_rank, load_label_scheme, other_structure_ids
from volbmd.volume import LabelMap, Volume

__all__ = ["load_masks", "MasksSegmenter"]

_LEVEL_FILE = re.compile(r"^(?:vertebrae_)?(C[1-7]|T1[0-3]|T[1-9]|L[1-6]|S1)$", re.IGNORECASE)


def _on_scan_grid(mask: Volume, scan: Volume, path) -> Volume:
    """The mask on the scan's own grid: as it is when the grids match; reordered exactly (axes
    flipped or permuted, voxels moved, never interpolated) when it holds the same voxels stored in
    another axis order (a LAS NIfTI beside an LPS DICOM series); else a GeometryError naming what
    differs."""
    if mask.geometry.matches(scan.geometry):
        return mask
    canon_mask, _ = canonicalize(mask, copy=False)
    canon_scan, reorientation = canonicalize(scan, copy=False)
    if canon_mask.geometry.matches(canon_scan.geometry):
        return uncanonicalize(canon_mask, reorientation)
    mask.geometry.require_match(scan.geometry, "mask", path)
    raise AssertionError("unreachable: the grids differ")


def _integer_labels(mask: Volume, path) -> np.ndarray:
    arr = mask.array
    if arr.dtype.kind == "f":
        if not np.array_equal(arr, np.round(arr)):
            raise InputError("mask holds non-integer values", path)
        arr = arr.astype(np.int32)
    if arr.min() < 0:
        raise InputError("mask holds negative labels", path)
    return arr


#: Two neighbouring levels' centres may lie out of cranio-caudal order by this much (a tilted or
#: scoliotic spine) before the ids are taken as not naming vertebrae.
_ORDER_TOLERANCE_MM = 5.0


def _id_boxes(arr: np.ndarray) -> dict[int, tuple]:
    """Every non-zero id of a label image → (voxel count, bounding box), in one Numba pass over the
    volume (no sort of it, no copy); np.unique first finds the ids when they are unusually large."""
    top = int(arr.max()) if arr.size else 0
    if top == 0:
        return {}
    ids = range(1, top + 1) if top <= 1024 else sorted(set(np.unique(arr).tolist()) - {0})
    from volbmd_kernels.stats import label_bboxes  # numba: imported once the scan is being read

    return {i: found for i, found in label_bboxes(arr, ids).items() if found[0]}


def _level_heights_mm(boxes: dict[int, tuple], geometry_of: Volume, ids: dict[str, int]) -> dict[str, float]:
    """Per level: the height (LPS z, superior positive) of its bounding box's centre, in mm."""
    out = {}
    for level, i in ids.items():
        if int(i) in boxes:
            centre = [(b.start + b.stop - 1) / 2.0 for b in boxes[int(i)][1]]
            out[level] = float(geometry_of.geometry.index_to_world(centre)[2])
    return out


def _scheme_misfit(
    boxes: dict[int, tuple], geometry_of: Volume, scheme: dict[str, int], others: frozenset[int] | set[int] = frozenset()
) -> str | None:
    """Why the ids cannot be vertebrae of ``scheme`` (None when they can): ids the scheme does not
    know, or levels whose centres lie out of cranio-caudal order (a mask of another scheme read with
    this one names its organs or vertebrae as levels in a jumbled order). ``others``: the ids the
    scheme gives to other structures (organs), which may be present."""
    unknown = sorted(set(boxes) - set(scheme.values()) - set(others))
    if unknown:
        return f"ids {unknown[:8]}{' …' if len(unknown) > 8 else ''} are not vertebrae in it"
    heights = _level_heights_mm(boxes, geometry_of, {lvl: i for lvl, i in scheme.items() if i in boxes})
    order = sorted(heights, key=level_rank)
    for upper, lower in zip(order, order[1:]):
        if heights[upper] < heights[lower] - _ORDER_TOLERANCE_MM:
            return f"{upper} lies {heights[lower] - heights[upper]:.0f} mm below {lower}"
    return None


def _scheme_hint(boxes: dict[int, tuple], geometry_of: Volume, tried: str) -> str:
    """ "; they fit the 'totalseg' scheme: pass --label-scheme totalseg" when another scheme fits."""
    from volbmd.labels import LABEL_SCHEMES

    for other in LABEL_SCHEMES:
        if other == tried:
            continue
        scheme = load_label_scheme(other)
        if (
            set(boxes) & set(scheme.values())
            and _scheme_misfit(boxes, geometry_of, scheme, other_structure_ids(other)) is None
        ):
            return f"; they fit the '{other}' scheme: pass --label-scheme {other}"
    return ""


def load_masks(path: str | os.PathLike, scan: Volume, *, label_scheme: str = "verse") -> LabelMap:
    """Read vertebra masks for ``scan`` as a LabelMap with VerSe ids on the scan's grid.

    Args:
        path: a multilabel image, or a folder of per-level files.
        scan: the scan the masks belong to (the grids must match exactly).
        label_scheme: ids used by a multilabel file: "verse" or "totalseg".
    """
    path = Path(path)
    verse = load_label_scheme("verse")
    if not path.exists():
        raise InputError("masks not found", path)
    if path.is_dir() and not full_suffix(path).lower().endswith("zarr"):
        files = {}
        for f in sorted(path.iterdir()):
            stem = f.name[: len(f.name) - len(full_suffix(f))] if full_suffix(f) else f.name
            match = _LEVEL_FILE.match(stem)
            if match and f.is_file():
                files[match.group(1).upper()] = f
        if not files:
            raise InputError("no per-level mask files (vertebrae_L1.nii.gz, … or L1.nii.gz) in the folder", path)
        out = np.zeros(scan.shape, dtype=np.int16)
        for level in sorted(files, key=level_rank):
            mask = _on_scan_grid(load_volume(files[level]), scan, files[level])
            sel = _integer_labels(mask, files[level]) > 0
            out[sel & (out == 0)] = verse[level]
        present = {lvl: verse[lvl] for lvl in files}
        return LabelMap.on_grid_of(scan, out, present, source=str(path))
    mask = _on_scan_grid(load_volume(path), scan, path)
    arr = _integer_labels(mask, path)
    scheme = load_label_scheme(label_scheme)
    boxes = _id_boxes(arr)
    named = {lvl: i for lvl, i in scheme.items() if i in boxes}
    if not named:
        raise InputError(
            f"no vertebra labels of the '{label_scheme}' scheme in the mask (ids found: {sorted(boxes)[:12]})"
            + _scheme_hint(boxes, mask, label_scheme),
            path,
        )
    problem = _scheme_misfit(boxes, mask, scheme, other_structure_ids(label_scheme))
    if problem:
        raise InputError(
            f"the mask's ids do not fit the '{label_scheme}' label scheme: {problem}"
            + _scheme_hint(boxes, mask, label_scheme),
            path,
        )
    if label_scheme == "verse":  # every id is a known level (checked above): the ids stay as they are
        relabelled = arr.astype(np.int16, copy=False)
    else:
        lut = np.zeros(int(arr.max()) + 1, dtype=np.int16)
        for lvl, i in named.items():
            lut[i] = verse[lvl]
        relabelled = lut[arr]
    return LabelMap.on_grid_of(scan, relabelled, {lvl: verse[lvl] for lvl in named}, source=str(path))


class MasksSegmenter:
    """Segmenter that returns imported masks for the scan."""

    name = "masks"
    masks_given = True  # the masks are fixed: no segmentation uncertainty in the BMD's SD

    def __init__(self, path: str | os.PathLike, label_scheme: str = "verse"):
        self.path = Path(path)
        self.label_scheme = label_scheme

    def segment(self, volume: Volume) -> LabelMap:
        return load_masks(self.path, volume, label_scheme=self.label_scheme)
