"""Reading and writing scans and label maps, by format, behind one entry point.

Supported inputs: DICOM series folders, NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage
(.mha, .mhd) and zarr / OME-Zarr folders. Outputs: NIfTI, NRRD, MetaImage and OME-Zarr, always
written to a temporary name and renamed, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from volbmd.errors import InputError
from volbmd.io._atomic import atomic_output, full_suffix
from volbmd.volume import LabelMap, Volume

__all__ = ["load_volume", "load_label_map", "write_volume", "write_labels", "READ_FORMATS", "WRITE_FORMATS", "atomic_output"]

READ_FORMATS = ("DICOM folder", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".zarr", ".ome.zarr")
WRITE_FORMATS = (".nii", ".nii.gz", ".nrrd", ".mha", ".zarr", ".ome.zarr")


def load_volume(path: str | os.PathLike, *, series_uid: str | None = None) -> Volume:
    """Read a scan from any supported format into a :class:`~volbmd.volume.Volume` (source grid).

    CT voxels are Hounsfield units (DICOM rescale applied), in the file's own dtype.

    Raises:
        InputError: with the file and the problem, for anything that cannot be used.
    """
    from volbmd.io.itk_files import ITK_SUFFIXES, read_itk_file
    from volbmd.io.zarr_store import is_zarr_path, read_zarr

    path = Path(path)
    if not path.exists():
        raise InputError("not found", path)
    if is_zarr_path(path):
        return read_zarr(path)
    if path.is_dir():
        from volbmd.io.dicom import read_dicom_series

        return read_dicom_series(path, series_uid=series_uid)
    suffix = full_suffix(path).lower()
    if suffix in ITK_SUFFIXES:
        return read_itk_file(path)
    if suffix in (".dcm", ".ima") or path.suffix == "" or _is_dicom_file(path):
        raise InputError("a single DICOM file was given; pass the folder that holds the series", path)
    raise InputError(f"unknown format '{suffix}'; volbmd reads {', '.join(READ_FORMATS)}", path)


def is_dicom_series_path(path: str | os.PathLike) -> bool:
    """Whether :func:`load_volume` reads ``path`` as a DICOM series (a folder that is not Zarr)."""
    from volbmd.io.zarr_store import is_zarr_path

    path = Path(path)
    return path.is_dir() and not is_zarr_path(path)


def _is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file (the "DICM" mark after the 128-byte preamble), whatever its name: files
    are often named by their UID (``1.2.840....123``), whose last part looks like a suffix."""
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def load_label_map(path: str | os.PathLike, labels: dict[str, int]) -> LabelMap:
    """Read a label image and name its ids (``labels``: level → id)."""
    volume = load_volume(path)
    if volume.array.dtype.kind == "f" and not (volume.array == volume.array.round()).all():
        raise InputError("label map holds non-integer values", path)
    return LabelMap(
        array=volume.array.astype("int32", copy=False) if volume.array.dtype.kind == "f" else volume.array,
        spacing_mm=volume.spacing_mm,
        origin_lps_mm=volume.origin_lps_mm,
        direction_lps=volume.direction_lps,
        metadata=volume.metadata,
        source=volume.source,
        labels=labels,
    )


def write_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write a volume or label map; the suffix chooses the format. Atomic. Label maps use fast
    compression."""
    from volbmd.io.itk_files import write_itk_file
    from volbmd.io.zarr_store import write_ome_zarr

    path = Path(path)
    suffix = full_suffix(path).lower()
    if suffix in (".zarr", ".ome.zarr"):
        return write_ome_zarr(volume, path)
    if suffix in (".nii", ".nii.gz", ".nrrd", ".mha"):
        return write_itk_file(volume, path, compression_level=1 if isinstance(volume, LabelMap) else -1)
    raise InputError(f"cannot write format '{suffix}'; volbmd writes {', '.join(WRITE_FORMATS)}", path)


def write_labels(labels: LabelMap, path: str | os.PathLike, source: Volume, reorientation=None) -> Path:
    """Write a label map on the grid of the ``source`` scan as it was read.

    ``labels`` may lie on the source grid, or on the canonical grid when ``reorientation`` (from
    :func:`volbmd.geometry.canonicalize` of ``source``) is given; it is then moved back exactly.
    """
    from volbmd.geometry import uncanonicalize

    if reorientation is not None and not labels.geometry.matches(source.geometry):
        labels = uncanonicalize(labels, reorientation)
    labels.geometry.require_match(source.geometry, "label map", path)
    labels = dataclasses.replace(
        labels, origin_lps_mm=source.origin_lps_mm, direction_lps=source.direction_lps, spacing_mm=source.spacing_mm
    )
    return write_volume(labels, path)
