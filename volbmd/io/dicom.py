"""DICOM series → Volume: series choice, slice order by position, geometry checks, HU.

Headers are read with pydicom (fast, no pixels); pixels with SimpleITK/GDCM, which decodes the
compressed transfer syntaxes and applies RescaleSlope/RescaleIntercept, so CT arrives in HU.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volbmd.errors import InputError
from volbmd.volume import Volume

__all__ = ["read_dicom_series", "list_series", "DicomSeries"]

_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_ORIENTATION_ATOL = 1e-3
_TILT_LIMIT_DEG = 0.5
_UNEVEN_TOLERANCE = 0.05  # relative step variation accepted as even spacing


@dataclass(frozen=True)
class _SliceHeader:
    path: Path
    series_uid: str
    orientation: tuple[float, ...]
    position: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    slope: float
    intercept: float
    dataset: object  # pydicom Dataset without pixel data


@dataclass(frozen=True)
class DicomSeries:
    uid: str
    slices: tuple[_SliceHeader, ...]

    @property
    def label(self) -> str:
        return self.uid or "(no SeriesInstanceUID)"

    @property
    def orientation_code(self) -> str:
        from volbmd.geometry import orientation_code

        row, col = np.asarray(self.slices[0].orientation[:3]), np.asarray(self.slices[0].orientation[3:])
        return orientation_code(np.column_stack([row, col, np.cross(row, col)]))


def _floats(value, n: int, what: str, path: Path) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"invalid {what} {value!r}", path) from None
    if len(out) != n or not all(np.isfinite(out)):
        raise InputError(f"invalid {what} {value!r}", path)
    return out


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return None  # not a DICOM file: other files may share the folder
    except PermissionError:
        raise InputError("cannot read file (permission denied)", path) from None
    except Exception as exc:  # pydicom raises many types for broken files
        raise InputError(f"corrupt DICOM file ({type(exc).__name__}: {exc})", path) from None
    if "Rows" not in ds or "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        return None  # DICOMDIR, structured reports, presentation states: not image slices
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise InputError("multi-frame (enhanced) DICOM is not supported; export as single-frame slices", path)
    transfer = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if transfer in _NATIVE_SYNTAXES:
        expected = int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        if os.path.getsize(path) < expected:
            raise InputError(
                f"truncated DICOM file: {os.path.getsize(path)} bytes cannot hold {expected} bytes of pixels", path
            )
    return _SliceHeader(
        path=path,
        series_uid=str(getattr(ds, "SeriesInstanceUID", "") or ""),
        orientation=_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", path),
        position=_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", path),  # type: ignore[arg-type]
        pixel_spacing=_floats(getattr(ds, "PixelSpacing", None) or (1.0, 1.0), 2, "PixelSpacing", path),  # type: ignore[arg-type]
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slope=float(getattr(ds, "RescaleSlope", 1) or 1),
        intercept=float(getattr(ds, "RescaleIntercept", 0) or 0),
        dataset=ds,
    )


def list_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """All image series under ``folder`` (searched recursively), largest first."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError("not a folder", root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    groups: dict[str, list[_SliceHeader]] = {}
    for path in files:
        header = _read_header(path)
        if header is not None:
            groups.setdefault(header.series_uid, []).append(header)
    if not groups:
        raise InputError(f"no DICOM image files found ({len(files)} files looked at)", root)
    series = [DicomSeries(uid, tuple(slices)) for uid, slices in groups.items()]
    return sorted(series, key=lambda s: -len(s.slices))


def _choose_series(series: list[DicomSeries], series_uid: str | None, folder: Path) -> tuple[DicomSeries, list[str]]:
    notes: list[str] = []
    if series_uid is not None:
        for s in series:
            if s.uid == series_uid:
                return s, notes
        listed = ", ".join(f"{s.label} ({len(s.slices)} slices)" for s in series)
        raise InputError(f"series {series_uid} not found; the folder holds: {listed}", folder)
    volumes = [s for s in series if len(s.slices) >= 2]
    if not volumes:
        raise InputError("no series with more than one slice: a 3D volume is needed", folder)
    if len({s.orientation_code for s in volumes}) > 1:
        listed = "; ".join(f"{s.label}: {len(s.slices)} slices, {s.orientation_code}" for s in volumes)
        raise InputError(f"series of different orientations in one folder ({listed}); choose one with --series UID", folder)
    if len(series) > 1:
        notes.append(
            f"folder holds {len(series)} series; read {series[0].label} with the most slices ({len(series[0].slices)})"
        )
    return volumes[0], notes


