"""Classical vertebra segmentation and level naming for CT: no weights, no training.

Stages, in the canonical LPS frame (axis 0 inferior → superior, 1 anterior → posterior, 2 right → left),
one module each:

1. ``localise``: the scan averaged to a ≈1.5 mm working grid; the spinal canal (a dark hole in a
   bony ring) followed through it by dynamic programming; the vertebral bodies in front of it;
   past the canal's ends, the thickest bone (the sacrum); the pelvis under the lowest body.
2. ``discs``: the body centre line straightened (a curved reformat), two profiles along it (the
   body's core, the pedicles beside the canal), their local period, and the discs chosen jointly
   (troughs or thin bright endplate bands spaced like vertebrae); each disc plane tilted and
   shifted into the HU trough between its endplates, as far as that trough stands out of the noise.
3. ``outline`` and ``growth``: at full resolution, bone with the body's marrow filled, vessels
   removed, discs carved out; body cores between the disc planes seed a geodesic growth (Numba)
   that hands each arch to its body; ribs and pelvis are seeded too, and their contacts say which
   vertebrae bear ribs.
4. ``levels``: names from the sacrum, the last and the first rib and the rib state of every
   vertebra, jointly; a naming confidence and flags saying which evidence won.
5. ``quality``: per vertebra, height against its neighbours, volume for its level, the canal behind
   it, its discs' strength: ``implausible:…`` flags and a confidence per level.

Every number is a named option in :class:`~volbmd.segment.classical.options.ClassicalOptions`
(``segmentation.classical`` in the pipeline config).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volbmd.segment.classical.options import ClassicalOptions

if TYPE_CHECKING:
    from volbmd.segment.classical.spine import ClassicalSegmenter, locate_spine, segment_spine
    from volbmd.segment.classical.types import Segment, SpineSegments

__all__ = ["ClassicalSegmenter", "ClassicalOptions", "SpineSegments", "Segment", "segment_spine", "locate_spine"]

_LAZY = {
    "ClassicalSegmenter": "spine",
    "segment_spine": "spine",
    "locate_spine": "spine",
    "Segment": "types",
    "SpineSegments": "types",
}


def __getattr__(name: str):
    """The stages load on first use, so the pipeline config can import the options alone."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"volbmd.segment.classical.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
