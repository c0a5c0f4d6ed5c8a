"""npe2 sample data: the demo phantom (ESP-like spine with a rod phantom) and its vertebra labels."""

from __future__ import annotations

__all__ = ["demo_phantom"]


def demo_phantom() -> list[tuple]:
    from volbmd.napari._layers import image_layer, labels_layer
    from volbmd.phantoms import make_esp_phantom

    phantom = make_esp_phantom()
    return [image_layer(phantom.volume, name="demo phantom"), labels_layer(phantom.labels, name="demo labels")]
