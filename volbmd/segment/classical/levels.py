"""Name the vertebrae from every landmark in view, jointly.

Landmarks: the sacrum (the lowest vertebra merges with the pelvis: S1), the last rib-bearing
vertebra above a rib-free one (T12), the first rib-bearing vertebra below a rib-free one (T1, with
C7 above it), and the rib state of every vertebra in between (thoracic vertebrae bear ribs, cervical
and lumbar ones do not). Each naming hypothesis, an anatomy (5 lumbar vertebrae, or transitional:
6 or 4, 13 or 11 rib pairs) placed at an offset, is scored by the landmarks it satisfies and the
ones it contradicts; the best one wins, the margin to the runner-up is the naming confidence, and
the flags say which evidence won and which disagreed. Transitional anatomies are considered only on
strong rib evidence (ribs on both sides of a vertebra whose upper disc was found). With no
landmark at all the names are provisional, counted from the lowest vertebra, and flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from volbmd.segment.classical.options import LevelOptions
from volbmd.segment.classical.types import Segment, SpineSegments

__all__ = ["assign_levels", "ANATOMIES"]


def _up(cervical: int = 7, thoracic: int = 12, lumbar: int = 5) -> list[str]:
    """Level names from the sacrum upwards."""
    return (
        ["S1"]
        + [f"L{n}" for n in range(lumbar, 0, -1)]
        + [f"T{n}" for n in range(thoracic, 0, -1)]
        + [f"C{n}" for n in range(cervical, 0, -1)]
    )


#: name → (levels from the sacrum up, transitional flag or None, needs)
ANATOMIES: dict[str, tuple[list[str], str | None, str]] = {
    "normal": (_up(), None, ""),
    "L6": (_up(lumbar=6), "transitional:L6 ({n} rib-free vertebrae above the sacrum)", "sacrum+last_rib"),
    "4_lumbar": (
        _up(lumbar=4),
        "transitional:4_lumbar ({n} rib-free vertebrae above the sacrum: sacralised L5 or T13)",
        "sacrum+last_rib",
    ),
    "13_ribs": (
        _up(thoracic=13),
        "transitional:13_rib_pairs ({r} rib-bearing vertebrae from the first rib to the last)",
        "first_rib+last_rib",
    ),
    "11_ribs": (
        _up(thoracic=11),
        "transitional:11_rib_pairs ({r} rib-bearing vertebrae from the first rib to the last)",
        "first_rib+last_rib",
    ),
}


@dataclass
class _Landmarks:
    sacrum: bool
    last_rib: int | None  # segment index of the last rib-bearing vertebra (a rib-free one below)
    last_strong: bool
    first_rib: int | None  # segment index of the first rib-bearing vertebra (a rib-free one above)
    first_strong: bool
    # the sacrum is there but the lowest vertebra in view has a disc below it: S1 is the piece under
    # that disc, too little of it in view to keep (a crop whose bottom cuts S1's top)
    s1_below: bool = False
    # the column ends above the scan's bottom: the sacrum below S1 is in view. When the scan cuts the
    # column, the pelvis beside the lowest vertebra may be the iliac crests beside L5 (a crop ending
    # in L5 had every level named one low, confidence 0.95)
    sacrum_strong: bool = True

    @property
    def any(self) -> bool:
        return self.sacrum or self.last_rib is not None or self.first_rib is not None

    @property
    def rib_free_above_sacrum(self) -> int:
        """Rib-free vertebrae between the sacrum and the last rib (0 without a last rib)."""
        if self.last_rib is None:
            return 0
        return self.last_rib - (0 if self.s1_below else 1)


def _landmarks(spine: SpineSegments, opts: LevelOptions) -> _Landmarks:
    segs = spine.segments
    ribs = [bool(s.rib_sides) for s in segs]
    n = len(segs)
    lowest = next((i for i, r in enumerate(ribs) if r), None)
    last = lowest if lowest is not None and lowest >= 1 else None
    if last is not None and any(s.lung_share > opts.lumbar_max_lung_share for s in segs[:last]):
        last = None  # a rib-free vertebra with the lungs beside it is thoracic, its ribs missed
    # strong: ribs on both sides of a vertebra with its upper disc in view (the top piece may hold
    # parts of two), and two rib-free vertebrae below it in view, one of them whole. A bottom piece cut
    # by the scan may have lost its rib to the vertebra above (a chest CT cut at T6 had its T5 taken
    # for the last rib-bearing one), and where the scan ends a few mm under T12 the twelfth ribs'
    # lower part is cut off and they no longer read as ribs (T11 was taken for it, confidence 0.83).
    last_strong = (
        last is not None
        and len(segs[last].rib_sides) == 2
        and last < n - 1
        and last >= 2
        and any(s.complete for s in segs[:last])
    )
    highest = next((i for i in range(n - 1, -1, -1) if ribs[i]), None)
    first = None
    if highest is not None and n - 1 - highest >= opts.first_rib_min_above:
        above = segs[highest + 1 :]
        # the rib-free vertebra above must be seen whole (a cut top piece may have lost its ribs), and
        # be cervical: with lung beside it, it is a thoracic vertebra whose ribs were missed (on a
        # 5 mm chest CT cut at T3, T5 and T6 went without ribs and T7 was named T1, confidence 0.87)
        seen = any(s.complete for s in above) or len(above) >= 2
        if seen and all(s.lung_share <= opts.cervical_max_lung_share for s in above):
            first = highest
    first_strong = first is not None and len(segs[first].rib_sides) == 2 and first > 0
    s1_below = spine.sacrum_at_bottom and segs[0].complete
    sacrum_strong = "partial_fov:inferior" not in spine.flags
    return _Landmarks(spine.sacrum_at_bottom, last, last_strong, first, first_strong, s1_below, sacrum_strong)


def _score(
    names: list[str], segs: list[Segment], marks: _Landmarks, anatomy_up: list[str], opts: LevelOptions
) -> tuple[float, list[str], list[str]]:
    """Score of one naming, the landmarks it satisfies and the ones it contradicts."""
    agree: list[str] = []
    disagree: list[str] = []
    score = 0.0
    if marks.sacrum:
        ok = names[0] == (anatomy_up[1] if marks.s1_below else "S1")
        weight = opts.sacrum_weight * (1.0 if marks.sacrum_strong else 0.4)
        score += weight if ok else -weight
        (agree if ok else disagree).append("sacrum")
    elif names[0] == "S1":
        score -= opts.sacrum_weight / 2  # S1 without the pelvis beside it
    last_thoracic = next(v for v in anatomy_up if v.startswith("T"))
    for key, index, strong, expected in (
        ("last_rib", marks.last_rib, marks.last_strong, last_thoracic),
        ("first_rib", marks.first_rib, marks.first_strong, "T1"),
    ):
        if index is None:
            continue
        weight = opts.end_rib_weight * (1.0 if strong else 0.4)
        ok = names[index] == expected
        score += weight if ok else -weight
        (agree if ok else disagree).append(key)
    for i, (name, seg) in enumerate(zip(names, segs)):
        weight = opts.rib_weight * (0.5 if i in (0, len(segs) - 1) else 1.0)
        score += weight if bool(seg.rib_sides) == name.startswith("T") else -weight
    return score, agree, disagree


def assign_levels(spine: SpineSegments, opts: LevelOptions | None = None) -> None:
    """Name the segments (bottom → top) in place; flags and ``spine.naming`` say how."""
    opts = opts or LevelOptions()
    segs = spine.segments
    if not segs:
        return
    marks = _landmarks(spine, opts)
    n = len(segs)
    if not marks.any:
        # no landmark: the lowest is T12 when ribs or lung lie beside it (a thoracic field of view), else L5
        thoracic = bool(segs[0].rib_sides) or segs[0].rib_beside_mm3 >= opts.rib_beside_thoracic_mm3 or spine.lung_at_bottom
        up = ANATOMIES["normal"][0]
        start = up.index("T12" if thoracic else "L5")
        for i, seg in enumerate(segs):
            seg.level = up[start + i] if start + i < len(up) else None
        spine.flags.append("levels:provisional (no sacrum, first or last rib in view)")
        spine.naming = {
            "method": "provisional",
            "confidence": 0.1,
            "landmarks": _describe(marks),
            "agrees": [],
            "disagrees": [],
        }
        return
    hypotheses = []
    for key, (up, _, needs) in ANATOMIES.items():
        if needs == "sacrum+last_rib" and not (marks.sacrum and marks.last_strong):
            continue
        if needs == "first_rib+last_rib" and not (marks.first_strong and marks.last_strong):
            continue
        for start in range(len(up) - n + 1):
            names = up[start : start + n]
            score, agree, disagree = _score(names, segs, marks, up, opts)
            if key != "normal":
                score -= 2.5
            hypotheses.append((score, key, names, agree, disagree))
    hypotheses.sort(key=lambda h: -h[0])
    score, key, names, agree, disagree = hypotheses[0]
    runner_up = next((h for h in hypotheses[1:] if h[2] != names), None)
    margin = score - runner_up[0] if runner_up else score
    for seg, name in zip(segs, names):
        seg.level = name
    template = ANATOMIES[key][1]
    if template:
        rib_free = marks.rib_free_above_sacrum
        rib_bearing = (
            (marks.first_rib - marks.last_rib + 1) if marks.first_rib is not None and marks.last_rib is not None else 0
        )
        spine.flags.append(template.format(n=rib_free, r=rib_bearing))
    if agree:
        spine.flags.append("levels:from_" + "_and_".join(agree))
    if "last_rib" in disagree and marks.sacrum and marks.last_rib is not None:
        spine.flags.append(f"levels:rib_count_disagrees ({marks.rib_free_above_sacrum} rib-free vertebrae above the sacrum)")
    elif "last_rib" in disagree and marks.last_rib is not None:
        spine.flags.append(f"levels:last_rib_disagrees (the last rib-bearing vertebra is named {names[marks.last_rib]})")
    if "first_rib" in disagree and marks.first_rib is not None:
        spine.flags.append(f"levels:first_rib_disagrees (the first rib-bearing vertebra is named {names[marks.first_rib]})")
    if "sacrum" in disagree:
        spine.flags.append(f"levels:sacrum_disagrees (the lowest vertebra is named {names[0]})")
    if len(agree) == 1 and not disagree and len(segs) > 1:
        spine.flags.append(f"levels:single_landmark ({agree[0].replace('_', ' ')} only)")
    confidence = 1.0 - math.exp(-max(margin, 0.0) / 4.0)
    strong = {"sacrum": marks.sacrum_strong, "last_rib": marks.last_strong, "first_rib": marks.first_strong}
    if not any(strong[a] for a in agree):
        # one rib-free neighbour cut by the scan, or ribs on one side only: the names may be one off
        # (chest CTs cut at T12 had their last rib missed on the cut piece and were named one level
        # low at 0.57); below 0.5 the report says the names are uncertain
        confidence = min(confidence, opts.weak_only_confidence)
    spine.naming = {
        "method": "joint landmarks",
        "anatomy": key,
        "confidence": round(confidence, 3),
        "score": round(score, 2),
        "margin": round(margin, 2),
        "landmarks": _describe(marks, names),
        "agrees": agree,
        "disagrees": disagree,
        "runner_up": None
        if runner_up is None
        else {"anatomy": runner_up[1], "lowest": runner_up[2][0], "score": round(runner_up[0], 2)},
    }


def _describe(marks: _Landmarks, names: list[str] | None = None) -> dict:
    def at(i):
        return None if i is None else (names[i] if names else i)

    return {
        "sacrum": marks.sacrum,
        "last_rib": None if marks.last_rib is None else {"at": at(marks.last_rib), "strong": marks.last_strong},
        "first_rib": None if marks.first_rib is None else {"at": at(marks.first_rib), "strong": marks.first_strong},
    }
