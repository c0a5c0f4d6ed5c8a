"""DICOM Structured Report (TID 1500 Measurement Report, Comprehensive 3D SR) of a run, built with
highdicom: per vertebra level a volumetric ROI measurement group (TID 1411) that references the
level's segment in volbmd's SEG, with the trabecular attenuation (mean, median, SD in HU), the BMD
in mg/cm³, and as qualitative evaluations the calibration method, the material, the Genant grade
and the flags; then a summary group with the mean BMD of the levels used, the ACR category and the
threshold set. Codes are DCM, SCT and UCUM where those have the concept, else volbmd's local scheme
99VOLBMD (configs/dicom/codes.yaml), declared in the SR."""

from __future__ import annotations

__all__ = ["build_dicom_sr"]


def _text_code(name: str, text: str):
    from volbmd.report.dicom_common import local_code

    return local_code(name, value=text.split(":")[0].upper(), meaning=text)


def _level_group(v, report, seg, segment_number: int, sources, algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from volbmd.report.dicom_common import local_code, vertebra_code

    measurements = []
    for derivation, value in (
        (codes.SCT.Mean, v.trabecular_hu_mean),
        (codes.SCT.Median, v.trabecular_hu_median),
        (codes.SCT.StandardDeviation, v.trabecular_hu_sd),
    ):
        if value is not None:
            measurements.append(
                hd.sr.Measurement(
                    name=codes.DCM.AttenuationCoefficient,
                    value=float(value),
                    unit=codes.UCUM.HounsfieldUnit,
                    derivation=derivation,
                    algorithm_id=algorithm,
                )
            )
    if v.bmd_mg_cm3 is not None:
        measurements.append(
            hd.sr.Measurement(
                name=local_code("bmd"),
                value=float(v.bmd_mg_cm3),
                unit=codes.UCUM.MilligramsPerCubicCentimeter,
                derivation=codes.SCT.Mean,
                algorithm_id=algorithm,
            )
        )
    evaluations = []
    calibration = report.calibration
    if v.bmd_mg_cm3 is not None and calibration.method:
        material = calibration.material or ""
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                local_code("calibration_method"),
                local_code("", value=calibration.method, meaning=f"{calibration.method} calibration {material}".strip()),
            )
        )
    if v.genant_grade is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                local_code("genant_grade"),
                local_code("", value=f"GRADE{v.genant_grade}", meaning=f"Genant grade {v.genant_grade}"),
            )
        )
    for flag in v.flags:
        evaluations.append(hd.sr.QualitativeEvaluation(local_code("qa_flag"), _text_code("qa_flag", flag)))
    referenced = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=segment_number,
        source_series=hd.sr.SourceSeriesForSegmentation(sources[0].SeriesInstanceUID),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"vertebra {v.level}"),
        referenced_segment=referenced,
        finding_type=codes.SCT.AnatomicalStructure,
        finding_sites=[hd.sr.FindingSite(vertebra_code(v.level))],
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )


def _summary_group(report, algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from volbmd.report.dicom_common import local_code

    s = report.summary
    measurements, evaluations = [], []
    if s.bmd_mg_cm3_mean is not None:
        measurements.append(
            hd.sr.Measurement(
                name=local_code("bmd_mean"),
                value=float(s.bmd_mg_cm3_mean),
                unit=codes.UCUM.MilligramsPerCubicCentimeter,
                derivation=codes.SCT.Mean,
                algorithm_id=algorithm,
            )
        )
    if s.acr_category:
        levels = "+".join(s.levels_used)
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                local_code("acr_category"), local_code("", value=s.acr_category, meaning=f"{s.acr_category} ({levels})")
            )
        )
    threshold_set = s.threshold_set
    if threshold_set:
        evaluations.append(
            hd.sr.QualitativeEvaluation(local_code("threshold_set"), local_code("", value=str(threshold_set)))
        )
    if not measurements and not evaluations:
        return None
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="spine summary"),
        finding_type=local_code("summary"),
        finding_sites=[hd.sr.FindingSite(codes.SCT.Spine)],
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )


def build_dicom_sr(report, sources, seg, segment_numbers: dict[str, int], *, version: str):
    """The Comprehensive 3D SR of ``report``; ``seg`` and ``segment_numbers`` from
    :func:`volbmd.report.dicom_seg.build_dicom_seg`, ``sources`` the source series."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.sr.codedict import codes

    from volbmd.report.dicom_common import local_scheme, series_number

    algorithm = hd.sr.AlgorithmIdentification(name="volbmd", version=version)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="volbmd", manufacturer_name="volbmd", model_name="volbmd"
        ),
    )
    groups = [
        _level_group(v, report, seg, segment_numbers[v.level], sources, algorithm)
        for v in report.vertebrae
        if v.level in segment_numbers and v.trabecular_n_voxels
    ]
    summary = _summary_group(report, algorithm)
    if summary is not None:
        groups.append(summary)
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(sources) + [seg],
        content=content[0],
        series_instance_uid=hd.UID(),
        series_number=series_number("sr"),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="volbmd",
        is_complete=True,
        series_description="volbmd BMD report",
    )
    scheme = local_scheme()
    item = Dataset()
    item.CodingSchemeDesignator = scheme["designator"]
    item.CodingSchemeName = scheme["name"]
    item.CodingSchemeResponsibleOrganization = scheme["responsible_organization"]
    sr.CodingSchemeIdentificationSequence = Sequence([item])  # type: ignore[assignment]  # pydicom types it as list
    return sr
