"""The DICOM results of a run on a DICOM series: dicom_seg.dcm (the vertebrae), dicom_sr.dcm (the
measurements, TID 1500) and dicom_sc.dcm (the QA picture), all in the source study."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_dicom_outputs", "DICOM_OUTPUTS"]

DICOM_OUTPUTS = ("dicom_seg.dcm", "dicom_sr.dcm", "dicom_sc.dcm")


def _save(dataset, path: Path) -> Path:
    from volbmd.io import atomic_output

    with atomic_output(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return path


def write_dicom_outputs(
    report, labels, dicom_files: list[str], png: bytes, out_dir: Path, *, version: str
) -> tuple[dict[str, Path], list[str]]:
    """Write what can be written; returns the paths written and, for each object that could not
    be, a warning saying why (the other outputs of the run stand)."""
    import warnings

    with warnings.catch_warnings():
        # the source's PatientName is copied as it is (PACS matches on it); highdicom's advice on
        # how a name should be formed is about the source's content, not something a user can act on
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        return _write_dicom_outputs(report, labels, dicom_files, png, out_dir, version=version)


def _write_dicom_outputs(report, labels, dicom_files, png, out_dir: Path, *, version: str):
    from volbmd.report.dicom_common import load_sources
    from volbmd.report.dicom_sc import build_dicom_sc
    from volbmd.report.dicom_seg import build_dicom_seg
    from volbmd.report.dicom_sr import build_dicom_sr

    paths: dict[str, Path] = {}
    warnings: list[str] = []
    try:
        sources = load_sources(dicom_files)
    except Exception as exc:
        return paths, [f"DICOM results not written: {type(exc).__name__}: {exc}"]
    built = None
    try:
        built = build_dicom_seg(labels, sources, version=version)
        if built is not None:
            paths["dicom_seg.dcm"] = _save(built[0], out_dir / "dicom_seg.dcm")
    except Exception as exc:
        warnings.append(f"DICOM SEG not written: {type(exc).__name__}: {exc}")
        built = None
    if built is not None:
        try:
            sr = build_dicom_sr(report, sources, built[0], built[1], version=version)
            paths["dicom_sr.dcm"] = _save(sr, out_dir / "dicom_sr.dcm")
        except Exception as exc:
            warnings.append(f"DICOM SR not written: {type(exc).__name__}: {exc}")
    try:
        paths["dicom_sc.dcm"] = _save(build_dicom_sc(png, sources, version=version), out_dir / "dicom_sc.dcm")
    except Exception as exc:
        warnings.append(f"DICOM secondary capture not written: {type(exc).__name__}: {exc}")
    return paths, warnings
