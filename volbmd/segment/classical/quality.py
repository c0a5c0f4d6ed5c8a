"""Plausibility of each vertebra found, and a confidence per level.

A vertebra is implausible when its height along the spine is far from its neighbours' (two
vertebrae merged, or one split), when it is too short or too tall for any vertebra, when its
volume is far from what its level usually has, or when no spinal canal was seen behind it. Each
finding is a flag on the vertebra (``implausible:<what> (...)``), which keeps it out of the
classification. A disc that another chain of discs, nearly as good, would put elsewhere flags the
two vertebrae it bounds ``uncertain:<which disc> (...)``: they stay in, with a warning to review
them. Names are counted from the landmarks, so a level whose every count passes a vertebra
implausible in size (a merge or a split there shifts the count) is ``uncertain:count (...)`` too.
The confidence (0–1) combines the findings with the strength and certainty of its two discs.
"""

from __future__ import annotations

import math

from volbmd.segment.classical.options import QualityOptions
from volbmd.segment.classical.types import Segment

__all__ = ["TYPICAL_VOLUME_ML", "check_segments", "check_counts"]

#: the implausible flags that say a vertebra may be two, or half of one (the count through it may be off)
COUNT_BREAKING = ("implausible:height", "implausible:merged?", "implausible:split?", "implausible:volume")

#: Typical whole-vertebra volume (body and posterior elements) by level, adults, ml. Rough values
#: (they grow steadily from T1 to L5); only gross departures (``volume_factor``) are flagged.
TYPICAL_VOLUME_ML = {
    **{f"C{n}": 12.0 for n in range(3, 7)},
    "C7": 15.0,
    "T1": 15.0,
    "T2": 16.0,
    "T3": 17.0,
    "T4": 18.0,
    "T5": 20.0,
    "T6": 22.0,
    "T7": 24.0,
    "T8": 27.0,
    "T9": 30.0,
    "T10": 34.0,
    "T11": 39.0,
    "T12": 45.0,
    "T13": 48.0,
    "L1": 55.0,
    "L2": 60.0,
    "L3": 65.0,
    "L4": 68.0,
    "L5": 70.0,
    "L6": 70.0,
}


def check_segments(
    segments: list[Segment],
    disc_scores: dict[int, float],
    canal_seen: list[bool],
    opts: QualityOptions,
    disc_alternatives: dict[int, tuple[float, float | None]] | None = None,
) -> None:
    """Set ``quality_flags`` and ``confidence`` on each segment (bottom to top), in place.

    ``disc_scores[ordinal]`` is the score of the disc below the segment of that ordinal (the one
    above is ``ordinal + 1``); ``canal_seen[i]`` says whether the canal was followed behind
    segment ``i``; ``disc_alternatives[ordinal]`` is (margin, distance in mm or None) of that disc
    (:func:`~volbmd.segment.classical.discs.disc_alternatives`): a disc whose margin is below
    ``uncertain_margin`` flags both vertebrae it bounds ``uncertain:disc_below``/``disc_above`` and
    lowers their confidence (they stay in the classification: their BMD moves a little, not
    their existence)."""
    heights = [s.arc_hi_mm - s.arc_lo_mm for s in segments]
    for i, seg in enumerate(segments):
        flags: list[str] = []
        confidence = 1.0
        h = heights[i]
        if seg.complete:
            if h < opts.min_height_mm:
                flags.append(f"implausible:height ({h:.0f} mm along the spine)")
            elif h > opts.max_height_mm:
                flags.append(f"implausible:height ({h:.0f} mm along the spine)")
            neighbours = [
                heights[j]
                for j in (i - 1, i + 1)
                if 0 <= j < len(segments) and segments[j].complete and segments[j].level != "S1"
            ]
            if neighbours and seg.level != "S1":
                ref = sum(neighbours) / len(neighbours)
                ratio = h / ref if ref > 0 else 1.0
                if ratio > opts.spacing_ratio_max:
                    flags.append(f"implausible:merged? ({h:.0f} mm tall against {ref:.0f} mm for its neighbours)")
                elif ratio < 1.0 / opts.spacing_ratio_max:
                    flags.append(f"implausible:split? ({h:.0f} mm tall against {ref:.0f} mm for its neighbours)")
                confidence *= math.exp(-abs(math.log(max(ratio, 1e-3))))
            typical = TYPICAL_VOLUME_ML.get(seg.level or "")
            if typical and seg.volume_ml > 0:
                factor = seg.volume_ml / typical
                if factor > opts.volume_factor or factor < 1.0 / opts.volume_factor:
                    flags.append(f"implausible:volume ({seg.volume_ml:.0f} ml; a {seg.level} is about {typical:.0f} ml)")
                confidence *= min(1.0, math.exp(-0.5 * max(0.0, abs(math.log(factor)) - math.log(1.5))))
            for o in (seg.ordinal, seg.ordinal + 1):
                confidence *= min(1.0, 0.5 + disc_scores.get(o, 0.5))
        else:
            confidence *= 0.5  # cut by the end of the track or the field of view
        for o, where in ((seg.ordinal, "below"), (seg.ordinal + 1, "above")):
            margin, other_mm = (disc_alternatives or {}).get(o, (math.inf, None))
            if margin < opts.uncertain_margin:
                other = f"puts it {other_mm:.0f} mm away" if other_mm is not None else "leaves it out"
                flags.append(f"uncertain:disc_{where} (another chain of discs {other}, within {margin:.2f} of the best)")
                confidence *= 0.5 + 0.5 * margin / opts.uncertain_margin
        if not canal_seen[i] and seg.level != "S1":
            flags.append("implausible:no_canal (no spinal canal was seen behind it)")
        if seg.volume_ml <= 0:
            flags.append("implausible:empty (nothing of it was grown)")
        if any(f.startswith("implausible") for f in flags):
            confidence *= 0.3
        seg.quality_flags = flags
        seg.confidence = round(max(0.0, min(1.0, confidence)), 3)


