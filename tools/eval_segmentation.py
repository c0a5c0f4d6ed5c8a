"""Evaluate a segmentation backend on every development CT against the reference level annotations.

For each case of tests/data/reference_levels.json (scans in ../shared/data): vertebrae in view
(whole ones, and cut ones in brackets), found (a found body centroid within 20 mm of the reference),
named (the same level within 20 mm: the VerSe identification rule), merged (one found vertebra
holds two reference centroids), split (one reference vertebra is the nearest of two found ones),
implausible and uncertain (levels the backend flagged so); merged and split count whole reference vertebrae only, whole-vertebra Dice where reference masks exist, the
naming confidence and the seconds the backend took.

With ``--crop-mm L``, each case is instead cut into windows L mm tall along the spine (every
``--crop-step-mm``), as a scan of a shorter field of view would show it (a cardiac or upper-abdomen
CT), and each window's names are checked against the reference vertebrae lying at least 8 mm inside
it: right, wrong (another level's name within 20 mm), missing, and whether a wrong name came with a
naming confidence of 0.5 or more, no provisional flag and no implausible/uncertain flag on that
level — confidently wrong, the failure that matters most.

Usage: python tools/eval_segmentation.py [--data ../shared/data] [--segmenter classical] [--model DIR]
                                         [--cases a,b] [--json out.json] [--crop-mm 120 [--crop-step-mm 40]]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "reference_levels.json"

#: reference whole-vertebra masks per case: (file, label scheme, levels)
MASKS = {
    "ts_abdomen_ct": ("ts_abdomen_ct/vertebrae_multilabel.nii.gz", "totalseg", ("T12", "L1", "L2", "L3", "L4", "L5")),
    "ts_chest_dicom": ("ts_chest_dicom/reference_multilabel.nii.gz", "totalseg", ("T11", "T12")),
    "cta_chest": ("cta_chest/t12.nii.gz", {"T12": 1}, ("T12",)),
}


def body_centroids(labels) -> dict[str, np.ndarray]:
    """Level → body centroid (LPS world mm) of a label map, with volbmd's body split."""
    from volbmd.geometry import canonicalize
    from volbmd.vertebrae import vertebra_masks

    canon, _ = canonicalize(labels)
    out = {}
    for vm in vertebra_masks(canon):
        if vm.body is None or not vm.body.any():
            continue
        idx = np.argwhere(vm.body).mean(axis=0) + np.array([s.start for s in vm.box])
        out[vm.level] = canon.geometry.index_to_world(idx)
    return out


