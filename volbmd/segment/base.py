"""The Segmenter protocol: every backend turns a Volume into vertebra labels on the same grid."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from volbmd.volume import LabelMap, Volume

__all__ = ["Segmenter", "make_segmenter", "BACKENDS"]

BACKENDS = ("classical", "nnunet", "monai", "masks")


@runtime_checkable
class Segmenter(Protocol):
    """``segment(volume)`` returns a LabelMap on the volume's own grid with VerSe ids and level names.

    A backend that reorients or resamples internally undoes it before returning. Flags about the
    labelling (partial field of view, transitional anatomy) go to ``LabelMap.metadata["flags"]``.
    """

    name: str

    def segment(self, volume: Volume) -> LabelMap: ...


def make_segmenter(backend: str, *, masks=None, label_scheme: str = "verse", model=None, classical=None,
                   **options) -> Segmenter:
    """Build a backend by name (heavy libraries are imported only by the backend that needs them).
    ``classical``: the classical backend's options (a ClassicalOptions or a nested dict)."""
    from volbmd.errors import ConfigError

    if backend == "masks":
        if masks is None:
            raise ConfigError("--segmenter masks needs --masks LABELS")
        from volbmd.segment.masks import MasksSegmenter

        return MasksSegmenter(masks, label_scheme=label_scheme)
    if backend == "classical":
        from volbmd.segment.classical import ClassicalSegmenter

        return ClassicalSegmenter(classical, **options)
    if backend == "nnunet":
        if model is None:
            raise ConfigError("--segmenter nnunet needs --model DIR (an nnU-Net v2 model folder)")
        from volbmd.segment.nnunet import NnUNetSegmenter

        return NnUNetSegmenter(model, **options)
    if backend == "monai":
        if model is None:
            raise ConfigError("--segmenter monai needs --model CHECKPOINT (a volbmd AnatomyNet checkpoint)")
        from volbmd.segment.monai import MonaiSegmenter

        return MonaiSegmenter(model, **options)
    raise ConfigError(f"unknown segmenter '{backend}'; choose one of {', '.join(BACKENDS)}")
