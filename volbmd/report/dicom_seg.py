"""DICOM SEG of the vertebra labels for DICOM inputs (highdicom), one segment per level."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from volbmd.io import atomic_output

__all__ = ["write_dicom_seg"]

_TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                   "ReferringPhysicianName", "StudyID", "AccessionNumber")


def write_dicom_seg(labels, dicom_files: list[str], out_path: str | os.PathLike, *, version: str) -> Path | None:
    """Write labels (on the DICOM series' own grid, slices in ``dicom_files`` order) as DICOM SEG.

    Returns None when no level is labelled.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    present = [(lvl, vid) for lvl, vid in labels.labels.items() if (labels.array == vid).any()]
    if not present:
        return None
    sources = [pydicom.dcmread(f) for f in dicom_files]
    for ds in sources:  # anonymised series often drop type-2 attributes that SEG must carry (empty is valid)
        for keyword in _TYPE2_KEYWORDS:
            if keyword not in ds:
                setattr(ds, keyword, "")
        meta = getattr(ds, "file_meta", None)
        if not getattr(ds, "SOPClassUID", "") and meta is not None:
            ds.SOPClassUID = meta.get("MediaStorageSOPClassUID", "")
        if not getattr(ds, "SOPInstanceUID", "") and meta is not None:
            ds.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID", "")
        missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
                   if not str(getattr(ds, k, "") or "")]
        if missing:
            raise ValueError(f"the source series has no {', '.join(missing)} (anonymised?), which a SEG must reference")
    pixel = np.zeros(labels.shape, np.uint8)
    descriptions = []
    for number, (lvl, vid) in enumerate(present, start=1):
        pixel[labels.array == vid] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"vertebra {lvl}",
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Bone,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="volbmd", version=version, family=codes.cid7162.ArtificialIntelligence),
        ))
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=9901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="volbmd",
        manufacturer_model_name="volbmd",
        software_versions=version,
        device_serial_number="0",
        series_description="volbmd vertebrae",
    )
    out_path = Path(out_path)
    with atomic_output(out_path) as tmp:
        seg.save_as(tmp)
    return out_path
