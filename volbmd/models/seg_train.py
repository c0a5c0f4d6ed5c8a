"""Train an AnatomyNet vertebra segmenter and save a volbmd checkpoint the ``monai`` backend loads.

Checkpoint (torch.save dict): ``state_dict``, ``widths``, ``levels`` (class k = levels[k-1]),
``spacing_mm`` (z, y, x) the network works at, ``hu_window`` (clip and scale), ``roi_size``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from volbmd.labels import level_rank

__all__ = ["prepare_image", "train_anatomynet", "HU_WINDOW"]

HU_WINDOW = (-200.0, 1200.0)


def prepare_image(array: np.ndarray, hu_window=HU_WINDOW) -> np.ndarray:
    lo, hi = hu_window
    return ((np.clip(array.astype(np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def train_anatomynet(
    cases,
    out_path: str | os.PathLike,
    *,
    iterations: int = 60,
    roi_size=(32, 32, 32),
    widths=(16, 20, 24),
    lr: float = 3e-3,
    seed: int = 0,
) -> Path:
    """Train on (Volume, LabelMap) pairs already on a common spacing; write the checkpoint.

    Random crops of ``roi_size`` (padded when a case is smaller), Dice + focal loss, Adam.
    """
    import torch
    from monai.losses import DiceFocalLoss

    from volbmd.geometry import canonicalize
    from volbmd.models.anatomynet import AnatomyNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    levels = sorted({lvl for _, lab in cases for lvl in lab.labels}, key=level_rank)
    class_of = {lvl: i + 1 for i, lvl in enumerate(levels)}
    images, targets = [], []
    for vol, lab in cases:
        cv, _ = canonicalize(vol)
        cl, _ = canonicalize(lab)
        t = np.zeros(cl.shape, np.int64)
        for lvl, vid in cl.labels.items():
            t[cl.array == vid] = class_of[lvl]
        pad = [(0, max(0, r - s)) for r, s in zip(roi_size, cv.shape)]
        images.append(np.pad(prepare_image(cv.array), pad))
        targets.append(np.pad(t, pad))
    net = AnatomyNet(1, len(levels) + 1, widths=widths)
    loss_fn = DiceFocalLoss(to_onehot_y=True, softmax=True, gamma=2.0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(iterations):
        xb, yb = [], []
        for _ in range(2):
            i = int(rng.integers(len(images)))
            img, tgt = images[i], targets[i]
            start = [int(rng.integers(0, s - r + 1)) for s, r in zip(img.shape, roi_size)]
            sl = tuple(slice(a, a + r) for a, r in zip(start, roi_size))
            xb.append(img[sl][None])
            yb.append(tgt[sl][None])
        x = torch.from_numpy(np.stack(xb))
        y = torch.from_numpy(np.stack(yb))
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    spacing = tuple(float(s) for s in canonicalize(cases[0][0])[0].spacing_mm)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": net.state_dict(),
            "widths": list(widths),
            "levels": levels,
            "spacing_mm": spacing,
            "hu_window": list(HU_WINDOW),
            "roi_size": list(roi_size),
            "format": "volbmd-anatomynet-1",
        },
        out_path,
    )
    return out_path
