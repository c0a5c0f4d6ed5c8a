"""The ``monai`` backend: sliding-window inference of a volbmd AnatomyNet checkpoint.

The scan is canonicalised, resampled (linear) to the checkpoint's spacing, windowed, predicted with
MONAI's sliding_window_inference, and the labels are resampled (nearest) back to the scan's grid.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage as ndi

from volbmd.errors import InputError
from volbmd.geometry import canonicalize, uncanonicalize
from volbmd.labels import load_label_scheme
from volbmd.volume import LabelMap, Volume

__all__ = ["MonaiSegmenter"]


class MonaiSegmenter:
    name = "monai"

    def __init__(self, checkpoint: str | os.PathLike, *, device: str = "cpu", overlap: float = 0.25):
        import torch

        from volbmd.models.anatomynet import AnatomyNet
        from volbmd.models.checkpoints import read_checkpoint

        ckpt, path = read_checkpoint(checkpoint, missing="checkpoint not found", what="a volbmd AnatomyNet checkpoint")
        if ckpt.get("format") != "volbmd-anatomynet-1":
            raise InputError("not a volbmd AnatomyNet checkpoint (format volbmd-anatomynet-1)", path)
        self.levels = list(ckpt["levels"])
        self.spacing_mm = tuple(ckpt["spacing_mm"])
        self.hu_window = tuple(ckpt["hu_window"])
        self.roi_size = tuple(ckpt["roi_size"])
        self.device = torch.device(device)
        self.overlap = overlap
        self.net = AnatomyNet(1, len(self.levels) + 1, widths=ckpt["widths"])
        self.net.load_state_dict(ckpt["state_dict"])
        self.net.eval().to(self.device)

    def segment(self, volume: Volume) -> LabelMap:
        import torch
        from monai.inferers import sliding_window_inference

        from volbmd.models.seg_train import prepare_image

        canon, reo = canonicalize(volume)
        zoom = [s / t for s, t in zip(canon.spacing_mm, self.spacing_mm)]
        image = prepare_image(canon.array, self.hu_window)
        if not np.allclose(zoom, 1.0, atol=1e-3):
            image = ndi.zoom(image, zoom, order=1)
        x = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(self.device)
        with torch.no_grad():
            logits = sliding_window_inference(x, self.roi_size, 1, self.net, overlap=self.overlap, mode="gaussian")
        assert isinstance(logits, torch.Tensor)  # one network output, not a tuple or dict
        classes = logits.argmax(dim=1)[0].cpu().numpy().astype(np.int16)
        if classes.shape != canon.shape:
            factors = [a / b for a, b in zip(canon.shape, classes.shape)]
            classes = ndi.zoom(classes, factors, order=0)
            classes = classes[: canon.shape[0], : canon.shape[1], : canon.shape[2]]
            classes = np.pad(classes, [(0, max(0, a - b)) for a, b in zip(canon.shape, classes.shape)])
        verse = load_label_scheme("verse")
        out = np.zeros(canon.shape, np.int16)
        present = {}
        for k, lvl in enumerate(self.levels, start=1):
            sel = classes == k
            if sel.any():
                out[sel] = verse[lvl]
                present[lvl] = verse[lvl]
        return uncanonicalize(LabelMap.on_grid_of(canon, out, present, source="AnatomyNet"), reo)
