"""Repeatability of BMD: the same scan under fresh noise, small shifts and rotations (a re-positioned
patient) and thicker slices, through the fixed-mask path and the full default pipeline.

For each development CT and each disturbance, prints per level: the mean BMD, the CV over the runs,
the bias of their mean against the undisturbed run, the bmd_sd_mg_cm3 the undisturbed run reported
against the observed SD (their ratio), whether every run found the level and gave the same category,
in how many runs the segmenter flagged the level uncertain (a disc another chain would move), and
the Genant grade of the undisturbed run with the grades the others gave where any differs. Fixed masks are
the reference masks where a scan has them, otherwise the default pipeline's own masks of the
undisturbed scan (moved with the scan for shifts and rotations). A closing table gives, per case,
path and kind, the median and largest CV, the levels past the targets (CV 1 % with fixed masks,
2 % for the full pipeline; |bias| 2 %), the levels lost in some run, and on how many levels the
reported SD lies within ½–2× of the observed one; ``--json`` writes the rows and that table.

``--noise-hu auto`` adds noise as strong as the scan's own (estimated by the internal calibration):
then a run differs from the next as two acquisitions of the patient would, and the reported SD,
which is for a repeat acquisition, should match the observed SD within a factor of about √2.

Usage: python tools/bench_precision.py [--data ../shared/data] [--cases a,b] [--draws 6] [--noise-hu 15|auto]
                                       [--kinds noise,shift,rotate,thick] [--paths fixed,full]
                                       [--roi eroded_body|mid_slab_ellipse] [--repeat-draws N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
REFERENCE_MASKS = {"ts_abdomen_ct": ("ts_abdomen_ct/vertebrae_multilabel.nii.gz", "totalseg")}


class GivenLabels:
    """A segmenter that returns fixed labels (the fixed-mask path)."""

    name = "fixed masks"
    masks_given = True  # the masks are fixed: no segmentation uncertainty in the BMD's SD

    def __init__(self, labels):
        self.labels = labels

    def segment(self, volume):
        return self.labels


def disturb(volume, labels, kind: str, seed: int, noise_hu: float):
    """(volume, labels) after one disturbance, both in the canonical frame; ``labels`` may be None."""
    from volbmd.volume import LabelMap

    rng = np.random.default_rng(seed)
    arr = volume.array.astype(np.float32)
    lab = None if labels is None else labels.array
    spacing = volume.spacing_mm
    if kind == "noise":
        arr = arr + rng.normal(0.0, noise_hu, arr.shape).astype(np.float32)
    elif kind == "shift":  # up to 1.5 mm in each direction, sub-voxel
        offset = rng.uniform(-1.5, 1.5, 3) / np.asarray(spacing)
        arr = ndi.shift(arr, offset, order=1, mode="nearest")
        lab = None if lab is None else ndi.shift(lab, offset, order=0, mode="nearest")
    elif kind == "rotate":  # up to 3° about the patient's long axis and 2° sideways
        for angle, axes in ((rng.uniform(-3, 3), (1, 2)), (rng.uniform(-2, 2), (0, 2))):
            arr = ndi.rotate(arr, angle, axes=axes, reshape=False, order=1, mode="nearest")
            lab = None if lab is None else ndi.rotate(lab, angle, axes=axes, reshape=False, order=0, mode="nearest")
    elif kind == "thick":  # pairs of slices averaged (a reconstruction with twice the slice thickness)
        n = arr.shape[0] // 2 * 2
        arr = arr[:n].reshape(-1, 2, *arr.shape[1:]).mean(axis=1)
        lab = None if lab is None else lab[:n:2]
        spacing = (spacing[0] * 2, *spacing[1:])
        arr = arr + rng.normal(0.0, 1.0, arr.shape).astype(np.float32)  # a different draw every run
    else:
        raise ValueError(kind)
    out = dataclasses.replace(volume, array=np.round(arr).astype(np.int16), spacing_mm=spacing)
    out_labels = None if lab is None else LabelMap.on_grid_of(out, lab.astype(labels.array.dtype), labels.labels)
    return out, out_labels


OVERRIDES: dict = {}  # config overrides for every run (--roi)


def run(volume, labels):
    """Per level: (bmd, bmd_sd, genant_grade, flagged uncertain), the summary's category, BMD and SD
    for one analysis."""
    import volbmd

    report = (
        volbmd.analyze(volume, segmenter=GivenLabels(labels), **OVERRIDES)
        if labels is not None
        else volbmd.analyze(volume, **OVERRIDES)
    )
    levels = {
        v.level: (v.bmd_mg_cm3, v.bmd_sd_mg_cm3, v.genant_grade, any(f.startswith("uncertain:") for f in v.flags))
        for v in report.vertebrae
        if v.bmd_mg_cm3 is not None and not any(f.startswith("cut_by_scan_edge") for f in v.flags)
    }
    return levels, report.summary.acr_category, report.summary.bmd_mg_cm3_mean, report.summary.bmd_sd_mg_cm3


def bench_case(name: str, scan: Path, data: Path, kinds, paths, draws: int, noise_hu) -> list[dict]:
    import volbmd
    from volbmd.geometry import canonicalize
    from volbmd.io import load_label_map, load_volume
    from volbmd.labels import load_label_scheme

    canon, _ = canonicalize(load_volume(scan))
    rows = []
    for path in paths:
        if path == "fixed":
            if name in REFERENCE_MASKS:
                file, scheme = REFERENCE_MASKS[name]
                fixed = canonicalize(load_label_map(data / file, load_label_scheme(scheme)))[0]
            else:
                fixed = canonicalize(volbmd.analyze(canon).artifacts.labels)[0]
        else:
            fixed = None
        base, base_cat, base_mean, base_summary_sd = run(canon, fixed)
        if noise_hu == "auto":
            from volbmd.calibrate.uncertainty import scan_noise_hu

            sigma = scan_noise_hu(volbmd.analyze(canon).calibration) or 15.0
        else:
            sigma = float(noise_hu)
        for kind in kinds:
            t = time.perf_counter()
            results = [run(*disturb(canon, fixed, kind, seed, sigma)) for seed in range(draws)]
            seconds = (time.perf_counter() - t) / draws
            for level in sorted(base, key=lambda lvl: _rank(lvl)):
                values = [r[0][level][0] for r in results if level in r[0]]
                sds = [r[0][level][1] for r in results if level in r[0] and r[0][level][1] is not None]
                row = _row(
                    name, path, kind, level, base[level][0], values, sds, len(results), seconds, base_sd=base[level][1]
                )
                row["genant_base"] = base[level][2]
                row["genant_grades"] = sorted(
                    {r[0][level][2] for r in results if level in r[0]}, key=lambda g: -1 if g is None else g
                )
                row["uncertain_runs"] = sum(bool(r[0][level][3]) for r in results if level in r[0])
                rows.append(row)
            means = [r[2] for r in results if r[2] is not None]
            sds = [r[3] for r in results if r[3] is not None]
            row = _row(name, path, kind, "summary", base_mean, means, sds, len(results), seconds, base_sd=base_summary_sd)
            row["category_stable"] = all(r[1] == base_cat for r in results)
            rows.append(row)
    return rows


def _rank(level):
    from volbmd.labels import level_rank

    return level_rank(level)


def _row(case, path, kind, level, base, values, sds, runs, seconds, base_sd=None) -> dict:
    """``base_sd``: the SD the undisturbed run reported (its claim about this scan); without it the
    mean of the SDs the disturbed runs reported (each on a scan noisier than the original)."""
    values = np.asarray([v for v in values if v is not None], float)
    found = len(values) == runs or (base is None and len(values) == 0)
    mean = float(values.mean()) if values.size else float("nan")
    sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    reported = float(base_sd) if base_sd is not None else float(np.mean(sds)) if sds else float("nan")
    return {
        "case": case,
        "path": path,
        "kind": kind,
        "level": level,
        "base": base,
        "mean": mean,
        "cv_pct": 100 * sd / mean if values.size > 1 and mean else float("nan"),
        "bias_pct": 100 * (mean - base) / base if base and values.size else float("nan"),
        "base_missing": base is None,
        "sd": sd,
        "reported_sd": reported,
        "sd_ratio": reported / sd if sd and sd > 0 and sds else float("nan"),
        "found_every_run": found,
        "seconds": seconds,
    }


#: The issue's targets per path: CV % at most this per level (and |bias| at most 2 % on both).
CV_TARGET_PCT = {"fixed": 1.0, "full": 2.0}
BIAS_TARGET_PCT = 2.0


def summarise(rows: list[dict]) -> list[dict]:
    """One line per case, path and kind over its levels (not the summary row): median and maximum
    CV %, the levels above the path's CV target, the largest |bias| % and the levels past 2 %, the
    levels not found in every run, and on how many levels the reported SD lies within half and twice
    the observed one. Cells without a number (a level not found) count where they say so only."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["level"] != "summary":
            groups.setdefault((r["case"], r["path"], r["kind"]), []).append(r)
    out = []
    for (case, path, kind), levels in groups.items():
        cv = np.array([r["cv_pct"] for r in levels], float)
        bias = np.abs(np.array([r["bias_pct"] for r in levels], float))
        ratio = np.array([r["sd_ratio"] for r in levels], float)
        have_cv, have_bias, have_ratio = np.isfinite(cv), np.isfinite(bias), np.isfinite(ratio)
        out.append(
            {
                "case": case,
                "path": path,
                "kind": kind,
                "levels": len(levels),
                "cv_median_pct": float(np.median(cv[have_cv])) if have_cv.any() else float("nan"),
                "cv_max_pct": float(cv[have_cv].max()) if have_cv.any() else float("nan"),
                "over_cv_target": int((cv[have_cv] > CV_TARGET_PCT.get(path, 2.0)).sum()),
                "bias_max_pct": float(bias[have_bias].max()) if have_bias.any() else float("nan"),
                "over_bias_target": int((bias[have_bias] > BIAS_TARGET_PCT).sum()),
                "not_every_run": sum(not r["found_every_run"] for r in levels),
                "sd_within_2x": int(((ratio[have_ratio] >= 0.5) & (ratio[have_ratio] <= 2.0)).sum()),
                "sd_compared": int(have_ratio.sum()),
            }
        )
    return out


