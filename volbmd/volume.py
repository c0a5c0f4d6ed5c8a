"""Volume and LabelMap: a 3D array with its geometry. Validated, immutable, no I/O.

Conventions (see the README):

* ``array`` is indexed ``(z, y, x)``: axis 0 is the slowest index (ITK's k), axis 2 the fastest (i).
* ``spacing_mm`` is in the same ``(z, y, x)`` array order.
* ``origin_lps_mm`` is the world position, in LPS millimetres ``(x, y, z)``, of voxel ``[0, 0, 0]``.
* ``direction_lps`` is ITK's direction matrix: column ``c`` is the LPS world direction of ITK index
  axis ``c`` (``i, j, k`` = array axes ``2, 1, 0``).

The world position of array index ``(z, y, x)`` is therefore
``origin_lps_mm + direction_lps @ (spacing_x * x, spacing_y * y, spacing_z * z)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from volbmd.errors import GeometryError, InputError
from volbmd.types import SpacingLike

__all__ = ["Volume", "LabelMap", "Geometry", "MIN_SPACING_MM", "MAX_SPACING_MM"]

#: Spacings outside this range are taken as a broken header, not a real scan.
MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 50.0

_GEOMETRY_ATOL = 1e-4


def _as_triplet(values, name: str, source) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be three numbers, got {values!r}", source) from None
    if len(out) != 3:
        raise InputError(f"{name} must be three numbers, got {len(out)}", source)
    if not all(np.isfinite(out)):
        raise InputError(f"{name} is not finite: {out}", source)
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Geometry:
    """Where a (z, y, x) grid lies in LPS world space."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction_lps: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction_lps, dtype=np.float64)

    def index_to_world(self, index_zyx) -> np.ndarray:
        """LPS world position (x, y, z) in mm of an array index (z, y, x); accepts (..., 3) arrays."""
        idx = np.asarray(index_zyx, dtype=np.float64)
        ijk_mm = idx[..., ::-1] * np.asarray(self.spacing_mm[::-1])
        return np.asarray(self.origin_lps_mm) + ijk_mm @ self.direction_matrix.T

    def matches(self, other: Geometry, atol: float = _GEOMETRY_ATOL) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing_mm, other.spacing_mm, atol=atol)
            and np.allclose(self.origin_lps_mm, other.origin_lps_mm, atol=max(atol, 1e-3))
            and np.allclose(self.direction_matrix, other.direction_matrix, atol=atol)
        )

    def difference(self, other: Geometry, atol: float = _GEOMETRY_ATOL) -> str | None:
        """What differs from ``other``, in words and x, y, z order (None when the grids match)."""
        if self.matches(other, atol):
            return None
        if self.shape != other.shape:
            return f"size {self.shape[::-1]} (x,y,z) against {other.shape[::-1]}"
        if not np.allclose(self.spacing_mm, other.spacing_mm, atol=atol):
            return (
                f"voxel size {tuple(round(s, 4) for s in self.spacing_mm[::-1])} mm (x,y,z) against "
                f"{tuple(round(s, 4) for s in other.spacing_mm[::-1])} mm"
            )
        if not np.allclose(self.direction_matrix, other.direction_matrix, atol=atol):
            return f"axes pointing {axis_codes(self.direction_matrix)} against {axis_codes(other.direction_matrix)}"
        shift = np.asarray(self.origin_lps_mm) - np.asarray(other.origin_lps_mm)
        return f"origin {float(np.linalg.norm(shift)):.1f} mm away (LPS shift {tuple(round(float(v), 2) for v in shift)} mm)"

    def require_match(self, other: Geometry, what: str, source=None) -> None:
        """Raise a GeometryError naming ``what`` and what differs unless the grids match: the one
        grid-mismatch error of volbmd."""
        difference = self.difference(other)
        if difference is not None:
            raise GeometryError(f"{what} grid does not match the scan grid: {difference}", source)


def axis_codes(direction) -> str:
    """'LPS', 'LAS', …: where each array axis (x, y, z) points."""
    m = np.asarray(direction, float)
    letters = (("R", "L"), ("A", "P"), ("I", "S"))
    return "".join(letters[j][int(m[j, axis] > 0)] for axis in range(3) for j in [int(np.argmax(np.abs(m[:, axis])))])


