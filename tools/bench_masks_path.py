"""Benchmark `volbmd run --segmenter masks`: given vertebra masks, how long from command to outputs.

A 0.75 mm CT of 488×404×448 voxels with L1–L5 masks (the size of a TotalSegmentator abdomen) is
written as .nii.gz; the command runs in fresh processes (the first warms the Numba cache). Prints the
wall time of the command, its stages (report.json timings_s, the rest is start-up and imports), one
read of the scan with SimpleITK as the floor of the load stage, and the ratio to the
TotalSegmentator spine-measurement figure of issue 12 (16.7 s in process, same scan size), which is
quoted, not re-measured: TotalSegmentator is not installed here.

Usage: python tools/bench_masks_path.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PEER_S = 16.7
SHAPE = (448, 404, 488)  # z, y, x
SPACING = (0.75, 0.75, 0.75)


def make_case(folder: Path) -> tuple[Path, Path]:
    import volbmd
    from volbmd.phantoms import make_spine_phantom
    from volbmd.volume import LabelMap

    p = make_spine_phantom(
        ("L1", "L2", "L3", "L4", "L5"),
        spacing_mm=SPACING,
        body_height_mm=26.0,
        disc_height_mm=9.0,
        field_of_view_mm=(SHAPE[1] * SPACING[1], SHAPE[2] * SPACING[2]),
        noise_hu=15.0,
        seed=0,
    )
    nz = p.volume.shape[0]
    pad = max(0, SHAPE[0] - nz)
    vol_arr = np.pad(p.volume.array, ((pad // 2, pad - pad // 2), (0, 0), (0, 0)), constant_values=-1000)[: SHAPE[0]]
    lab_arr = np.pad(p.labels.array, ((pad // 2, pad - pad // 2), (0, 0), (0, 0)))[: SHAPE[0]]
    vol = p.volume.with_array(np.ascontiguousarray(vol_arr))
    labels = LabelMap.on_grid_of(vol, np.ascontiguousarray(lab_arr), p.labels.labels)
    assert vol.shape == SHAPE, vol.shape
    volbmd.write_volume(vol, folder / "ct.nii.gz")
    volbmd.write_volume(labels, folder / "masks.nii.gz")
    return folder / "ct.nii.gz", folder / "masks.nii.gz"


def run_once(scan: Path, masks: Path, out: Path) -> tuple[float, dict]:
    t = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "volbmd.cli", "run", str(scan), "--masks", str(masks), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return wall, json.loads((out / "report.json").read_text())["timings_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scan, masks = make_case(tmp)
        run_once(scan, masks, tmp / "warm")
        runs = [run_once(scan, masks, tmp / f"out{i}") for i in range(args.runs)]
        t = time.perf_counter()
        sitk.ReadImage(str(scan))
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import volbmd.cli"], check=True)
        import_s = time.perf_counter() - t
    wall, stages = min(runs, key=lambda r: r[0])
    print(f"volbmd run --segmenter masks, {SHAPE[2]}×{SHAPE[1]}×{SHAPE[0]} @ {SPACING[0]} mm, L1–L5 (best of {args.runs})")
    print(
        f"  {'start-up + imports':22s} {wall - sum(stages.values()):6.2f} s   (python -c 'import volbmd.cli': {import_s:.2f} s)"
    )
    for name, seconds in stages.items():
        extra = f"   (SimpleITK read alone: {read_s:.2f} s)" if name == "load" else ""
        print(f"  {name:22s} {seconds:6.2f} s{extra}")
    print(f"  {'total':22s} {wall:6.2f} s   → {PEER_S / wall:.1f}× the peer's {PEER_S} s (target ≥ 5×)")


if __name__ == "__main__":
    main()
