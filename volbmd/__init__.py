"""volbmd: vertebral bone mineral density from routine CT and MRI.

Public API (importing volbmd loads no torch, napari or Qt)::

    from volbmd import load_volume, canonicalize, Volume, LabelMap
"""

from volbmd.errors import ConfigError, GeometryError, InputError, VolbmdError
from volbmd.geometry import canonicalize, uncanonicalize
from volbmd.io import load_volume, write_labels, write_volume
from volbmd.volume import LabelMap, Volume

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load_volume",
    "write_volume",
    "write_labels",
    "canonicalize",
    "uncanonicalize",
    "Volume",
    "LabelMap",
    "VolbmdError",
    "InputError",
    "ConfigError",
    "GeometryError",
]
