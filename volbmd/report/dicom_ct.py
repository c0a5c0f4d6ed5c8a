"""A derived CT image series of a non-DICOM scan (NIfTI, NRRD, MHA, Zarr) in a study the user names
(:class:`~volbmd.report.dicom_study.DicomStudy`): the images volbmd's SEG, SR and secondary capture
reference when the scan came without DICOM files, so that a PACS shows the vertebra masks over them.

One CT Image Storage file per slice of array axis 0, in array order, on the scan's own grid (the SEG's
frames then match the labels' slices one to one). Voxels are stored as signed 16-bit Hounsfield units
(rounded; rescale slope 1, intercept 0), which is how CT scanners store them too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_derived_ct_series", "DERIVED_CT_FOLDER"]

#: Folder of the derived series inside a result folder.
DERIVED_CT_FOLDER = "dicom_ct"


def _derived_slices(volume, study, *, version: str, kvp: float | None):
    import highdicom as hd
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pydicom.valuerep import DSfloat

    from volbmd.report.dicom_common import series_number

    def decimal(values):  # decimal strings that fit DICOM's 16 characters
        return [DSfloat(float(v), auto_format=True) for v in values]

    geometry = volume.geometry
    direction = geometry.direction_matrix
    orientation = decimal(np.concatenate([direction[:, 0], direction[:, 1]]))
    hu = np.clip(np.rint(volume.array), -32768, 32767).astype(np.int16)
    series_uid, frame_uid = str(hd.UID()), str(hd.UID())
    spacing_z, spacing_y, spacing_x = volume.spacing_mm
    for k in range(volume.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = hd.UID()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        image = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
        image.SOPClassUID = CTImageStorage
        image.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        study.apply_to(image)
        image.Modality = "CT"
        image.SeriesInstanceUID = series_uid
        image.SeriesNumber = series_number("ct")
        image.SeriesDescription = "volbmd: the analysed scan"
        image.FrameOfReferenceUID = frame_uid
        image.PositionReferenceIndicator = ""
        image.Manufacturer = "volbmd"
        image.ManufacturerModelName = "volbmd"
        image.SoftwareVersions = version
        image.InstanceNumber = k + 1
        image.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        image.DerivationDescription = "converted from a non-DICOM file by volbmd (HU rounded to integers)"
        image.AcquisitionNumber = ""
        image.KVP = "" if kvp is None else float(kvp)
        image.PatientPosition = ""
        image.Laterality = ""  # type 2C in General Series: present, empty (the spine is not a paired part)
        image.ImageOrientationPatient = orientation
        image.ImagePositionPatient = decimal(geometry.index_to_world((k, 0, 0)))
        image.PixelSpacing = decimal((spacing_y, spacing_x))
        image.SliceThickness = decimal((spacing_z,))[0]
        image.SpacingBetweenSlices = decimal((spacing_z,))[0]
        image.Rows, image.Columns = volume.shape[1], volume.shape[2]
        image.SamplesPerPixel = 1
        image.PhotometricInterpretation = "MONOCHROME2"
        image.BitsAllocated = 16
        image.BitsStored = 16
        image.HighBit = 15
        image.PixelRepresentation = 1
        image.RescaleIntercept = 0
        image.RescaleSlope = 1
        image.RescaleType = "HU"
        image.WindowCenter = 400
        image.WindowWidth = 1800
        image.PixelData = hu[k].tobytes()
        yield image


def write_derived_ct_series(volume, study, folder: Path, *, version: str, kvp: float | None = None) -> list[Path]:
    """Write the derived CT series of ``volume`` in ``study`` into ``folder`` (made; each file
    atomically); returns the files in slice order."""
    from volbmd.io import atomic_output

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, image in enumerate(_derived_slices(volume, study, version=version, kvp=kvp)):
        path = folder / f"IM{k + 1:05d}.dcm"
        with atomic_output(path) as tmp:
            image.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths
