"""Benchmark measure_vertebrae against a straightforward scipy.ndimage version of the same outputs.

A 512×512×400 int16 CT with 17 labelled vertebrae (T1–L5). Prints, from one run: the time of
measure_vertebrae (after a warm-up that compiles the kernels), the time of the scipy version, their
ratio, one numpy pass over the volume as the bandwidth floor, and the peak memory of the
measurement (in a fresh process) as a multiple of the volume's size.

Usage: python tools/bench_measure.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

LEVELS = tuple(f"T{i}" for i in range(1, 13)) + tuple(f"L{i}" for i in range(1, 6))
SHAPE = (400, 512, 512)
SPACING = (1.0, 0.7, 0.7)


def make_case(n_slices: int = SHAPE[0]):
    """A 512×512×n_slices int16 CT of T1–L5 (bodies and discs scaled to fill the slices)."""
    from volbmd.phantoms import make_spine_phantom
    from volbmd.volume import LabelMap

    scale = n_slices / SHAPE[0]
    p = make_spine_phantom(
        LEVELS,
        spacing_mm=SPACING,
        body_height_mm=15.0 * scale,
        disc_height_mm=6.0 * scale,
        body_semi_axes_mm=(14.0, 19.0),
        field_of_view_mm=(SHAPE[1] * SPACING[1], SHAPE[2] * SPACING[2]),
        noise_hu=15.0,
        seed=0,
    )
    nz = p.volume.shape[0]
    if nz >= n_slices:
        sl = slice((nz - n_slices) // 2, (nz - n_slices) // 2 + n_slices)
        vol_arr, lab_arr = p.volume.array[sl], p.labels.array[sl]
    else:
        pad = ((0, n_slices - nz), (0, 0), (0, 0))
        vol_arr = np.pad(p.volume.array, pad, constant_values=-1000)
        lab_arr = np.pad(p.labels.array, pad)
    vol = p.volume.with_array(np.ascontiguousarray(vol_arr))
    labels = LabelMap.on_grid_of(vol, np.ascontiguousarray(lab_arr), p.labels.labels)
    assert vol.shape == (n_slices, SHAPE[1], SHAPE[2]), vol.shape
    return vol, labels


# ---- the scipy/numpy version: the same pipeline with each kernel replaced by its plain reference


def _scipy_edt_squared(mask, spacing_mm):
    return ndi.distance_transform_edt(np.pad(np.asarray(mask) != 0, 1), sampling=spacing_mm)[1:-1, 1:-1, 1:-1] ** 2


def _scipy_strip(mask, spacing_mm, depth_mm):
    mask = np.asarray(mask) != 0
    if depth_mm == 0:
        return mask.copy()
    return _scipy_edt_squared(mask, spacing_mm) > depth_mm**2 * (1 + 1e-9)


def _scipy_bboxes(labels, ids):
    out = {}
    for i in ids:
        m = labels == i
        count = int(m.sum())
        out[i] = (count, ndi.find_objects(m.astype(np.uint8))[0] if count else None)
    return out


def _numpy_stats(values):
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return None
    out = {
        "n": int(values.size),
        "mean": float(values.mean()),
        "sd": float(values.std()),
        "median": float(np.median(values)),
    }
    for p in (5, 25, 50, 75, 95):
        out[f"p{p}"] = float(np.percentile(values, p))
    return out


@contextlib.contextmanager
def scipy_kernels():
    import volbmd.measure as measure
    import volbmd.vertebrae as vertebrae

    saved = (
        vertebrae.edt_squared_mm2,
        vertebrae.label_bboxes,
        measure.strip_cortex,
        measure.masked_values,
        measure.value_statistics,
    )
    vertebrae.edt_squared_mm2 = _scipy_edt_squared
    vertebrae.label_bboxes = _scipy_bboxes
    measure.strip_cortex = _scipy_strip
    measure.masked_values = lambda v, m: v[m].astype(np.float64)
    measure.value_statistics = _numpy_stats
    try:
        yield
    finally:
        (
            vertebrae.edt_squared_mm2,
            vertebrae.label_bboxes,
            measure.strip_cortex,
            measure.masked_values,
            measure.value_statistics,
        ) = saved


def _as_ras(volume):
    """The same scan stored with x and y reversed (a typical NIfTI), as a contiguous array."""
    import dataclasses

    ras = np.ascontiguousarray(volume.array[:, ::-1, ::-1])
    origin = volume.geometry.index_to_world([0, volume.shape[1] - 1, volume.shape[2] - 1])
    return dataclasses.replace(volume, array=ras, origin_lps_mm=tuple(origin), direction_lps=np.diag([-1.0, -1.0, 1.0]))


def _best(fn, repeats):
    times = []
    result = None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def _peak_memory(vol, labels) -> dict:
    """Run the measurement in a fresh process and report its peak RSS above the loaded inputs.

    VmHWM from /proc is used: ru_maxrss of a child can carry the parent's peak from before exec.
    """
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "v.npy", vol.array)
        np.save(Path(tmp) / "l.npy", labels.array)
        code = f"""