def _geometry(series: DicomSeries, folder: Path):
    """Order slices by position along the normal and check the grid. Returns ordered headers and geometry."""
    first = series.slices[0]
    for s in series.slices[1:]:
        if not np.allclose(s.orientation, first.orientation, atol=_ORIENTATION_ATOL):
            raise InputError(f"slices of mixed orientation in series {series.label}", s.path)
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise InputError(
                f"slice size {s.rows}x{s.columns} differs from {first.rows}x{first.columns} in the series", s.path
            )
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise InputError(f"pixel spacing {s.pixel_spacing} differs from {first.pixel_spacing} in the series", s.path)
    row = np.asarray(first.orientation[:3])
    col = np.asarray(first.orientation[3:])
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise InputError(f"invalid ImageOrientationPatient {first.orientation}", first.path)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    depth = np.array([np.dot(s.position, normal) for s in series.slices])
    order = np.argsort(depth, kind="stable")
    ordered = [series.slices[i] for i in order]
    depth = depth[order]
    steps = np.diff(depth)
    if np.any(steps < 1e-3):
        i = int(np.argmax(steps < 1e-3))
        raise InputError(
            f"two slices at the same position ({depth[i]:.2f} mm): {ordered[i].path.name} and {ordered[i + 1].path.name}"
            " (several acquisitions in one series?)",
            folder,
        )
    step = float(np.median(steps))
    if np.any(steps > 1.5 * step):
        i = int(np.argmax(steps > 1.5 * step))
        n_missing = int(round(steps[i] / step)) - 1
        raise InputError(
            f"missing slice(s): gap of {steps[i]:.2f} mm after {ordered[i].path.name} where the series steps"
            f" {step:.2f} mm (about {n_missing} slice(s) missing)",
            folder,
        )
    if np.max(np.abs(steps - step)) > _UNEVEN_TOLERANCE * step:
        raise InputError(f"uneven slice spacing ({steps.min():.3f}–{steps.max():.3f} mm)", folder)
    offset = np.asarray(ordered[-1].position) - np.asarray(ordered[0].position)
    cos_tilt = abs(offset @ normal) / max(np.linalg.norm(offset), 1e-9)
    tilt_deg = float(np.degrees(np.arccos(np.clip(cos_tilt, -1, 1))))
    if tilt_deg > _TILT_LIMIT_DEG:
        raise InputError(
            f"gantry tilt of {tilt_deg:.1f}° (slices are sheared); resample to an orthogonal grid first", folder
        )
    spacing_zyx = (step, first.pixel_spacing[0], first.pixel_spacing[1])
    direction = np.column_stack([row, col, normal])
    return ordered, spacing_zyx, tuple(ordered[0].position), direction


def _text(ds, keyword: str):
    value = getattr(ds, keyword, None)
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _number(ds, keyword: str):
    value = getattr(ds, keyword, None)
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _metadata(ds, series: DicomSeries, notes: list[str]) -> dict:
    meta = {
        "format": "dicom",
        "modality": _text(ds, "Modality"),
        "kvp": _number(ds, "KVP"),
        "manufacturer": _text(ds, "Manufacturer"),
        "manufacturer_model": _text(ds, "ManufacturerModelName"),
        "convolution_kernel": _text(ds, "ConvolutionKernel"),
        "slice_thickness_mm": _number(ds, "SliceThickness"),
        "contrast_agent": _text(ds, "ContrastBolusAgent"),
        "series_uid": series.uid or None,
        "series_description": _text(ds, "SeriesDescription"),
        "body_part": _text(ds, "BodyPartExamined"),
        "n_slices": len(series.slices),
        "warnings": list(notes),
    }
    phi = {
        "patient_name": _text(ds, "PatientName"),
        "patient_id": _text(ds, "PatientID"),
        "birth_date": _text(ds, "PatientBirthDate"),
        "study_date": _text(ds, "StudyDate"),
        "accession_number": _text(ds, "AccessionNumber"),
        "institution": _text(ds, "InstitutionName"),
    }
    meta["phi"] = {k: v for k, v in phi.items() if v}
    return meta


def _read_pixels(paths: list[Path], as_float: bool, folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in paths])
    if as_float:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError:
        # GDCM does not say which file failed: find it.
        for p in paths:
            try:
                sitk.ReadImage(str(p))
            except RuntimeError:
                raise InputError("corrupt or truncated DICOM file (pixel data cannot be decoded)", p) from None
        raise InputError("pixel data of the series cannot be read", folder) from None
    return sitk.GetArrayFromImage(image)


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read one DICOM series as a Volume in the scanner's LPS patient frame.

    Args:
        folder: a folder holding the series' files (other files and series may be present).
        series_uid: SeriesInstanceUID to read; default the series with the most slices (refused when
            series of different orientations share the folder).
    Raises:
        InputError: no DICOM, corrupt files, mixed orientation, missing slices, uneven spacing or tilt.
    """
    folder = Path(folder)
    series, notes = _choose_series(list_series(folder), series_uid, folder)
    ordered, spacing_zyx, origin, direction = _geometry(series, folder)
    slopes = {s.slope for s in ordered}
    intercepts = {s.intercept for s in ordered}
    as_float = len(slopes) > 1 or len(intercepts) > 1 or any(not float(v).is_integer() for v in slopes | intercepts)
    array = _read_pixels([s.path for s in ordered], as_float, folder)
    if array.shape != (len(ordered), ordered[0].rows, ordered[0].columns):
        raise InputError(
            f"decoded pixels have shape {array.shape}, headers say {len(ordered)}x{ordered[0].rows}x{ordered[0].columns}",
            folder,
        )
    meta = _metadata(ordered[0].dataset, series, notes)
    return Volume(
        array=array,
        spacing_mm=spacing_zyx,
        origin_lps_mm=origin,
        direction_lps=direction,
        metadata=meta,
        source=str(folder),
        source_files=tuple(str(s.path) for s in ordered),
    )