def evaluate_case(name: str, case: dict, data: Path, segmenter) -> dict:
    from volbmd.geometry import canonicalize
    from volbmd.io import load_label_map, load_volume
    from volbmd.labels import load_label_scheme

    volume = load_volume(data / case["scan"])
    t = time.perf_counter()
    try:
        labels = segmenter.segment(volume)
        error = None
    except Exception as exc:  # a failing case is a row, not the end of the evaluation
        labels, error = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t
    ref = case["vertebrae"]
    row = {
        "case": name,
        "in_view": sum(v["complete"] for v in ref),
        "cut": sum(not v["complete"] for v in ref),
        "seconds": round(seconds, 1),
        "error": error,
    }
    if labels is None:
        return row | {
            "found": 0,
            "named": 0,
            "merged": 0,
            "split": 0,
            "implausible": 0,
            "uncertain": 0,
            "dice": {},
            "confidence": None,
            "levels": [],
            "misnamed": [],
        }
    found = body_centroids(labels)
    canon_lab, _ = canonicalize(labels)
    ref_pts = {v["level"]: np.asarray(v["centroid_lps_mm"]) for v in ref}
    whole = [v["level"] for v in ref if v["complete"]]
    near = {lvl: [f for f, c in found.items() if np.linalg.norm(c - ref_pts[lvl]) <= 20.0] for lvl in ref_pts}
    n_found = sum(bool(near[lvl]) for lvl in whole)
    named = [lvl for lvl in whole if lvl in near[lvl]]
    misnamed = [f"{lvl}→{','.join(near[lvl])}" for lvl in whole if near[lvl] and lvl not in near[lvl]]
    # merged: one found vertebra's label at two reference centroids
    inv = np.linalg.inv(canon_lab.geometry.direction_matrix * np.asarray(canon_lab.spacing_mm)[::-1])
    holder = {}
    for lvl, p in ref_pts.items():
        ijk = inv @ (p - np.asarray(canon_lab.origin_lps_mm))
        z, y, x = (int(round(v)) for v in ijk[::-1])
        box = canon_lab.array[max(0, z - 2) : z + 3, max(0, y - 2) : y + 3, max(0, x - 2) : x + 3]
        ids = box[box > 0]
        holder[lvl] = int(np.bincount(ids).argmax()) if ids.size else 0
    counts = np.bincount([holder[lvl] for lvl in whole if holder[lvl]], minlength=1)
    merged = int((counts >= 2).sum())
    nearest = [
        min(ref_pts, key=lambda lvl: np.linalg.norm(c - ref_pts[lvl]))
        for c in found.values()
        if min(np.linalg.norm(c - p) for p in ref_pts.values()) <= 20.0
    ]
    split = sum(1 for lvl in set(nearest) if lvl in whole and nearest.count(lvl) >= 2)
    dice = {}
    if name in MASKS:
        file, scheme, levels = MASKS[name]
        ids = load_label_scheme(scheme) if isinstance(scheme, str) else scheme
        truth = canonicalize(load_label_map(data / file, {k: v for k, v in ids.items() if k in levels}))[0]
        for lvl in levels:
            t_mask = truth.array == truth.labels[lvl]
            o_mask = canon_lab.array == labels.labels[lvl] if lvl in labels.labels else np.zeros_like(t_mask)
            dice[lvl] = round(float(2 * (t_mask & o_mask).sum() / max(1, t_mask.sum() + o_mask.sum())), 3)
    quality = labels.metadata.get("level_quality", {})
    implausible = sum(any(f.startswith("implausible") for f in q.get("flags", [])) for q in quality.values())
    uncertain = sum(any(f.startswith("uncertain") for f in q.get("flags", [])) for q in quality.values())
    naming = labels.metadata.get("naming") or {}
    return row | {
        "found": n_found,
        "named": len(named),
        "merged": merged,
        "split": split,
        "implausible": implausible,
        "uncertain": uncertain,
        "dice": dice,
        "confidence": naming.get("confidence"),
        "levels": list(labels.labels),
        "misnamed": misnamed,
        "flags": labels.metadata.get("flags", []),
    }


def crop_z(canon, k0: int, k1: int):
    """Slices k0..k1 of a canonical volume, its origin moved to the first one kept."""
    origin = canon.geometry.index_to_world(np.array([k0, 0, 0]))
    return canon.with_array(np.ascontiguousarray(canon.array[k0:k1]), origin_lps_mm=tuple(float(v) for v in origin))


def evaluate_crops(name: str, case: dict, data: Path, segmenter, length_mm: float, step_mm: float) -> list[dict]:
    """One row per window of ``length_mm`` along z (see the module docstring)."""
    from volbmd.geometry import canonicalize
    from volbmd.io import load_volume

    canon, _ = canonicalize(load_volume(data / case["scan"]))
    sz, nz = canon.spacing_mm[0], canon.shape[0]
    n = min(nz, int(round(length_mm / sz)))
    to_index = np.linalg.inv(canon.geometry.direction_matrix * np.asarray(canon.spacing_mm)[::-1])
    rows = []
    for k0 in range(0, nz - n + 1, max(1, int(round(step_mm / sz)))):
        k1 = k0 + n
        row: dict = {"case": name, "z_mm": (round(k0 * sz), round(k1 * sz))}
        try:
            labels = segmenter.segment(crop_z(canon, k0, k1))
        except Exception as exc:  # a window without a spine is a row too
            rows.append(row | {"error": f"{type(exc).__name__}: {str(exc)[:80]}"})
            continue
        found = body_centroids(labels)
        quality = labels.metadata.get("level_quality", {})
        flagged = {
            lvl for lvl, q in quality.items() if any(f.startswith(("implausible", "uncertain")) for f in q.get("flags", []))
        }
        right, wrong, missing = [], [], []
        wrong_unflagged = False
        for v in case["vertebrae"]:
            p = np.asarray(v["centroid_lps_mm"])
            k = (to_index @ (p - np.asarray(canon.origin_lps_mm)))[2]
            if not (k0 + 8.0 / sz <= k <= k1 - 1 - 8.0 / sz):
                continue
            near = [f for f, c in found.items() if np.linalg.norm(c - p) <= 20.0]
            if v["level"] in near:
                right.append(v["level"])
            elif near:
                wrong.append(f"{v['level']}→{','.join(near)}")
                wrong_unflagged |= any(f not in flagged for f in near)
            else:
                missing.append(v["level"])
        naming = labels.metadata.get("naming") or {}
        provisional = any(f.startswith("levels:provisional") for f in labels.metadata.get("flags", []))
        confidence = naming.get("confidence")
        confident = confidence is not None and confidence >= 0.5 and not provisional and wrong_unflagged
        rows.append(
            row
            | {"right": right, "wrong": wrong, "missing": missing, "confidence": confidence, "confident": confident}
            | {"error": None}
        )
    return rows


