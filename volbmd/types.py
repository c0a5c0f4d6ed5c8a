"""Names for the tuples volbmd passes around, so a signature says what it takes.

Voxel sizes are in mm and in array order: ``(z, y, x)`` for a volume's ``spacing_mm`` (the scan's
own axis order for a volume as read, inferior→superior, anterior→posterior, right→left once
canonical), ``(y, x)`` in plane.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SpacingZYX", "SpacingYX", "SpacingLike"]

SpacingZYX = tuple[float, float, float]  #: voxel size (z, y, x) in mm
SpacingYX = tuple[float, float]  #: in-plane voxel size (y, x) in mm
SpacingLike = Sequence[float]  #: a voxel size as a user or a file gives it, before validation
