"""Benchmark `volbmd batch`: cases per minute with 1 and 2 Dask workers, and the time saved by
keeping an nnU-Net predictor loaded across cases (against rebuilding it for every case).

The cohort is made of spine phantoms with masks (the masks path: what a cohort with
TotalSegmentator masks runs). Each run starts its own LocalCluster; the figures include its start.
With ``--model DIR`` (an nnU-Net model folder, e.g. from tools/train_tiny_nnunet.py) the predictor
part runs: the same scans segmented by one predictor built once and kept (a batch worker), by a
predictor rebuilt per scan in this process, and by one `volbmd segment` process per scan.

Usage: python tools/bench_batch.py [--cases 8] [--model DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def make_cohort(root: Path, n: int) -> Path:
    import volbmd
    from volbmd.phantoms import make_spine_phantom

    rows = ["id,path,masks"]
    for i in range(n):
        p = make_spine_phantom(("T12", "L1", "L2", "L3"), trabecular_hu={"L1": 60.0 + 10 * i, "L2": 80.0 + 10 * i}, seed=i)
        volbmd.write_volume(p.volume, root / f"ct{i}.nii.gz")
        volbmd.write_volume(p.labels, root / f"m{i}.nii.gz")
        rows.append(f"case{i},ct{i}.nii.gz,m{i}.nii.gz")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def time_cohort(manifest: Path, out: Path, workers: int) -> float:
    from volbmd.batch import run_cohort

    t = time.perf_counter()
    table = run_cohort(manifest, out, workers=workers)
    seconds = time.perf_counter() - t
    assert (table["status"] == "done").all(), table[["id", "error"]]
    return seconds


def time_predictor(model: Path, scans: list[Path], tmp: Path) -> dict[str, float]:
    """Seconds to segment ``scans`` with the nnU-Net backend three ways: one predictor built once and
    kept (what a batch worker does), a predictor rebuilt for every scan in the same process, and one
    `volbmd segment` process per scan (what a per-case command line does)."""
    import subprocess
    import sys

    from volbmd.io import load_volume
    from volbmd.segment.base import make_segmenter

    volumes = [load_volume(s) for s in scans]
    t = time.perf_counter()
    segmenter = make_segmenter("nnunet", model=model, device="cpu")
    first_build = time.perf_counter() - t
    for v in volumes:
        segmenter.segment(v)
    kept = time.perf_counter() - t
    t = time.perf_counter()
    for v in volumes:
        make_segmenter("nnunet", model=model, device="cpu").segment(v)
    rebuilt = time.perf_counter() - t
    t = time.perf_counter()
    for i, scan in enumerate(scans):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "volbmd.cli",
                "segment",
                str(scan),
                "--segmenter",
                "nnunet",
                "--model",
                str(model),
                "--out",
                str(tmp / f"seg{i}.nii.gz"),
            ],
            check=True,
            capture_output=True,
        )
    per_process = time.perf_counter() - t
    return {"first_build": first_build, "kept": kept, "rebuilt": rebuilt, "per_process": per_process}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--model", type=Path, default=None, help="an nnU-Net model folder for the predictor part")
    parser.add_argument("--predictor-scans", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = make_cohort(tmp, args.cases)
        rates = {}
        for workers in (1, 2):
            seconds = time_cohort(manifest, tmp / f"out{workers}", workers)
            rates[workers] = args.cases / seconds * 60
            print(
                f"{workers} worker(s): {args.cases} cases in {seconds:.1f} s → {rates[workers]:.1f} cases/min "
                "(cluster start included)"
            )
        print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}×")
        if args.model is not None:
            scans = [tmp / f"ct{i}.nii.gz" for i in range(min(args.cases, args.predictor_scans))]
            r = time_predictor(args.model, scans, tmp)
            n = len(scans)
            print(
                f"nnU-Net, {n} scans: predictor kept {r['kept']:.1f} s (its first build {r['first_build']:.1f} s, "
                f"imports included); rebuilt per scan in the same process {r['rebuilt']:.1f} s; one `volbmd "
                f"segment` process per scan {r['per_process']:.1f} s"
            )
            print(
                f"  kept vs a process per scan: {(r['per_process'] - r['kept']) / n:.1f} s saved per case "
                f"({r['per_process'] / r['kept']:.2f}×); vs rebuilding in the same process: "
                f"{(r['rebuilt'] - (r['kept'] - r['first_build'])) / n:.2f} s per case"
            )


if __name__ == "__main__":  # Dask and nnU-Net start worker processes
    main()
