"""What the stages of the classical segmenter hand each other (canonical LPS frame, mm, (z, y, x))."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from volbmd.types import SpacingZYX

__all__ = ["SpacingZYX", "WorkGrid", "CanalPath", "SpineTrack", "CentreLine", "Disc", "Segment", "SpineSegments"]


@dataclass
class WorkGrid:
    """The scan averaged in blocks (about 1.5 mm in plane) for localisation.

    ``hu``: block-mean HU, float32 (z, y, x). ``patient``: the patient's body, holes filled per slice.
    ``mid_x_mm``: the patient's left-right midline. Positions in mm are index × spacing from the
    grid's corner voxel (the same frame as the full-resolution canonical grid).
    """

    hu: np.ndarray
    spacing_mm: SpacingZYX
    factors: tuple[int, int, int]
    patient: np.ndarray
    mid_x_mm: float


@dataclass
class CanalPath:
    """The spinal canal per working slice: centre (y, x) in mm, NaN where it was not seen."""

    yx_mm: np.ndarray  # (nz, 2)
    length_mm: float


@dataclass
class SpineTrack:
    """Body centres per working slice over the tracked range ``k0..k1`` (inclusive)."""

    k0: int
    k1: int
    z_mm: np.ndarray  # (n,) slice centres
    body_yx_mm: np.ndarray  # (n, 2)
    canal_yx_mm: np.ndarray  # (n, 2)
    half_depth_mm: np.ndarray  # (n,) the body's AP half depth (running median)
    canal_range: tuple[int, int]  # slices (indices into z_mm) where the canal itself was followed


@dataclass
class CentreLine:
    """The spine's centre line resampled by arc length: points (z, y, x) mm and unit tangents."""

    points_mm: np.ndarray
    tangents: np.ndarray
    step_mm: float
    half_depth_mm: np.ndarray | None = None  # per point
    canal_mm: np.ndarray | None = None  # the canal's centre beside each point (z, y, x)
    tracked_arc_mm: tuple[float, float] | None = None  # the stretch along the tracked bodies (the rest extends it)


@dataclass
class Disc:
    """An intervertebral disc: a plane through ``point_mm`` with unit ``normal`` (z, y, x)."""

    point_mm: np.ndarray
    normal: np.ndarray
    arc_mm: float  # position along the centre line
    score: float  # trough depth as a share of the profile's spread
    margin: float = float("inf")  # how much better the chosen chain is than the best one without this disc
    alternative_mm: float | None = None  # how far that other chain's nearest disc lies


@dataclass
class Segment:
    """One vertebra between two discs (or a disc and the end of the track)."""

    z_lo_mm: float
    z_hi_mm: float
    ordinal: int = 0  # which gap between disc planes (0: below the first disc)
    rib_contact_mm3: float = 0.0  # vertebra within reach of ribs (not the pelvis), both sides
    rib_sides: list[str] = field(default_factory=list)  # "right"/"left" sides with a rib contact
    rib_beside_mm3: float = 0.0  # rib-like bone beside the vertebra's slab, touching it or not
    blob_width_mm: float = 0.0
    lung_share: float = 0.0  # air beside the body over its height (localise.lung_beside)
    level: str | None = None
    arc_lo_mm: float = 0.0  # extent along the centre line
    arc_hi_mm: float = 0.0
    complete: bool = True  # both of its discs were found (not cut by the ends of the track)
    volume_ml: float = 0.0  # the grown vertebra
    confidence: float = 1.0  # 0–1, from the quality checks
    quality_flags: list[str] = field(default_factory=list)


@dataclass
class SpineSegments:
    track_z_mm: np.ndarray
    track_yx_mm: np.ndarray
    discs_z_mm: list[float]
    segments: list[Segment]
    flags: list[str] = field(default_factory=list)
    sacrum_at_bottom: bool = False
    lung_at_bottom: bool = False  # lung beside the lowest body (localise.lung_beside): a thoracic field of view
    disc_planes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (point, normal) mm, zyx
    body_half_depth_mm: float = 15.0
    track_half_depth_mm: np.ndarray | None = None  # per track slice
    canal_yx_mm: np.ndarray | None = None  # the canal's centre per track slice (NaN where not followed)
    naming: dict = field(default_factory=dict)  # evidence, confidence, alternatives
