"""Reports: the JSON/CSV contract (models), the QA figure, the HTML page and DICOM SEG."""

from volbmd.report.models import CSV_COLUMNS, SCHEMA_VERSION, Report, VertebraRecord, write_report

__all__ = ["SCHEMA_VERSION", "Report", "VertebraRecord", "write_report", "CSV_COLUMNS"]