def check_counts(segments: list[Segment], naming: dict) -> None:
    """Flag ``uncertain:count`` on every level (bottom to top) whose name was counted, from every
    landmark that named the levels (``naming["agrees"]``), through a vertebra with a
    :data:`COUNT_BREAKING` flag, and on every level past those landmarks towards one that counts
    differently (``naming["disagrees"]``), and halve its confidence (once per level). A vertebra two
    discs too short or too tall is one the disc chain may have split or merged, which shifts every
    name counted through it (a 6 mm crop of the lumbar spine put two discs into L5, flagged it, and
    named L4 "L3" unflagged)."""
    agrees = naming.get("agrees") or []
    marks = naming.get("landmarks") or {}
    index = {s.level: i for i, s in enumerate(segments)}

    def where(key: str) -> int | None:
        if key == "sacrum":
            return 0 if marks.get("sacrum") else None
        return index.get((marks.get(key) or {}).get("at"))

    def mark(seg: Segment, why: str) -> None:
        if not any(f.startswith("uncertain:count") for f in seg.quality_flags):
            seg.quality_flags.append(f"uncertain:count ({why})")
            seg.confidence = round(seg.confidence * 0.5, 3)

    anchors = [i for i in (where(k) for k in agrees) if i is not None]
    if not anchors:
        return
    for key in naming.get("disagrees") or []:
        # another landmark counts differently: a disc is missing or extra somewhere between it and
        # the landmarks that named the levels, and every level past the nearest of those towards it
        # may be misnamed (a shifted copy of the CTA took T11's cupped endplate for a disc, and its
        # weak last rib said "T12" of the level named T11; only that spine-wide warning said so)
        d = where(key)
        if d is None or d in anchors:
            continue
        a = min(anchors, key=lambda i: abs(i - d))
        span = range(a + 1, len(segments)) if d > a else range(0, a)
        for i in span:
            mark(segments[i], f"the {key.replace('_', ' ')} counts differently")
    broken = {i for i, s in enumerate(segments) if any(f.startswith(COUNT_BREAKING) for f in s.quality_flags)}
    for i, seg in enumerate(segments):
        passed = [sorted(broken & set(range(min(a, i) + 1, max(a, i)))) for a in anchors]
        if i not in broken and all(passed):
            mark(seg, f"its name is counted through {segments[passed[0][0]].level}, whose size is implausible")