import json, numpy as np
from volbmd.volume import Volume, LabelMap
from volbmd.measure import measure_vertebrae
v = Volume(array=np.load({str(Path(tmp) / "v.npy")!r}), spacing_mm={SPACING!r})
l = LabelMap.on_grid_of(v, np.load({str(Path(tmp) / "l.npy")!r}), {dict(labels.labels)!r})
from volbmd.phantoms import make_spine_phantom
tiny = make_spine_phantom(("L1",), spacing_mm=(2.0, 1.5, 1.5))
measure_vertebrae(tiny.volume, tiny.labels)  # loads numba, its threads and the kernels first
def status_kb(key):
    return int(open('/proc/self/status').read().split(key + ':')[1].split()[0])
before = status_kb('VmHWM')  # the high-water mark so far: the loaded inputs
measure_vertebrae(v, l)
print(json.dumps({{"before_kb": before, "peak_kb": status_kb('VmHWM')}}))
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from volbmd.measure import measure_vertebrae

    t = time.perf_counter()
    vol, labels = make_case()
    print(
        f"case: {'×'.join(map(str, vol.shape[::-1]))} int16 (x×y×z), {len(labels.labels)} vertebrae, "
        f"spacing {SPACING} mm (z,y,x); built in {time.perf_counter() - t:.1f} s"
    )
    print(f"threads: numba {os.environ.get('NUMBA_NUM_THREADS', 'default')}, cores {os.cpu_count()}")

    t = time.perf_counter()
    measure_vertebrae(vol, labels)
    print(f"first call (includes loading or compiling kernels): {time.perf_counter() - t:.2f} s")

    fast_s, fast = _best(lambda: measure_vertebrae(vol, labels), args.repeats)
    with scipy_kernels():
        slow_s, slow = _best(lambda: measure_vertebrae(vol, labels), max(1, args.repeats // 2))
    floor_s, _ = _best(lambda: int(np.add.reduce(vol.array, axis=None, dtype=np.int64)), args.repeats)

    worst = 0.0
    for a, b in zip(fast.levels, slow.levels):
        assert a.level == b.level and a.trabecular_n_voxels == b.trabecular_n_voxels, (
            a.level,
            a.trabecular_n_voxels,
            b.trabecular_n_voxels,
        )
        for key in (
            "trabecular_hu_mean",
            "trabecular_hu_median",
            "trabecular_hu_sd",
            "trabecular_hu_p5",
            "trabecular_hu_p95",
        ):
            worst = max(worst, abs(getattr(a, key) - getattr(b, key)))
    print(f"outputs identical to the scipy version: {len(fast.levels)} levels, largest HU difference {worst:.2e}")
    ras_vol, ras_labels = _as_ras(vol), _as_ras(labels)
    ras_s, ras = _best(lambda: measure_vertebrae(ras_vol, ras_labels), args.repeats)
    assert [m.trabecular_hu_median for m in ras.levels] == [m.trabecular_hu_median for m in fast.levels]
    print(f"measure_vertebrae (numba):        {fast_s:7.3f} s")
    print(f"  same scan stored RAS (views):   {ras_s:7.3f} s")
    print(f"scipy.ndimage version:            {slow_s:7.3f} s")
    print(f"speed-up vs scipy:                {slow_s / fast_s:7.1f}x")
    print(f"numpy pass over the volume:       {floor_s:7.3f} s  (bandwidth floor; measure = {fast_s / floor_s:.1f}x floor)")
    mem = _peak_memory(vol, labels)
    volume_mb = vol.array.nbytes / 2**20
    extra_mb = (mem["peak_kb"] - mem["before_kb"]) / 1024
    print(
        f"peak memory above the loaded scan and labels: {extra_mb:.0f} MiB = {extra_mb / volume_mb:.2f}x the volume "
        f"({volume_mb:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