def print_crops(rows: list[dict]) -> None:
    print(f"{'case':26s} {'window mm':>11s} {'right':>5s} {'conf':>5s}  wrong / missing")
    for r in rows:
        if r["error"]:
            print(f"{r['case']:26s} {r['z_mm'][0]:>5d}-{r['z_mm'][1]:<5d}  no spine: {r['error']}")
            continue
        conf = "-" if r["confidence"] is None else f"{r['confidence']:.2f}"
        mark = "  CONFIDENTLY WRONG" if r["wrong"] and r["confident"] else ""
        extra = " ".join(r["wrong"]) + (f"  missing {' '.join(r['missing'])}" if r["missing"] else "")
        print(f"{r['case']:26s} {r['z_mm'][0]:>5d}-{r['z_mm'][1]:<5d} {len(r['right']):>5d} {conf:>5s}  {extra}{mark}")
    ok = [r for r in rows if not r["error"]]
    print(
        f"windows {len(rows)}, no spine {len(rows) - len(ok)}, all right {sum(not r['wrong'] for r in ok)}, "
        f"wrong but unsure {sum(bool(r['wrong']) and not r['confident'] for r in ok)}, "
        f"confidently wrong {sum(bool(r['wrong']) and r['confident'] for r in ok)}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--segmenter", default="classical")
    parser.add_argument("--model", default=None)
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--crop-mm", type=float, default=None, help="evaluate windows this tall instead")
    parser.add_argument("--crop-step-mm", type=float, default=40.0)
    args = parser.parse_args(argv)
    from volbmd.segment.base import make_segmenter

    reference = json.loads(REFERENCE.read_text())["cases"]
    names = args.cases.split(",") if args.cases else list(reference)
    segmenter = make_segmenter(args.segmenter, model=args.model)
    if args.crop_mm:
        crops = [
            r
            for name in names
            for r in evaluate_crops(name, reference[name], args.data, segmenter, args.crop_mm, args.crop_step_mm)
        ]
        print_crops(crops)
        if args.json:
            args.json.write_text(json.dumps(crops, indent=1, default=str))
        return 0
    rows = [evaluate_case(name, reference[name], args.data, segmenter) for name in names]
    head = f"{'case':26s} {'in view':>9s} {'found':>5s} {'named':>5s} {'merged':>6s} {'split':>5s} {'implaus.':>8s} {'uncert.':>7s} {'conf':>5s} {'s':>5s}  Dice / misnamed"
    print(head)
    print("-" * len(head))
    for r in rows:
        conf = "-" if r["confidence"] is None else f"{r['confidence']:.2f}"
        dice = " ".join(f"{k} {v:.2f}" for k, v in r["dice"].items())
        extra = (
            dice
            + ("  misnamed: " + " ".join(r["misnamed"]) if r["misnamed"] else "")
            + (f"  ERROR {r['error']}" if r["error"] else "")
        )
        print(
            f"{r['case']:26s} {r['in_view']:>5d} (+{r['cut']}) {r['found']:>5d} {r['named']:>5d} {r['merged']:>6d} {r['split']:>5d} "
            f"{r['implausible']:>8d} {r['uncertain']:>7d} {conf:>5s} {r['seconds']:>5.1f}  {extra}"
        )
    total = {k: sum(r[k] for r in rows) for k in ("in_view", "found", "named", "merged", "split")}
    print(
        f"{'all':26s} {total['in_view']:>5d}      {total['found']:>5d} {total['named']:>5d} {total['merged']:>6d} {total['split']:>5d}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
