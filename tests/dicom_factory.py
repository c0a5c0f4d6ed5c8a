"""Writes small synthetic CT DICOM series with pydicom, for reader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_ct_series(
    folder: Path,
    hu_zyx: np.ndarray,
    *,
    spacing_mm=(2.0, 0.7, 0.6),
    origin=(-10.0, -20.0, 100.0),
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    series_uid: str | None = None,
    positions=None,
    names=None,
    kvp: float = 120.0,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-12345",
) -> list[Path]:
    """One file per slice; slice k lies at origin + k·spacing_z along the normal (or ``positions[k]``).

    Stored values are (HU − intercept)/slope as uint16, so the reader must apply the rescale.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    frame_uid = generate_uid()
    row = np.asarray(orientation[:3], float)
    col = np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    stored = np.round((hu_zyx.astype(np.float64) - intercept) / slope)
    assert stored.min() >= 0 and stored.max() < 65536
    stored = stored.astype(np.uint16)
    paths = []
    for k in range(hu_zyx.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = names[k] if names else f"slice{k:04d}.dcm"
        path = folder / name
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = study_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientSex = "F"
        ds.StudyDate = "20240101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = "ACC-1"
        ds.ReferringPhysicianName = ""
        ds.SeriesNumber = 1
        ds.Modality = "CT"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19500101"
        ds.KVP = kvp
        ds.Manufacturer = "TestVendor"
        ds.ConvolutionKernel = "B30f"
        ds.SliceThickness = spacing_mm[0]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        pos = positions[k] if positions is not None else np.asarray(origin) + k * spacing_mm[0] * normal
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.PixelSpacing = [float(spacing_mm[1]), float(spacing_mm[2])]
        ds.Rows, ds.Columns = hu_zyx.shape[1], hu_zyx.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.InstanceNumber = k + 1
        ds.PixelData = stored[k].tobytes()
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths
