"""The study a NIfTI (or NRRD, MHA, Zarr) scan belongs to, as the user gives it: with it, a run on a
non-DICOM file writes its DICOM results (a derived CT series, SEG, SR, secondary capture) into that
study, so that a PACS files them beside the original images.

Only what the user gives goes into the DICOM objects; nothing of it goes into report.json, the CSV,
the HTML or config.yaml."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from volbmd.errors import InputError

__all__ = ["DicomStudy"]

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def _check_uid(value: str, option: str) -> str:
    if len(value) > 64 or not _UID.match(value):
        raise InputError(f"not a DICOM UID (digits and dots, at most 64 characters, no leading zeros): {value!r}", option)
    return value


def _check_date(value: str, option: str) -> str:
    try:
        _dt.datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise InputError(f"not a date in the DICOM form YYYYMMDD: {value!r}", option) from None
    return value


def _check_time(value: str, option: str) -> str:
    if not re.fullmatch(r"([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9](\.[0-9]{1,6})?)?)?", value):
        raise InputError(f"not a time in the DICOM form HHMMSS: {value!r}", option)
    return value


def _check_text(value: str, option: str, max_len: int) -> str:
    if len(value) > max_len or "\\" in value or any(ord(c) < 32 for c in value):
        raise InputError(f"at most {max_len} printable characters without a backslash: {value!r}", option)
    return value


@dataclass(frozen=True)
class DicomStudy:
    """Identifiers of the study (and patient) a non-DICOM scan was taken in. ``study_instance_uid``
    is required (it is what puts the results beside the scan in a PACS); the rest default to empty,
    which DICOM allows for these type-2 attributes."""

    study_instance_uid: str
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_date: str = ""
    study_time: str = ""
    referring_physician_name: str = ""

    def __post_init__(self) -> None:
        _check_uid(self.study_instance_uid, "--study-uid")
        _check_text(self.patient_id, "--patient-id", 64)
        _check_text(self.patient_name, "--patient-name", 64)
        _check_text(self.accession_number, "--accession-number", 16)
        _check_text(self.study_id, "study_id", 16)
        _check_text(self.referring_physician_name, "referring_physician_name", 64)
        if self.patient_birth_date:
            _check_date(self.patient_birth_date, "patient_birth_date")
        if self.study_date:
            _check_date(self.study_date, "--study-date")
        if self.study_time:
            _check_time(self.study_time, "--study-time")
        if self.patient_sex not in ("", "M", "F", "O"):
            raise InputError(f"patient sex is M, F or O: {self.patient_sex!r}", "patient_sex")

    def apply_to(self, dataset) -> None:
        """Set the patient and general study attributes of ``dataset`` (a pydicom Dataset)."""
        dataset.StudyInstanceUID = self.study_instance_uid
        dataset.PatientID = self.patient_id
        dataset.PatientName = self.patient_name
        dataset.PatientBirthDate = self.patient_birth_date
        dataset.PatientSex = self.patient_sex
        dataset.AccessionNumber = self.accession_number
        dataset.StudyID = self.study_id
        dataset.StudyDate = self.study_date
        dataset.StudyTime = self.study_time
        dataset.ReferringPhysicianName = self.referring_physician_name
