"""What volbmd's DICOM outputs (SEG, SR, secondary capture) share: the source series read and made
fit to be referenced, and the codes of configs/dicom/codes.yaml."""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["load_sources", "vertebra_code", "local_code", "local_scheme", "series_number"]

#: Attributes of type 2 in the modules the outputs copy from the source (patient, general study):
#: anonymised series often drop them, and an empty value is valid where a missing one is not.
_TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)

#: Series numbers of volbmd's outputs (high, so that they sort after the scanner's own series).
SERIES_NUMBERS = {"ct": 9900, "seg": 9901, "sr": 9902, "sc": 9903}


def series_number(kind: str) -> int:
    return SERIES_NUMBERS[kind]


def load_sources(dicom_files: list[str]):
    """The source series' datasets, made fit to be referenced: missing type-2 attributes added
    empty, SOP UIDs taken from the file meta when the data set lacks them, and a negative
    SpacingBetweenSlices (some scanners write the signed step) made positive, as the standard
    requires. Raises ValueError when the series cannot be referenced (no study or series UID)."""
    import pydicom

    sources = [pydicom.dcmread(f) for f in dicom_files]
    for ds in sources:
        for keyword in _TYPE2_KEYWORDS:
            if keyword not in ds:
                setattr(ds, keyword, "")
        meta = getattr(ds, "file_meta", None)
        if not getattr(ds, "SOPClassUID", "") and meta is not None:
            ds.SOPClassUID = meta.get("MediaStorageSOPClassUID", "")
        if not getattr(ds, "SOPInstanceUID", "") and meta is not None:
            ds.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID", "")
        spacing = ds.get("SpacingBetweenSlices")
        if spacing is not None and spacing != "" and float(spacing) < 0:
            ds.SpacingBetweenSlices = abs(float(spacing))
        missing = [
            k
            for k in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
            if not str(getattr(ds, k, "") or "")
        ]
        if missing:
            raise ValueError(
                f"the source series has no {', '.join(missing)} (anonymised?), which a DICOM result must reference"
            )
    return sources


@functools.cache
def _codes() -> dict:
    import yaml

    return yaml.safe_load((resources.files("volbmd_configs") / "dicom" / "codes.yaml").read_text())


def vertebra_code(level: str):
    """The SNOMED CT code of a vertebra level (pydicom Code)."""
    from pydicom.sr.coding import Code

    value, meaning = _codes()["vertebrae"][level]
    return Code(str(value), "SCT", meaning)


def local_scheme() -> dict:
    return dict(_codes()["local_scheme"])


def local_code(name: str, meaning: str | None = None, value: str | None = None):
    """A code of volbmd's local scheme (99VOLBMD): a concept of codes.yaml, or a value (a category,
    a flag) with ``value`` and ``meaning`` (a code value is at most 16 characters, a meaning 64)."""
    from pydicom.sr.coding import Code

    scheme = _codes()["local_scheme"]["designator"]
    if value is not None:
        return Code(value[:16], scheme, (meaning or value)[:64])
    code_value, code_meaning = _codes()["local"][name]
    return Code(code_value, scheme, code_meaning)
