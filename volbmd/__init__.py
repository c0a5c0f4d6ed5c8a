"""volbmd: vertebral bone mineral density from routine CT and MRI.

Public API (importing volbmd loads no torch, napari or Qt)::

    import volbmd
    report = volbmd.analyze("ct.nii.gz")              # a Report (report.summary.acr_category, …)
    volbmd.write_outputs(report, "out/")              # report.json, qa.png, report.html, masks, …
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version

from volbmd.errors import ConfigError, GeometryError, InputError, VolbmdError
from volbmd.geometry import canonicalize, uncanonicalize
from volbmd.io import load_volume, write_labels, write_volume
from volbmd.pipeline import analyze, write_outputs
from volbmd.report import Report
from volbmd.volume import LabelMap, Volume

try:  # the version is written once, in pyproject.toml
    __version__ = _package_version("volbmd")
except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "load_volume",
    "analyze",
    "write_outputs",
    "Report",
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
