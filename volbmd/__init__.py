"""volbmd: vertebral bone mineral density from routine CT and MRI.

Public API (importing volbmd loads no torch, napari or Qt)::

    import volbmd
    report = volbmd.analyze("ct.nii.gz")              # a Report (report.summary.acr_category, …)
    volbmd.write_outputs(report, "out/")              # report.json, qa.png, report.html, masks, …

The names below are imported on first use, so that ``import volbmd.cli`` (or any submodule) does
not load scipy and numba before the command needs them: the pipeline imports them while the scan
is read.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version
from typing import TYPE_CHECKING

from volbmd.errors import ConfigError, GeometryError, InputError, VolbmdError

if TYPE_CHECKING:
    from volbmd.geometry import canonicalize, uncanonicalize
    from volbmd.io import load_volume, write_labels, write_volume
    from volbmd.pipeline import analyze, write_outputs
    from volbmd.report import Report
    from volbmd.volume import LabelMap, Volume

try:  # the version is written once, in pyproject.toml
    __version__ = _package_version("volbmd")
except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
    __version__ = "0+unknown"

_PUBLIC_FROM = {
    "load_volume": "volbmd.io",
    "write_volume": "volbmd.io",
    "write_labels": "volbmd.io",
    "analyze": "volbmd.pipeline",
    "write_outputs": "volbmd.pipeline",
    "Report": "volbmd.report",
    "canonicalize": "volbmd.geometry",
    "uncanonicalize": "volbmd.geometry",
    "Volume": "volbmd.volume",
    "LabelMap": "volbmd.volume",
}

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


def __getattr__(name: str):
    if name in _PUBLIC_FROM:
        return getattr(importlib.import_module(_PUBLIC_FROM[name]), name)
    raise AttributeError(f"module 'volbmd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
