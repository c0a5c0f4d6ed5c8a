"""Agreement of predicted and reference BMD: MAE, RMSE, Pearson r, Bland–Altman bias and 95% limits,
and the AUROC of the prediction for BMD < 80 mg/cm³ (MONAI's ROC AUC); a Bland–Altman and scatter
picture."""

from __future__ import annotations

import numpy as np

__all__ = ["bmd_metrics", "bland_altman_png"]

OSTEOPOROSIS_BELOW_MG_CM3 = 80.0


def bmd_metrics(predicted: np.ndarray, reference: np.ndarray) -> dict[str, object]:
    """Metrics of ``predicted`` against ``reference`` (mg/cm³). ``auroc_lt80`` scores the lower the
    prediction, the likelier BMD < 80; None when the reference has only one class."""
    import torch
    from monai.metrics import compute_roc_auc

    p = np.asarray(predicted, np.float64)
    r = np.asarray(reference, np.float64)
    if p.shape != r.shape or p.size < 2:
        raise ValueError("need at least two paired values")
    diff = p - r
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1))
    positive = r < OSTEOPOROSIS_BELOW_MG_CM3
    auroc = None
    if 0 < positive.sum() < positive.size:
        auroc = float(np.asarray(compute_roc_auc(torch.as_tensor(-p), torch.as_tensor(positive.astype(np.float64)))))
    return {
        "n": int(p.size),
        "mae_mg_cm3": float(np.mean(np.abs(diff))),
        "rmse_mg_cm3": float(np.sqrt(np.mean(diff**2))),
        "pearson_r": float(np.corrcoef(p, r)[0, 1]),
        "bland_altman_bias_mg_cm3": bias,
        "bland_altman_lower_mg_cm3": bias - 1.96 * sd,
        "bland_altman_upper_mg_cm3": bias + 1.96 * sd,
        "auroc_lt80": auroc,
    }


def bland_altman_png(predicted: np.ndarray, reference: np.ndarray, metrics: dict, title: str) -> bytes:
    """A scatter (prediction against reference) beside a Bland–Altman plot, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.asarray(predicted, np.float64)
    r = np.asarray(reference, np.float64)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    lo, hi = float(min(p.min(), r.min())) - 5, float(max(p.max(), r.max())) + 5
    ax1.scatter(r, p, s=12, alpha=0.7)
    ax1.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax1.set_xlabel("reference BMD (mg/cm³)")
    ax1.set_ylabel("predicted BMD (mg/cm³)")
    ax1.set_title(f"r = {metrics['pearson_r']:.3f}, MAE {metrics['mae_mg_cm3']:.1f} mg/cm³")
    mean = (p + r) / 2
    ax2.scatter(mean, p - r, s=12, alpha=0.7)
    for key, style in (
        ("bland_altman_bias_mg_cm3", "-"),
        ("bland_altman_lower_mg_cm3", "--"),
        ("bland_altman_upper_mg_cm3", "--"),
    ):
        ax2.axhline(metrics[key], color="k", ls=style, lw=1)
    ax2.set_xlabel("mean of the two (mg/cm³)")
    ax2.set_ylabel("predicted − reference (mg/cm³)")
    ax2.set_title(
        f"bias {metrics['bland_altman_bias_mg_cm3']:+.1f}, limits "
        f"{metrics['bland_altman_lower_mg_cm3']:+.1f} to {metrics['bland_altman_upper_mg_cm3']:+.1f}"
    )
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
