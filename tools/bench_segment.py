"""Benchmark the classical segmenter on a 512×512×400 int16 CT with 17 vertebrae (T1–L5).

Prints, from one run: the segmentation time, one numpy pass over the volume (the bandwidth floor)
and their ratio, and the Dice of each found vertebra against the phantom's truth.

Usage: python tools/bench_segment.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_measure import _best, make_case  # noqa: E402  the same 512×512×400 case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from volbmd.segment.classical import segment_spine

    vol, truth = make_case()
    print(
        f"case: {'×'.join(map(str, vol.shape[::-1]))} int16 (x×y×z), {len(truth.labels)} vertebrae, spacing {vol.spacing_mm} mm"
    )
    times = []
    labels = None
    for _ in range(args.repeats):
        t = time.perf_counter()
        labels = segment_spine(vol)
        times.append(time.perf_counter() - t)
    floor = _best(lambda: int(np.add.reduce(vol.array, axis=None, dtype=np.int64)), 3)[0]
    dice = []
    for vid in labels.labels.values():
        ours = labels.array == vid
        best = max(truth.labels.values(), key=lambda t: int((ours & (truth.array == t)).sum()))
        ref = truth.array == best
        dice.append(2 * (ours & ref).sum() / (ours.sum() + ref.sum()))
    print(f"classical segmentation:   {min(times):7.2f} s (best of {args.repeats}); target ≤ 10 s on 2 cores")
    print(f"numpy pass over volume:   {floor:7.3f} s  (segmentation = {min(times) / floor:.0f}x floor)")
    print(f"vertebrae found: {len(labels.labels)}/{len(truth.labels)}, Dice min {min(dice):.3f} mean {np.mean(dice):.3f}")
    print(f"flags: {labels.metadata['flags']}")


if __name__ == "__main__":
    main()
