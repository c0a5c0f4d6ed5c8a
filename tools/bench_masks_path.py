"""Benchmark `volbmd run --segmenter masks`: given vertebra masks, how long from command to outputs.

A 0.75 mm CT of 488×404×448 voxels with L1–L5 masks (the size of a TotalSegmentator abdomen) is
written as .nii.gz; the command runs in fresh processes (the first warms the Numba cache). Prints the
wall time of the command, its stages (report.json timings_s, the rest is start-up and imports), one
read of the scan with SimpleITK as the floor of the load stage, and the ratio to the
TotalSegmentator spine-measurement figure of issue 12 (16.7 s in process, same scan size), which is
quoted, not re-measured: TotalSegmentator is not installed here.

With ``--baseline REF`` the same case also runs, interleaved, on the code of git commit REF (unpacked
with ``git archive`` into a temporary folder and put first on PYTHONPATH), and the ratio of the two is
printed: machines differ, so that ratio, not the quoted peer's, is what a speed change is judged by.
Issue 12's target (5.2 → 3.3 s on its machine, 1.58×) is measured against ``--baseline 99aadc2^``,
the code before its speed work.

Usage: python tools/bench_masks_path.py [--runs 3] [--baseline 99aadc2^]
"""

from __future__ import annotations

import argparse
import json
import os
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


def unpack_baseline(ref: str, folder: Path) -> dict[str, str]:
    """The code of commit ``ref``, importable: its volbmd/ and, under their installed names, its
    kernels/ and configs/. Returns the environment that runs it."""
    repo = Path(__file__).resolve().parents[1]
    code = folder / "code"
    code.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    names = folder / "names"
    names.mkdir()
    (names / "volbmd_kernels").symlink_to(code / "kernels")
    (names / "volbmd_configs").symlink_to(code / "configs")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), str(names)])}


def run_once(scan: Path, masks: Path, out: Path, env: dict[str, str] | None = None) -> tuple[float, dict]:
    t = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "volbmd.cli", "run", str(scan), "--masks", str(masks), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=out.parent,
    )
    wall = time.perf_counter() - t
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return wall, json.loads((out / "report.json").read_text())["timings_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", metavar="REF", help="also run the code of this git commit, e.g. 99aadc2^")
    args = parser.parse_args()
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scan, masks = make_case(tmp)
        env = unpack_baseline(args.baseline, tmp) if args.baseline else None
        run_once(scan, masks, tmp / "warm")
        runs, baseline_runs = [], []
        for i in range(args.runs):
            runs.append(run_once(scan, masks, tmp / f"out{i}"))
            if env is not None:
                if i == 0:
                    run_once(scan, masks, tmp / "warm_baseline", env)
                baseline_runs.append(run_once(scan, masks, tmp / f"baseline{i}", env))
        t = time.perf_counter()
        sitk.ReadImage(str(scan))
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import volbmd.cli"], check=True)
        import_s = time.perf_counter() - t
    wall, stages = min(runs, key=lambda r: r[0])
    print(f"volbmd run --segmenter masks, {SHAPE[2]}×{SHAPE[1]}×{SHAPE[0]} @ {SPACING[0]} mm, L1–L5 (best of {args.runs})")
    base_wall, base_stages = min(baseline_runs, key=lambda r: r[0]) if baseline_runs else (None, {})
    if base_wall is not None:
        print(f"  {'':22s} {'this':>6s}     {args.baseline:>10s}")

    def row(name: str, seconds: float, base: float | None, extra: str = "") -> None:
        print(f"  {name:22s} {seconds:6.2f} s" + ("" if base is None else f"   {base:8.2f} s") + extra)

    base_startup = None if base_wall is None else base_wall - sum(base_stages.values())
    row(
        "start-up + imports",
        wall - sum(stages.values()),
        base_startup,
        f"   (python -c 'import volbmd.cli': {import_s:.2f} s)",
    )
    for name, seconds in stages.items():
        row(
            name,
            seconds,
            base_stages.get(name) if base_wall is not None else None,
            f"   (SimpleITK read alone: {read_s:.2f} s)" if name == "load" else "",
        )
    row("total", wall, base_wall, f"   → {PEER_S / wall:.1f}× the peer's quoted {PEER_S} s (target ≥ 5×)")
    if base_wall is not None:
        print(f"  this code is {base_wall / wall:.2f}× as fast as {args.baseline} here (issue 12's target: ≥ 1.58×)")


if __name__ == "__main__":
    main()
