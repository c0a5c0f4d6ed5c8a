"""qa.png: a mid-sagittal view with every level, and an axial view per level with its ROI.

Drawn with matplotlib's Agg backend in the canonical frame (superior up, anterior left on the
sagittal view; patient right on the image left of axial views, radiological convention).
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["render_qa_png", "CATEGORY_COLOURS"]

CATEGORY_COLOURS = {"normal": "#2e7d32", "low_bmd": "#f9a825", "osteoporosis": "#c62828",
                    "severe_osteoporosis": "#6a1b9a", None: "#90a4ae"}
_WINDOW = (-250.0, 1250.0)


def _category(bmd, thresholds) -> str | None:
    if bmd is None or thresholds is None:
        return None
    from volbmd.classify import acr_category

    return acr_category(bmd, thresholds)


def _body_points(masks, level):
    """(N, 3) canonical indices of a level's body, from its crop (no pass over the volume)."""
    lm = masks.get(level)
    if lm is None or not lm.body.any():
        return np.empty((0, 3), int)
    return np.argwhere(lm.body) + np.array([s.start for s in lm.box])


def render_qa_png(volume, labels, bodies, rois, report, thresholds=None, masks=None) -> bytes:
    """PNG bytes. ``volume``, ``labels``, ``bodies``, ``rois``: canonical-frame volumes (z, y, x);
    ``masks``: level → LevelMasks (body and ROI crops) from the measurement."""
    masks = masks or {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    sz, sy, sx = volume.spacing_mm
    arr = volume.array
    records = [v for v in report.vertebrae if v.trabecular_n_voxels]
    n = max(1, len(records))
    ncols = min(4, n)
    nrows = int(np.ceil(n / ncols))
    fig = plt.figure(figsize=(4.2 + 2.6 * ncols, max(6.0, 2.8 * nrows)), dpi=110)
    gs = fig.add_gridspec(nrows, ncols + 2)
    ax_sag = fig.add_subplot(gs[:, :2])
    centres = [_body_points(masks, lvl).mean(axis=0) for lvl in masks if masks[lvl].body.any()]
    x_mid = int(np.median([c[2] for c in centres])) if centres else arr.shape[2] // 2
    sag = np.asarray(arr[:, :, x_mid], dtype=np.float32)
    extent = (0, arr.shape[1] * sy, 0, arr.shape[0] * sz)
    ax_sag.imshow(np.clip(sag, *_WINDOW), cmap="gray", origin="lower", extent=extent, aspect="equal")
    lab_sag = labels.array[:, :, x_mid]
    roi_sag = rois.array[:, :, x_mid] if rois is not None else np.zeros_like(lab_sag)
    cmap = ListedColormap(["#000000", "#4fc3f7"])  # only value 1 (the ROI) is drawn; the rest is masked
    ax_sag.imshow(np.ma.masked_where(roi_sag == 0, np.ones(roi_sag.shape)), cmap=cmap, origin="lower", extent=extent,
                  alpha=0.6, aspect="equal", vmin=0, vmax=1, interpolation="nearest")
    for v in report.vertebrae:
        vid = labels.labels.get(v.level)
        sel = _body_points(masks, v.level)
        if vid is None or sel.size == 0:
            continue
        ax_sag.contour((lab_sag == vid).astype(float), levels=[0.5], colors="#ffee58", linewidths=0.8, origin="lower",
                       extent=extent)
        zc, yc = sel[:, 0].mean() * sz, sel[:, 1].min() * sy
        cat = _category(v.bmd_mg_cm3, thresholds)
        text = v.level + (f"  {v.bmd_mg_cm3:.0f}" if v.bmd_mg_cm3 is not None else
                          (f"  {v.trabecular_hu_mean:.0f} HU" if v.trabecular_hu_mean is not None else ""))
        ax_sag.text(max(0.0, yc - 4), zc, text, color="white", fontsize=8, ha="right", va="center",
                    bbox=dict(facecolor=CATEGORY_COLOURS.get(cat, "#90a4ae"), alpha=0.85, pad=1.5, edgecolor="none"))
    summ = report.summary
    title = "mid-sagittal"
    if summ.bmd_mg_cm3_mean is not None:
        title = (f"BMD {summ.bmd_mg_cm3_mean:.1f} mg/cm³ {summ.model_extra.get('material') or ''} "
                 f"({'+'.join(summ.levels_used)}): {summ.acr_category}")
    elif summ.l1_hu is not None:
        title = f"L1 {summ.l1_hu:.0f} HU (no calibration)"
    ax_sag.set_title(title, fontsize=10)
    ax_sag.set_xlabel("anterior → posterior (mm)")
    ax_sag.set_ylabel("inferior → superior (mm)")
    for i, v in enumerate(records):
        ax = fig.add_subplot(gs[i // ncols, 2 + i % ncols])
        vid = labels.labels.get(v.level)
        body_sel = _body_points(masks, v.level)
        if vid is None or body_sel.size == 0:
            ax.axis("off")
            continue
        z = int(np.median(body_sel[:, 0]))
        y0, y1 = body_sel[:, 1].min(), body_sel[:, 1].max()
        x0, x1 = body_sel[:, 2].min(), body_sel[:, 2].max()
        pad_y, pad_x = int(25 / sy), int(25 / sx)
        ys = slice(max(0, y0 - pad_y), min(arr.shape[1], y1 + pad_y))
        xs = slice(max(0, x0 - pad_x), min(arr.shape[2], x1 + pad_x))
        img = np.asarray(arr[z, ys, xs], dtype=np.float32)
        ext = (0, img.shape[1] * sx, img.shape[0] * sy, 0)
        ax.imshow(np.clip(img, *_WINDOW), cmap="gray", extent=ext)
        ax.contour((bodies.array[z, ys, xs] == vid).astype(float), levels=[0.5], colors="#ffee58", linewidths=0.8,
                   extent=(0, img.shape[1] * sx, 0, img.shape[0] * sy), origin="upper")
        roi = rois.array[z, ys, xs] == vid
        ax.imshow(np.ma.masked_where(~roi, np.ones(roi.shape)), cmap=cmap, alpha=0.6, extent=ext, vmin=0, vmax=1,
                  interpolation="nearest")
        cat = _category(v.bmd_mg_cm3, thresholds)
        line = f"{v.level}: {v.trabecular_hu_mean:.0f} HU" if v.trabecular_hu_mean is not None else v.level
        if v.bmd_mg_cm3 is not None:
            line += f", {v.bmd_mg_cm3:.0f} mg/cm³"
        ax.set_title(line, fontsize=9, color=CATEGORY_COLOURS.get(cat, "black"))
        extra = []
        if v.genant_grade:
            extra.append(f"Genant {v.genant_grade}")
        extra += [f for f in v.flags if not f.startswith("genant_not_graded")]
        if extra:
            ax.set_xlabel(", ".join(extra)[:48], fontsize=7, color="#c62828")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"volbmd QA: {report.input.path}", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.15, pil_kwargs={"compress_level": 3})
    plt.close(fig)
    return buf.getvalue()
