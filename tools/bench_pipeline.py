"""Benchmark the whole pipeline (classical segmentation, internal calibration, every output).

Prints, from one run: the time of each stage on a 512×512×400 int16 CT (read from .nii.gz), the
end-to-end time against the 15 s target, one numpy pass over the volume as the floor, and the peak
memory of a run on a 512×512×800 CT (a fresh process, VmHWM) against the 4 GB target.

Usage: python tools/bench_pipeline.py [--skip-800]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_measure import _best, make_case  # noqa: E402

_CHILD = """
import json, sys, time
from pathlib import Path
import volbmd
def hwm_kb():
    return int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])
scan, out = sys.argv[1], sys.argv[2]
stages = {}
t = time.perf_counter()
report = volbmd.analyze(scan, progress=lambda s, dt: stages.__setitem__(s, dt))
volbmd.write_outputs(report, out, progress=lambda s, dt: stages.__setitem__(s, dt))
print(json.dumps({"stages": stages, "total_s": time.perf_counter() - t, "peak_kb": hwm_kb(),
                  "levels": report.segmentation.levels_found}))
"""


def _run_child(scan: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", _CHILD, str(scan), str(out)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-800", action="store_true")
    args = parser.parse_args()
    import volbmd

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vol, _ = make_case(400)
        volbmd.write_volume(vol, tmp / "ct400.nii.gz")
        floor = _best(lambda: int(np.add.reduce(vol.array, axis=None, dtype=np.int64)), 3)[0]
        _run_child(tmp / "ct400.nii.gz", tmp / "warm")  # numba cache and imports warm
        res = _run_child(tmp / "ct400.nii.gz", tmp / "out400")
        print(f"512×512×400 int16 CT, {len(res['levels'])} vertebrae found ({', '.join(res['levels'][:3])} …)")
        for stage, seconds in res["stages"].items():
            print(f"  {stage:<20}{seconds:7.2f} s")
        print(
            f"  {'end to end':<20}{res['total_s']:7.2f} s   (target ≤ 15 s; numpy pass over the volume {floor:.3f} s,"
            f" {res['total_s'] / floor:.0f}x)"
        )
        print(f"  peak memory {res['peak_kb'] / 2**20:.2f} GiB (volume {vol.array.nbytes / 2**30:.2f} GiB)")
        if not args.skip_800:
            del vol
            big, _ = make_case(800)
            volbmd.write_volume(big, tmp / "ct800.nii.gz")
            nbytes = big.array.nbytes
            del big
            res = _run_child(tmp / "ct800.nii.gz", tmp / "out800")
            print(
                f"512×512×800 int16 CT: end to end {res['total_s']:.1f} s, peak memory {res['peak_kb'] / 2**20:.2f} GiB"
                f" (target ≤ 4 GB; volume {nbytes / 2**30:.2f} GiB), {len(res['levels'])} vertebrae"
            )


if __name__ == "__main__":
    main()
