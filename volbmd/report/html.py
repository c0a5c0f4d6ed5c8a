"""report.html: one self-contained page (table, QA picture inline, method, calibration, warnings)."""

from __future__ import annotations

import base64
from html import escape

from volbmd.classify import in_words

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.summary{font-size:1.05rem;padding:.6rem 1rem;border-radius:6px;display:inline-block;color:#fff}
.normal{background:#2e7d32}.low_bmd{background:#f9a825}.osteoporosis{background:#c62828}
.severe_osteoporosis{background:#6a1b9a}.none{background:#78909c}
.warn{color:#b71c1c}img{max-width:100%;border:1px solid #ddd}code{background:#f6f6f6;padding:0 .2rem}
"""


def _fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return escape(str(v))


def _bmd(v) -> str:
    """A level's BMD with its SD (a repeat scan's spread): "98.5 ± 0.7"."""
    sd = v.bmd_sd_mg_cm3
    return _fmt(v.bmd_mg_cm3) + (f" ± {sd:.1f}" if v.bmd_mg_cm3 is not None and sd is not None else "")


def render_html(report, qa_png: bytes | None) -> str:
    r = report
    summ = r.summary
    cat = summ.acr_category or "none"
    material = summ.material or ""
    if summ.bmd_mg_cm3_mean is not None:
        sd = summ.bmd_sd_mg_cm3
        headline = (
            f"BMD {summ.bmd_mg_cm3_mean:.1f}{f' ± {sd:.1f}' if sd is not None else ''} mg/cm³ {escape(material)} "
            f"over {escape('+'.join(summ.levels_used))}: <b>{escape(in_words(cat))}</b>"
            + (" (borderline)" if summ.borderline else "")
        )
    else:
        headline = "No ACR category (no calibration or fewer than two valid lumbar levels)"
    rows = []
    for v in r.vertebrae:
        h = v.heights_mm
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{c}</td>"
                for c in (
                    escape(v.level),
                    _fmt(v.body_volume_ml),
                    _fmt(v.trabecular_n_voxels),
                    _fmt(v.trabecular_hu_mean),
                    _fmt(v.trabecular_hu_median),
                    _fmt(v.trabecular_hu_sd),
                    _bmd(v),
                    "/".join(_fmt(x) for x in (h.anterior, h.middle, h.posterior)),
                    _fmt(v.genant_grade),
                    escape(", ".join(v.flags)),
                )
            )
            + "</tr>"
        )
    cal = r.calibration
    if cal.method == "none":
        cal_text = "none: Hounsfield units only"
    else:
        cal_text = (
            f"{escape(cal.method)} ({escape(in_words(cal.material))}): density = {cal.slope:.5f} · HU + "
            f"{cal.intercept:.3f} mg/cm³" + (f", R² = {cal.r2:.4f}" if cal.r2 is not None else "")
        )
    tissues = cal.reference_tissues
    tissue_rows = "".join(
        f"<tr><td>{escape(t)}</td><td>{_fmt(d.get('hu'))}</td><td>{_fmt(d.get('nominal_hu'))}</td><td>{_fmt(d.get('n_voxels'))}</td></tr>"
        for t, d in tissues.items()
    )
    rods = cal.rods
    rod_rows = "".join(
        f"<tr><td>{escape(in_words(d.get('name')))}</td><td>{_fmt(d.get('density_mg_cm3'))}</td><td>{_fmt(d.get('hu'), 2)}</td>"
        f"<td>{_fmt(d.get('residual_mg_cm3'), 2)}</td></tr>"
        for d in rods
    )
    m = r.measurement.model_dump() if r.measurement is not None else {}
    seg_flags = r.segmentation.flags
    naming = r.segmentation.naming or {}
    naming_text = (
        f" Level names: {escape(in_words(naming.get('method')))}, confidence {_fmt(naming.get('confidence'), 2)}"
        f"{' (agree: ' + escape(', '.join(naming.get('agrees') or [])) + ')' if naming.get('agrees') else ''}"
        f"{'; disagree: ' + escape(', '.join(naming.get('disagrees') or [])) if naming.get('disagrees') else ''}."
        if naming
        else ""
    )
    notes = summ.classification_notes
    warnings = "".join(f"<li class='warn'>{escape(w)}</li>" for w in r.qa.warnings) or "<li>none</li>"
    img = f"<img alt='QA overlays' src='data:image/png;base64,{base64.b64encode(qa_png).decode()}'>" if qa_png else ""
    timings = r.timings_s
    inp = r.input
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>volbmd report: {escape(inp.path)}</title><style>{_CSS}</style></head>
<body>
<h1>volbmd report: {escape(inp.path)}</h1>
<p class="summary {escape(cat)}">{headline}</p>
<p>L1: {_fmt(summ.l1_hu)} HU → {escape(in_words(summ.l1_screen, "no screen"))}. Largest Genant grade: {_fmt(summ.max_genant_grade)}.</p>
{"<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>" if notes else ""}
<h2>Vertebrae</h2>
<table><tr><th>level</th><th>body ml</th><th>ROI voxels</th><th>HU mean</th><th>HU median</th><th>HU SD</th>
<th>BMD mg/cm³</th><th>heights A/M/P mm</th><th>Genant</th><th>flags</th></tr>
{"".join(rows)}</table>
<h2>Pictures</h2>{img}
<h2>Method</h2>
<ul><li>Scan: {escape(in_words(inp.modality))}, {"×".join(str(s) for s in inp.shape[::-1])} voxels, spacing {"/".join(f"{s:g}" for s in inp.spacing_mm)} mm (z/y/x),
kVp {_fmt(inp.kvp, 0)}, contrast {escape(in_words(inp.contrast_phase, "none recorded"))}.</li>
<li>Segmentation: {escape(r.segmentation.backend)}; levels {escape(", ".join(r.segmentation.levels_found))}{("; " + escape("; ".join(seg_flags))) if seg_flags else ""}.{naming_text}</li>
<li>Trabecular ROI: {escape(in_words(m.get("roi")))}, cortical stripping {_fmt(m.get("cortical_depth_mm"))} mm ({escape(in_words(m.get("cortical_depth_rule")))}).</li>
<li>Classification: ACR QCT thresholds ({escape(in_words(summ.threshold_set))}) on the mean of two valid lumbar levels.</li></ul>
<h2>Calibration</h2><p>{cal_text}</p>
{"<table><tr><th>tissue</th><th>measured HU</th><th>nominal HU</th><th>voxels</th></tr>" + tissue_rows + "</table>" if tissue_rows else ""}
{"<table><tr><th>rod</th><th>density mg/cm³</th><th>HU</th><th>residual mg/cm³</th></tr>" + rod_rows + "</table>" if rod_rows else ""}
<h2>Warnings</h2><ul>{warnings}</ul>
<p><small>volbmd {escape(r.volbmd_version)}, report schema {escape(r.schema_version)}; time per stage (s):
{escape(", ".join(f"{k} {v:.2f}" for k, v in timings.items()))}. Research use; not a medical device.</small></p>
</body></html>
"""
