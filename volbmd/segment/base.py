"""The Segmenter protocol: every backend turns a Volume into vertebra labels on the same grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from volbmd.volume import LabelMap, Volume

__all__ = ["Segmenter", "make_segmenter", "BACKENDS", "DEVICE_BACKENDS", "REGISTRY", "BackendInfo", "backends_help"]


@runtime_checkable
class Segmenter(Protocol):
    """``segment(volume)`` returns a LabelMap on the volume's own grid with VerSe ids and level names.

    A backend that reorients or resamples internally undoes it before returning. Flags about the
    labelling (partial field of view, transitional anatomy) go to ``LabelMap.metadata["flags"]``.
    """

    name: str

    def segment(self, volume: Volume) -> LabelMap: ...


@dataclass(frozen=True)
class BackendInfo:
    """One segmentation backend: what the config, the command line and napari know of it.

    ``build(masks=, label_scheme=, model=, classical=, **options)`` imports the backend's module
    (heavy libraries only then) and returns its Segmenter; ``needs`` names the input it cannot do
    without ("masks" or "model"), ``needs_hint`` how to give it; ``on_device``: it takes ``device``.
    """

    name: str
    build: Callable[..., Segmenter]
    needs: str | None = None
    needs_hint: str = ""
    on_device: bool = False


def _classical(*, classical=None, **options) -> Segmenter:
    from volbmd.segment.classical import ClassicalSegmenter

    return ClassicalSegmenter(classical, **options)


def _nnunet(*, model, **options) -> Segmenter:
    from volbmd.segment.nnunet import NnUNetSegmenter

    return NnUNetSegmenter(model, **options)


def _monai(*, model, **options) -> Segmenter:
    from volbmd.segment.monai import MonaiSegmenter

    return MonaiSegmenter(model, **options)


def _masks(*, masks, label_scheme: str = "verse", **_) -> Segmenter:
    from volbmd.segment.masks import MasksSegmenter

    return MasksSegmenter(masks, label_scheme=label_scheme)


#: Every backend, in the order the command line and napari list them. A new backend is one entry
#: here (and its module); the config's choices, the CLI help and the napari list follow.
REGISTRY: dict[str, BackendInfo] = {
    info.name: info
    for info in (
        BackendInfo("classical", _classical),
        BackendInfo("nnunet", _nnunet, needs="model", needs_hint="--model DIR (an nnU-Net v2 model folder)", on_device=True),
        BackendInfo(
            "monai", _monai, needs="model", needs_hint="--model CHECKPOINT (a volbmd AnatomyNet checkpoint)", on_device=True
        ),
        BackendInfo("masks", _masks, needs="masks", needs_hint="--masks LABELS"),
    )
}
BACKENDS: tuple[str, ...] = tuple(REGISTRY)
DEVICE_BACKENDS: tuple[str, ...] = tuple(name for name, info in REGISTRY.items() if info.on_device)


def backends_help(default: str) -> str:
    """'classical | nnunet | monai | masks (default: …)' for the command line's help."""
    return f"{' | '.join(BACKENDS)} (default: {default})"


def make_segmenter(
    backend: str, *, masks=None, label_scheme: str = "verse", model=None, classical=None, **options
) -> Segmenter:
    """Build a backend by name (heavy libraries are imported only by the backend that needs them).
    ``classical``: the classical backend's options (a ClassicalOptions or a nested dict)."""
    from volbmd.errors import ConfigError

    info = REGISTRY.get(backend)
    if info is None:
        raise ConfigError(f"unknown segmenter '{backend}'; choose one of {', '.join(BACKENDS)}")
    given = {"masks": masks, "model": model}
    if info.needs is not None and given[info.needs] is None:
        raise ConfigError(f"--segmenter {backend} needs {info.needs_hint}")
    if info.needs == "masks":
        return info.build(masks=masks, label_scheme=label_scheme)
    if info.needs == "model":
        return info.build(model=model, **options)
    return info.build(classical=classical, **options)
