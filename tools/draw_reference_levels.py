"""Draw the reference level annotations (tests/data/reference_levels.json) on each development CT:
a sagittal slab through the spine with every annotated body centroid and its level, written to
docs/reference_levels/<case>.png.

Usage: python tools/draw_reference_levels.py [--data ../shared/data] [--out docs/reference_levels]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def draw(case: str, entry: dict, data: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from volbmd.geometry import canonicalize
    from volbmd.io import load_volume

    canon, _ = canonicalize(load_volume(data / entry["scan"]))
    geo = canon.geometry
    inv = np.linalg.inv(geo.direction_matrix * np.asarray(canon.spacing_mm)[::-1])
    pts = {
        v["level"]: (inv @ (np.asarray(v["centroid_lps_mm"]) - np.asarray(canon.origin_lps_mm)))[::-1]
        for v in entry["vertebrae"]
    }  # (z, y, x) index
    x = int(round(np.median([p[2] for p in pts.values()])))
    sz, sy, sx = canon.spacing_mm
    half = max(1, int(round(3.0 / sx)))
    slab = np.asarray(canon.array[:, :, max(0, x - half) : x + half + 1], np.float32).mean(axis=2)
    extent = [0, canon.shape[1] * sy, 0, canon.shape[0] * sz]
    fig, ax = plt.subplots(figsize=(5, 5 * canon.shape[0] * sz / (canon.shape[1] * sy) + 0.6))
    ax.imshow(np.clip(slab, -200, 1000), cmap="gray", origin="lower", extent=extent)
    for v in entry["vertebrae"]:
        z, y, _ = pts[v["level"]]
        zm, ym = (z + 0.5) * sz, (y + 0.5) * sy
        ax.plot(ym, zm, "o", color="#ffcc00" if v["complete"] else "#ff7f0e", ms=4)
        ax.text(ym - 12, zm, v["level"], color="#ffcc00", fontsize=7, ha="right", va="center")
    ax.set_title(f"{case} ({entry['source']}, {entry['confidence']})", fontsize=8)
    ax.set_xlabel("anterior → posterior (mm)", fontsize=7)
    ax.set_ylabel("inferior → superior (mm)", fontsize=7)
    ax.tick_params(labelsize=6)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{case}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reference_levels")
    args = parser.parse_args(argv)
    cases = json.loads((REPO / "tests" / "data" / "reference_levels.json").read_text())["cases"]
    for case, entry in cases.items():
        print(draw(case, entry, args.data, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
