"""Benchmark the deep-learning BMD regressor's inference per vertebra on CPU.

Times, on spine phantoms of a typical size, the crop (canonicalise, split the body, resample) and the
ensemble's forward pass per vertebra, against the classical measurement of the same vertebrae
(measure_vertebrae: cortical stripping and statistics), measured in the same run.

Usage: python tools/bench_bmd_model.py MODEL_DIR [--vertebrae 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from volbmd.config import load_config
    from volbmd.measure import measure_vertebrae
    from volbmd.models.bmd_regressor import BmdRegressor, body_crop
    from volbmd.phantoms import make_spine_phantom

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--vertebrae", type=int, default=30)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    model = BmdRegressor(args.model)
    levels = ("L1", "L2", "L3")
    p = make_spine_phantom(levels, spacing_mm=(1.0, 0.75, 0.75), noise_hu=15.0)
    cfg = load_config(None)
    measure_vertebrae(p.volume, p.labels, cfg)  # warm (numba cache, torch)
    model.predict_crops(np.stack([body_crop(p.volume, p.labels, "L1")]))
    n_scans = max(1, args.vertebrae // len(levels))
    crop_s = predict_s = measure_s = 0.0
    for _ in range(n_scans):
        t = time.perf_counter()
        crops = np.stack([body_crop(p.volume, p.labels, lvl) for lvl in levels])
        crop_s += time.perf_counter() - t
        t = time.perf_counter()
        model.predict_crops(crops)
        predict_s += time.perf_counter() - t
        t = time.perf_counter()
        measure_vertebrae(p.volume, p.labels, cfg)
        measure_s += time.perf_counter() - t
    n = n_scans * len(levels)
    per = (crop_s + predict_s) / n
    print(f"{n} vertebrae, scan {p.volume.shape} at {p.volume.spacing_mm} mm, {len(model.nets)}-fold ensemble, 2 threads")
    print(f"  crop                 {1000 * crop_s / n:8.1f} ms per vertebra")
    print(f"  predict              {1000 * predict_s / n:8.1f} ms per vertebra")
    print(f"  DL total             {1000 * per:8.1f} ms per vertebra (target ≤ 500 ms)")
    print(
        f"  classical measure    {1000 * measure_s / n:8.1f} ms per vertebra (baseline) → DL costs {per / (measure_s / n):.2f}× it"
    )


if __name__ == "__main__":
    main()
