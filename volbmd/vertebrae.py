"""Per-level vertebra masks and the vertebral body / posterior elements split.

Works on label maps in the canonical LPS frame (array axis 1 runs anterior → posterior).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from volbmd.labels import level_rank
from volbmd.slicewise import fill_holes_slicewise
from volbmd.types import SpacingZYX
from volbmd.volume import LabelMap
from volbmd_kernels.morphology import edt_squared_mm2
from volbmd_kernels.stats import label_bboxes

__all__ = ["VertebraMask", "split_body", "vertebra_masks", "BodySplit"]

#: A whole-vertebra mask loses at least this fraction of voxels to the split; less means the input
#: already held the body only, and it passes through unchanged.
BODY_ONLY_MAX_REMOVED = 0.03


@dataclass(frozen=True)
class BodySplit:
    body: np.ndarray  # bool, the crop's shape
    method: str  # "split" | "body_only" | "too_thin"
    core_radius_mm: float


@dataclass(frozen=True)
class VertebraMask:
    """One level: its bounding box in the full (canonical) volume and boolean crops."""

    level: str
    label_id: int
    box: tuple[slice, slice, slice] | None  # None when the level's mask is empty
    whole: np.ndarray | None
    body: np.ndarray | None
    split_method: str
    touches_edge: tuple[str, ...]  # "inferior", "superior", "anterior", ... sides of the scan it touches


def _index3(index) -> tuple[int, int, int]:
    """A 3D index as plain ints (numpy's unravel_index gives numpy integers)."""
    return int(index[0]), int(index[1]), int(index[2])


def _largest_component_with(mask: np.ndarray, seed: tuple[int, int, int] | None) -> np.ndarray:
    lab, n = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask
    if seed is not None and lab[seed] > 0:
        return lab == lab[seed]
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def split_body(
    whole: np.ndarray, spacing_mm: SpacingZYX, *, body_only: bool | None = None, spine: np.ndarray | None = None
) -> BodySplit:
    """Keep the vertebral body of a whole-vertebra mask (canonical frame: +y is posterior).

    The body is the thickest part of a vertebra. Its core (voxels deeper than half the maximal
    inscribed radius) is found with the exact distance transform; the body's posterior wall lies one
    core radius behind the core's posterior edge in each slice, so everything posterior to it (the
    pedicles, arch and processes, behind the spinal canal) is cut off. Where the spinal canal is
    enclosed by bone, the wall lies just in front of it instead (see :func:`_canal_wall`). The
    connected part of the mask holding the core is kept.

    Args:
        whole: boolean (z, y, x) crop of one vertebra.
        spacing_mm: (z, y, x) voxel size.
        body_only: True: the mask is a body already (returned as is); None: decide from the data.
        spine: the same crop of every level's bone (the label map > 0), in which the canal is
            looked for: which voxels of a lamina belong to this level and which to the next is the
            segmenter's guess, and a level's own arch often leaves its canal open. None: ``whole``.
    """
    whole = np.asarray(whole, bool)
    if spine is not None and spine.shape != whole.shape:
        raise ValueError(f"spine crop {spine.shape} is not the shape of the vertebra's crop {whole.shape}")
    if body_only or not whole.any():
        return BodySplit(whole.copy(), "body_only", 0.0)
    d2 = edt_squared_mm2(whole, spacing_mm)
    d_max = float(np.sqrt(d2.max()))
    radius = 0.5 * d_max
    core = d2 > radius * radius
    if radius < max(spacing_mm[1:]) or core.sum() < 2:
        return BodySplit(whole.copy(), "too_thin", radius)
    seed = _index3(np.unravel_index(int(np.argmax(d2)), d2.shape))
    core = _largest_component_with(core, seed)
    sy = float(spacing_mm[1])
    nz, ny, _ = whole.shape
    ymax = _fitted_back_edge(core)
    radius_wall = ymax + (radius / sy) + 1.0  # +1 voxel: the wall voxels themselves
    wall_idx = _canal_wall(whole if spine is None else spine, seed, ymax, radius_wall, spacing_mm)
    y_idx = np.arange(ny)[None, :]
    anterior = y_idx <= wall_idx[:, None]  # (nz, ny)
    body = whole & anterior[:, :, None]
    body = _largest_component_with(body, seed)
    removed = 1.0 - body.sum() / whole.sum()
    if body_only is None and removed < BODY_ONLY_MAX_REMOVED:
        return BodySplit(whole.copy(), "body_only", radius)
    # Pedicle bases beside the posterior wall lie farther than one core radius from the core; the
    # body's own surface lies at one radius (a voxel more for sampling). Rims between endplate and
    # wall lie up to sqrt(2) radii out, so the limit applies only where the pedicles join: the
    # posterior half of the body.
    reach = radius + max(spacing_mm)
    near_core = edt_squared_mm2(~core, spacing_mm) <= reach * reach
    posterior_half = (y_idx >= (wall_idx - (wall_idx - _anterior_edge(core)) * 0.5)[:, None])[:, :, None]
    body &= near_core | ~posterior_half
    body = _largest_component_with(body, seed)
    return BodySplit(fill_body_holes(_drop_thin_attachments(body, seed)), "split", radius)


def fill_body_holes(body: np.ndarray) -> np.ndarray:
    """The body with every hole of its axial, coronal and sagittal slices filled: in front of the
    canal, anything a body encloses is its marrow (a segmentation that left dark or noisy marrow
    out would otherwise shrink the trabecular ROI onto the dense bone around the gaps)."""
    out = fill_holes_slicewise(body)
    out |= fill_holes_slicewise(out.transpose(1, 0, 2)).transpose(1, 0, 2)
    out |= fill_holes_slicewise(out.transpose(2, 1, 0)).transpose(2, 1, 0)
    return out


_CROSS = ndi.generate_binary_structure(3, 1)


def _drop_thin_attachments(body: np.ndarray, seed) -> np.ndarray:
    """Remove pieces joined to the body by bridges one voxel thin (osteophyte tips, fragments of a
    neighbour's endplate): an opening, the component holding the body's core, then the body's own
    surface within one voxel of it restored."""
    opened = ndi.binary_opening(body, structure=_CROSS)
    if not opened[seed]:
        return body
    kept = _largest_component_with(opened, seed)
    return body & ndi.binary_dilation(kept, structure=_CROSS)


def _edge_per_slice(core: np.ndarray, last: bool) -> np.ndarray:
    """Per slice: the y index of the core's posterior (last) or anterior edge; slices without
    core take the nearest slice's value."""
    nz = core.shape[0]
    has = core.any(axis=(1, 2))
    edge = np.full(nz, np.nan)
    for z in np.flatnonzero(has):
        rows = np.flatnonzero(core[z].any(axis=1))
        edge[z] = rows[-1] if last else rows[0]
    known = np.flatnonzero(has)
    return np.interp(np.arange(nz), known, edge[known])


def _fitted_back_edge(core: np.ndarray) -> np.ndarray:
    """The core's posterior edge per slice, as a straight line in z over the slices where the core is
    at least half its largest area (near the endplates the core shrinks and its edge moves forward; a
    line also follows a tilted body). The line's tilt is fitted to the core's centroid per slice (a
    mean over many voxels, stable under noise) rather than to its edge (one voxel row, which a
    noise draw moves); the edge sets only the line's mean offset behind the centroid."""
    nz = core.shape[0]
    area = core.sum(axis=(1, 2))
    edge = _edge_per_slice(core, last=True)
    use = np.flatnonzero(area >= 0.5 * area.max())
    if use.size < 2:
        return np.full(nz, edge[use].max() if use.size else edge.max())
    y_sum = np.tensordot(core.sum(axis=2), np.arange(core.shape[1]), axes=(1, 0))
    centroid = y_sum[use] / area[use]
    weights = area[use].astype(float)
    slope, intercept = np.polyfit(use, centroid, 1, w=np.sqrt(weights))
    offset = float(np.average(edge[use] - centroid, weights=weights))
    return slope * np.arange(nz) + intercept + offset


def _anterior_edge(core: np.ndarray) -> np.ndarray:
    return _edge_per_slice(core, last=False)


#: The smallest hole taken for the spinal canal (its cross-section is 150–300 mm² in adults).
MIN_CANAL_AREA_MM2 = 20.0
#: Gaps in the arch up to about twice this wide are closed before the canal is looked for.
ARCH_GAP_MM = 2.0
#: The canal places the body's posterior wall with its full weight when the slices enclosing it
#: span at least this many mm (6 slices of 1.5 mm, 3 of 3 mm, 2 of 5 mm); over fewer, its wall is
#: blended with the core-radius wall in proportion (a ring closed by one voxel of noise in one thin
#: slice moves the wall by a sixth, not all the way).
CANAL_FULL_WEIGHT_MM = 9.0
#: A hole whose front lies more than this many voxels behind the core-radius wall is not the canal
#: (a gap between the laminae or spinous processes of two levels, further back).
CANAL_REACH_VOXELS = 1.0


def _canal_wall(
    bone: np.ndarray, seed, core_back: np.ndarray, radius_wall: np.ndarray, spacing_mm: SpacingZYX
) -> np.ndarray:
    """Per slice: the y index of the body's posterior wall.

    Without an enclosed canal, ``radius_wall`` (one core radius behind the core's edge). With it, just
    in front of the canal, weighted by the length of the slices enclosing it over
    :data:`CANAL_FULL_WEIGHT_MM`: two nearly identical scans whose arches close in 2 and in 3
    slices get nearly the same wall (an all-or-nothing switch at 3 slices moved the CTA's T1 wall by
    4–6 mm between noise draws).
    """
    front, known = _canal_front(bone, seed, core_back, spacing_mm, max_front=radius_wall + CANAL_REACH_VOXELS)
    if front is None:
        return radius_wall
    weight = min(1.0, known * float(spacing_mm[0]) / CANAL_FULL_WEIGHT_MM)
    # the canal's anterior edge is the body's posterior wall: cut just in front of it
    return weight * (front - 1.0) + (1.0 - weight) * radius_wall


def _canal_front(
    bone: np.ndarray, seed, core_back: np.ndarray, spacing_mm: SpacingZYX, max_front: np.ndarray | None = None
) -> tuple[np.ndarray | None, int]:
    """Per slice: the y index of the spinal canal's anterior edge (None when no slice shows a canal),
    and the number of slices in which it is enclosed.

    The canal is a hole of ``bone``'s axial slice (background enclosed by the arch) of at least
    :data:`MIN_CANAL_AREA_MM2`, spanning the core's midline, its centre behind the core's posterior
    edge (holes inside the body, such as the basivertebral vein, do not count) and its front not
    behind ``max_front`` (per slice, when given). The front is never
    taken in front of one voxel behind the core's edge (a canal joined to the marrow through a gap in
    a thin posterior wall would cut the core). Slices without an enclosed canal take the nearest
    slice's value.
    """
    nz = bone.shape[0]
    min_voxels = MIN_CANAL_AREA_MM2 / (spacing_mm[1] * spacing_mm[2])
    x_seed = seed[2]
    front = np.full(nz, np.nan)
    # an arch with a gap of a few mm (a thin lamina under the bone threshold, noise) still encloses
    # its canal: the slice is closed with a disc of ARCH_GAP_MM before its holes are taken
    ry, rx = (max(1, int(round(ARCH_GAP_MM / s))) for s in spacing_mm[1:])
    yy, xx = np.ogrid[-ry : ry + 1, -rx : rx + 1]
    disc = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0
    for z in range(nz):
        sl = bone[z]
        if not sl.any():
            continue
        closed = ndi.binary_closing(np.pad(sl, ((ry, ry), (rx, rx))), structure=disc)[ry:-ry, rx:-rx]
        holes = ndi.binary_fill_holes(closed) & ~closed
        if not holes.any():
            continue
        lab, n = ndi.label(holes)
        best, best_size = 0, 0
        for k, obj in enumerate(ndi.find_objects(lab), start=1):
            own = lab[obj] == k
            size = int(own.sum())
            centre_y = obj[0].start + float(np.nonzero(own)[0].mean())
            behind_core = centre_y > core_back[z]  # its centre: a canal may start at a thin wall's core edge
            spans_midline = obj[1].start <= x_seed < obj[1].stop
            within_reach = max_front is None or obj[0].start <= max_front[z]
            if behind_core and spans_midline and within_reach and size >= min_voxels and size > best_size:
                best, best_size = k, size
        if best:
            # the core is body: a hole reaching in front of one voxel behind the core's edge has
            # leaked into the marrow through a gap in a thin posterior wall (3 mm voxels, noise)
            front[z] = max(float(np.flatnonzero((lab == best).any(axis=1))[0]), core_back[z] + 1.0)
    known = np.flatnonzero(np.isfinite(front))
    if not known.size:
        return None, 0
    return np.interp(np.arange(nz), known, front[known]), int(known.size)


_SIDES = (("inferior", "superior"), ("anterior", "posterior"), ("right", "left"))


def vertebra_masks(labels: LabelMap, *, levels=None, body_only: bool | None = None) -> list[VertebraMask]:
    """Crop each level of a canonical label map and split off its body. One pass over the volume.

    Args:
        labels: label map in the canonical frame, ``labels.labels`` naming the levels.
        levels: the levels to return (default: the named levels present in the array), in
            cranio-caudal order. A requested level with no voxels is returned with ``box=None``.
        body_only: passed to :func:`split_body`.
    """
    named = {name: vid for name, vid in labels.labels.items() if vid > 0}
    boxes = label_bboxes(labels.array, sorted(set(named.values()))) if named else {}
    if levels is None:  # default: the named levels that have voxels
        names = [name for name, vid in named.items() if boxes[vid][0] > 0]
    else:
        names = list(levels)
    names = sorted(set(names), key=level_rank)
    ids = {name: named[name] for name in names if name in named}
    out = []
    for name in names:
        label_id = ids.get(name, 0)
        count, box = boxes.get(label_id, (0, None))
        if not count:
            out.append(VertebraMask(name, label_id, None, None, None, "empty", ()))
            continue
        whole = labels.array[box] == label_id
        split = split_body(whole, labels.spacing_mm, body_only=body_only, spine=labels.array[box] > 0)
        # the sides of the scan the body touches (the part measured; a thoracic spinous process
        # reaches down past the next vertebra's body and touches a scan that ends there, while the
        # body above it is whole), or the whole vertebra's where no body was split off
        part = split.body if split.body is not None and split.body.any() else whole
        edges = []
        for axis, (low, high) in enumerate(_SIDES):
            other = tuple(a for a in range(3) if a != axis)
            present = np.flatnonzero(part.any(axis=other))
            if box[axis].start + present[0] == 0:
                edges.append(low)
            if box[axis].start + present[-1] + 1 == labels.shape[axis]:
                edges.append(high)
        out.append(VertebraMask(name, label_id, box, whole, split.body, split.method, tuple(edges)))
    return out
