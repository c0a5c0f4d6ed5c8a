"""The QA picture (qa.png) as a DICOM Secondary Capture in the source study (highdicom), so that it
shows in any PACS viewer beside the scan."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["build_dicom_sc"]


def build_dicom_sc(png: bytes, sources, *, version: str):
    """A Secondary Capture image (RGB) of ``png`` in the study of ``sources``."""
    import highdicom as hd
    from PIL import Image

    from volbmd.report.dicom_common import series_number

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=sources[0],
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=hd.UID(),
        series_number=series_number("sc"),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="volbmd",
        patient_orientation=("P", "F"),  # the sagittal view on its left: columns posterior, rows to the feet
        series_description="volbmd QA",
    )
    sc.SoftwareVersions = version
    sc.ImageType = ["DERIVED", "SECONDARY"]
    if "Laterality" not in sc:  # type 2C in General Series: present, empty (the spine is not a paired part)
        sc.Laterality = ""
    return sc