def _validate_geometry(array: np.ndarray, spacing_mm: SpacingLike, origin_lps_mm, direction_lps, source) -> tuple:
    if array.ndim != 3:
        raise InputError(f"expected a 3D image, got {array.ndim}D with shape {array.shape}", source)
    if min(array.shape) < 2:
        raise InputError(f"image is 2D (shape z,y,x = {array.shape}); a 3D volume is needed", source)
    spacing = _as_triplet(spacing_mm, "spacing_mm", source)
    if min(spacing) <= 0:
        raise InputError(f"spacing must be positive, got {spacing} mm (z,y,x)", source)
    if min(spacing) < MIN_SPACING_MM or max(spacing) > MAX_SPACING_MM:
        raise InputError(f"absurd spacing {spacing} mm (z,y,x); expected {MIN_SPACING_MM}–{MAX_SPACING_MM} mm", source)
    origin = _as_triplet(origin_lps_mm, "origin_lps_mm", source)
    direction = np.asarray(direction_lps, dtype=np.float64)
    if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
        raise InputError(f"direction must be a finite 3x3 matrix, got {direction_lps!r}", source)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise InputError("direction matrix is not orthonormal (sheared or scaled grid)", source)
    direction_t = tuple(tuple(float(v) for v in row) for row in direction)
    return spacing, origin, direction_t


@dataclass(frozen=True)
class Volume:
    """A scalar 3D image with its geometry. CT voxels are Hounsfield units, never rescaled here.

    Args:
        array: (z, y, x) image, in the scan's own dtype (int16/int32 HU for CT, float for MRI maps).
        spacing_mm: voxel size (z, y, x) in mm.
        origin_lps_mm: LPS world position (x, y, z) of voxel [0, 0, 0].
        direction_lps: ITK direction matrix (see the module docstring).
        metadata: scanner facts (modality, kvp, manufacturer, convolution_kernel, ...). Patient
            identifiers, when read, are kept under ``metadata["phi"]`` and never reported by default.
        source: where the volume came from, for error messages.
        source_files: the files its voxels were read from, one per index of array axis 0 (a DICOM
            series' slices, which DICOM results reference); empty for other formats. Never reported.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction_lps: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    source_files: tuple[str, ...] = ()

    def __post_init__(self):
        array = np.asarray(self.array)
        spacing, origin, direction = _validate_geometry(
            array, self.spacing_mm, self.origin_lps_mm, self.direction_lps, self.source
        )
        if array.dtype.kind not in "iuf":
            raise InputError(f"unsupported voxel type {array.dtype}; expected integers or floats", self.source)
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            n_bad = int(np.count_nonzero(~np.isfinite(array)))
            raise InputError(f"{n_bad} voxels are NaN or infinite", self.source)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_lps_mm", origin)
        object.__setattr__(self, "direction_lps", direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.shape, self.spacing_mm, self.origin_lps_mm, self.direction_lps)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_mm))

    def with_array(self, array: np.ndarray, **changes) -> Volume:
        """Same geometry and metadata, new voxels (and any other field in ``changes``)."""
        return dataclasses.replace(self, array=array, **changes)

    def __repr__(self) -> str:  # keeps arrays out of logs
        return (
            f"{type(self).__name__}(shape={self.shape}, spacing_mm={self.spacing_mm}, "
            f"dtype={self.array.dtype}, source={self.source!r})"
        )


@dataclass(frozen=True, repr=False)
class LabelMap(Volume):
    """An integer label image on a grid, with the level name of each label id.

    Args:
        labels: level name -> label id present in ``array`` (e.g. ``{"L1": 20}``). Ids not named
            here are other structures and are ignored by the vertebra code.
    """

    labels: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        if self.array.dtype.kind not in "iu":
            arr = self.array
            if not np.array_equal(arr, np.round(arr)):
                raise InputError("label map holds non-integer values", self.source)
            object.__setattr__(self, "array", arr.astype(np.int32))

    @classmethod
    def on_grid_of(cls, volume: Volume, array: np.ndarray, labels: dict[str, int], **kwargs) -> LabelMap:
        if tuple(array.shape) != volume.shape:
            raise GeometryError(f"label array shape {array.shape} differs from the volume's {volume.shape}")
        return cls(
            array=array,
            spacing_mm=volume.spacing_mm,
            origin_lps_mm=volume.origin_lps_mm,
            direction_lps=volume.direction_lps,
            labels=dict(labels),
            **kwargs,
        )