def print_summary(summary: list[dict]) -> None:
    print()
    print(
        f"{'case':24s} {'path':5s} {'kind':6s} {'levels':>6s} {'CV med':>6s} {'CV max':>6s} {'>target':>7s} "
        f"{'|bias| max':>10s} {'>2 %':>4s} {'lost':>4s} {'SD in ½–2×':>10s}"
    )
    for s in summary:
        print(
            f"{s['case']:24s} {s['path']:5s} {s['kind']:6s} {s['levels']:6d} {s['cv_median_pct']:6.2f} "
            f"{s['cv_max_pct']:6.2f} {s['over_cv_target']:7d} {s['bias_max_pct']:10.2f} {s['over_bias_target']:4d} "
            f"{s['not_every_run']:4d} {s['sd_within_2x']:>5d}/{s['sd_compared']:<4d}"
        )


def _genant(row) -> str:
    """The undisturbed run's Genant grade, and the grades of the disturbed runs where any differs
    ("0 → 0,2,3"); "–" where not graded."""
    if "genant_grades" not in row:
        return ""
    show = lambda g: "–" if g is None else str(g)  # noqa: E731
    base, seen = row["genant_base"], row["genant_grades"]
    if seen in ([], [base]):
        return show(base)
    return f"{show(base)} → {','.join(show(g) for g in seen)}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cases", default=None)
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--noise-hu", default="15", help="SD of the added noise in HU, or auto (the scan's own)")
    parser.add_argument("--kinds", default="noise,shift,rotate,thick")
    parser.add_argument("--paths", default="fixed,full")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--repeat-draws",
        type=int,
        default=None,
        help="uncertainty.repeat_draws for every run: the reported SD measured by repeating the analysis",
    )
    parser.add_argument("--roi", default=None, help="trabecular ROI for every run (default: the configured one)")
    args = parser.parse_args(argv)
    if args.roi:
        OVERRIDES["measurement"] = {"roi": args.roi}
    if args.repeat_draws is not None:
        OVERRIDES["uncertainty"] = {"repeat_draws": args.repeat_draws}
    reference = json.loads((REPO / "tests" / "data" / "reference_levels.json").read_text())["cases"]
    names = args.cases.split(",") if args.cases else list(reference)
    print(
        f"{'case':24s} {'path':5s} {'kind':6s} {'level':7s} {'BMD':>7s} {'CV %':>6s} {'bias %':>7s} "
        f"{'SD':>6s} {'rep.SD':>6s} {'ratio':>5s} {'all runs':>8s} {'cat.':>5s} {'unsure':>6s} {'s/run':>5s} {'Genant':>8s}"
    )
    rows = []
    for name in names:
        for r in bench_case(
            name,
            args.data / reference[name]["scan"],
            args.data,
            args.kinds.split(","),
            args.paths.split(","),
            args.draws,
            args.noise_hu,
        ):
            rows.append(r)
            cat = "" if "category_stable" not in r else ("same" if r["category_stable"] else "CHANGES")
            unsure = f"{r['uncertain_runs']}/{args.draws}" if r.get("uncertain_runs") else ""
            print(
                f"{r['case']:24s} {r['path']:5s} {r['kind']:6s} {r['level']:7s} {r['mean']:7.1f} {r['cv_pct']:6.2f} "
                f"{r['bias_pct']:7.2f} {r['sd']:6.2f} {r['reported_sd']:6.2f} {r['sd_ratio']:5.2f} "
                f"{'yes' if r['found_every_run'] else 'NO':>8s} {cat:>5s} {unsure:>6s} {r['seconds']:5.1f} {_genant(r):>8s}",
                flush=True,
            )
    summary = summarise(rows)
    print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
