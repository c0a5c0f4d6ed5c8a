"""DICOM SEG of the vertebra labels for DICOM inputs (highdicom), one segment per level, each
described by its SNOMED CT code."""

from __future__ import annotations

import numpy as np

__all__ = ["build_dicom_seg"]


def build_dicom_seg(labels, sources, *, version: str):
    """The SEG of ``labels`` (on the DICOM series' own grid, slices in ``sources`` order) and the
    segment number of each level; None when no level is labelled. ``sources``: from
    :func:`volbmd.report.dicom_common.load_sources`."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from volbmd.report.dicom_common import series_number, vertebra_code

    present = [(lvl, vid) for lvl, vid in labels.labels.items() if (labels.array == vid).any()]
    if not present:
        return None
    pixel = np.zeros(labels.shape, np.uint8)
    descriptions, numbers = [], {}
    for number, (lvl, vid) in enumerate(present, start=1):
        pixel[labels.array == vid] = number
        numbers[lvl] = number
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=f"vertebra {lvl}",
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=vertebra_code(lvl),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name="volbmd", version=version, family=codes.cid7162.ArtificialIntelligence
                ),
            )
        )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number("seg"),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="volbmd",
        manufacturer_model_name="volbmd",
        software_versions=version,
        device_serial_number="0",
        series_description="volbmd vertebrae",
    )
    return seg, numbers
