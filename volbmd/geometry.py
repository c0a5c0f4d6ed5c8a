"""Canonical frame (LPS, identity direction) and its exact inverse; crops.

This module and ``volbmd.io`` are the only places where axis orders are converted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from volbmd.errors import GeometryError
from volbmd.types import SpacingZYX
from volbmd.volume import Geometry, Volume

V = TypeVar("V", bound=Volume)  # a Volume or a LabelMap: what goes in comes out

__all__ = [
    "Reorientation",
    "canonicalize",
    "uncanonicalize",
    "orientation_code",
    "oblique_angle_deg",
    "block_mean",
    "block_factors",
]

_TOWARD = ("L", "P", "S")
_AWAY = ("R", "A", "I")


def _axis_assignment(direction: np.ndarray, source) -> tuple[list[int], list[int]]:
    """For each ITK index axis c: the world axis it runs along most, and the sign."""
    abs_d = np.abs(direction)
    world_of = [-1, -1, -1]
    taken: set[int] = set()
    # Greedy on the strongest entries first, so near-45° ties resolve the same way every time.
    for flat in np.argsort(-abs_d, axis=None, kind="stable"):
        w, c = divmod(int(flat), 3)
        if world_of[c] == -1 and w not in taken:
            world_of[c] = w
            taken.add(w)
    if sorted(world_of) != [0, 1, 2]:
        raise GeometryError("direction matrix has no clear axis order", source)
    signs = [1 if direction[world_of[c], c] > 0 else -1 for c in range(3)]
    return world_of, signs


def orientation_code(direction_lps) -> str:
    """Letters naming where ITK index axes i, j, k point (toward), e.g. "LPS" for identity, "RAS".

    This is nibabel's ``aff2axcodes`` convention.
    """
    d = np.asarray(direction_lps, dtype=np.float64)
    world_of, signs = _axis_assignment(d, None)
    return "".join((_TOWARD if s > 0 else _AWAY)[w] for w, s in zip(world_of, signs))


def oblique_angle_deg(direction_lps) -> float:
    """Largest angle between an index axis and the world axis it is assigned to."""
    d = np.asarray(direction_lps, dtype=np.float64)
    world_of, _ = _axis_assignment(d, None)
    cosines = [abs(d[world_of[c], c]) for c in range(3)]
    return float(np.degrees(np.arccos(np.clip(min(cosines), -1.0, 1.0))))


@dataclass(frozen=True)
class Reorientation:
    """An axis permutation and flips from a source grid to the canonical LPS frame.

    ``axes[a]`` is the source array axis that becomes canonical array axis ``a``; ``flips[a]`` says
    whether canonical axis ``a`` runs backwards with respect to it.
    """

    source_geometry: Geometry
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Source-grid array → canonical-grid array (a view where possible)."""
        self._check_shape(array.shape, self.source_geometry.shape, "source")
        out = np.transpose(array, self.axes)
        flip_axes = tuple(a for a in range(3) if self.flips[a])
        return np.flip(out, axis=flip_axes) if flip_axes else out

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Canonical-grid array → source-grid array, exactly."""
        self._check_shape(array.shape, self.canonical_shape, "canonical")
        flip_axes = tuple(a for a in range(3) if self.flips[a])
        out = np.flip(array, axis=flip_axes) if flip_axes else array
        return np.transpose(out, np.argsort(self.axes))

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        return tuple(self.source_geometry.shape[a] for a in self.axes)  # type: ignore[return-value]

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)

    @staticmethod
    def _check_shape(shape, expected, grid: str) -> None:
        if tuple(shape) != tuple(expected):
            raise GeometryError(f"array shape {tuple(shape)} does not match the {grid} grid {tuple(expected)}")


def _reorientation_for(geometry: Geometry, source=None) -> tuple[Reorientation, Geometry]:
    d = geometry.direction_matrix
    world_of, signs = _axis_assignment(d, source)
    # ITK index axis c is array axis 2 - c; world axis w becomes canonical ITK axis w (array axis 2 - w).
    axes = [0, 0, 0]
    flips = [False, False, False]
    new_dir = np.zeros((3, 3))
    for c in range(3):
        w = world_of[c]
        axes[2 - w] = 2 - c
        flips[2 - w] = signs[c] < 0
        new_dir[:, w] = d[:, c] * signs[c]
    reo = Reorientation(geometry, tuple(axes), tuple(flips))  # type: ignore[arg-type]
    # The canonical voxel [0,0,0] is the source voxel at the far end of every flipped axis.
    corner = [0, 0, 0]
    for a in range(3):
        if flips[a]:
            corner[axes[a]] = geometry.shape[axes[a]] - 1
    origin = geometry.index_to_world(corner)
    if np.allclose(new_dir, np.eye(3), atol=1e-6):
        new_dir = np.eye(3)
    spacing = tuple(geometry.spacing_mm[axes[a]] for a in range(3))
    canonical = Geometry(
        shape=reo.canonical_shape,
        spacing_mm=spacing,  # type: ignore[arg-type]
        origin_lps_mm=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction_lps=tuple((float(row[0]), float(row[1]), float(row[2])) for row in new_dir),
    )
    return reo, canonical


def canonicalize(volume: V, *, copy: bool = True) -> tuple[V, Reorientation]:
    """Reorder and flip axes so the volume is in the canonical LPS frame.

    Array axis 0 then runs inferior → superior, axis 1 anterior → posterior, axis 2 right → left.
    Voxels are moved, never interpolated, so :func:`uncanonicalize` restores the source exactly.
    A grid that is oblique to the patient axes keeps its small residual rotation in
    ``direction_lps`` (and ``metadata["oblique_deg"]`` says by how much); no resampling happens.

    Args:
        copy: False returns a strided view of the source voxels (no memory for large scans).
    Returns:
        The canonical volume (a contiguous copy, unless ``copy=False``) and the
        :class:`Reorientation` to undo it.
    """
    reo, geom = _reorientation_for(volume.geometry, volume.source)
    array = reo.apply(volume.array)
    if copy:
        array = np.ascontiguousarray(array)
    meta = dict(volume.metadata)
    angle = oblique_angle_deg(volume.direction_lps)
    if angle > 0.01:
        meta["oblique_deg"] = round(angle, 3)
    out = dataclasses.replace(
        volume,
        array=array,
        spacing_mm=geom.spacing_mm,
        origin_lps_mm=geom.origin_lps_mm,
        direction_lps=geom.direction_lps,
        metadata=meta,
    )
    return out, reo


def uncanonicalize(volume: V, reorientation: Reorientation) -> V:
    """Put a canonical-frame volume or label map back on the source grid exactly."""
    src = reorientation.source_geometry
    array = np.ascontiguousarray(reorientation.invert(volume.array))
    return dataclasses.replace(
        volume,
        array=array,
        spacing_mm=src.spacing_mm,
        origin_lps_mm=src.origin_lps_mm,
        direction_lps=src.direction_lps,
    )


def block_factors(spacing_mm: SpacingZYX, target_mm: float) -> tuple[int, int, int]:
    """Whole-voxel block sizes that bring each axis near ``target_mm`` (at least 1)."""
    return tuple(max(1, int(round(target_mm / float(s)))) for s in spacing_mm)  # type: ignore[return-value]


def _block_sum(a: np.ndarray, f: int, axis: int, acc) -> np.ndarray:
    """Sum of each run of ``f`` consecutive entries along ``axis`` (the last run may be shorter)."""
    n = a.shape[axis]
    o = -(-n // f)
    shape = list(a.shape)
    shape[axis] = o
    out = np.zeros(shape, acc)
    for j in range(f):
        part = a[(slice(None),) * axis + (slice(j, None, f),)]
        out[(slice(None),) * axis + (slice(0, part.shape[axis]),)] += part
    return out


def block_mean(array: np.ndarray, factors: tuple[int, int, int], dtype=np.float32) -> np.ndarray:
    """Average non-overlapping blocks of ``factors`` voxels (a partial block at an edge is averaged
    over what it holds). Works in chunks of slabs along axis 0, so memory stays near the output's
    size; integer scans are summed exactly in integers, others in float64.

    Unlike striding, averaging keeps thin bright structures (a cortical ring) visible.
    """
    fz, fy, fx = factors
    nz, ny, nx = array.shape
    oz, oy, ox = -(-nz // fz), -(-ny // fy), -(-nx // fx)
    out = np.empty((oz, oy, ox), dtype)
    src = np.asarray(array[:0]).dtype
    small_int = src.kind in "iub" and src.itemsize <= 2 and fz * fy * fx <= 1 << 15  # sums fit in int32
    acc = np.int32 if small_int else (np.int64 if src.kind in "iub" else np.float64)

    def counts(n: int, f: int, o: int) -> np.ndarray:
        c = np.full(o, float(f))
        c[-1] = n - f * (o - 1)
        return c

    plane = counts(ny, fy, oy)[:, None] * counts(nx, fx, ox)[None, :]
    chunk = max(1, (1 << 22) // max(1, fz * ny * nx))  # output slabs per chunk (≈32 MiB of input)
    for k0 in range(0, oz, chunk):
        k1 = min(oz, k0 + chunk)
        z0, z1 = k0 * fz, min(nz, k1 * fz)
        sums = _block_sum(np.asarray(array[z0:z1]), fz, 0, acc)
        sums = _block_sum(_block_sum(sums, fy, 1, acc), fx, 2, acc)
        out[k0:k1] = sums / (counts(z1 - z0, fz, k1 - k0)[:, None, None] * plane[None])
    return out
