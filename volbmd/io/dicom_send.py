"""Send a run's DICOM results (SEG, SR, secondary capture) to a PACS node by C-STORE (pynetdicom).

Only files the node confirmed are recorded as sent, in ``DIR/sent.json`` (one entry per stored
file: name, SOP Instance UID, node, time); a refused or unreachable node is one clear error.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
from pathlib import Path

from volbmd.errors import InputError

__all__ = ["send_results", "parse_node", "SENT_RECORD"]

SENT_RECORD = "sent.json"
_OK_STATUSES = {0x0000, 0xB000, 0xB007, 0xB006}  # success, and the warnings "stored with coercion"


def parse_node(text: str) -> tuple[str, int]:
    """'HOST:PORT' → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--to must be HOST:PORT (e.g. pacs.example.org:104), got {text!r}")
    return host, int(port)


def _check_aet(name: str, what: str) -> str:
    if not 0 < len(name) <= 16 or not name.isascii() or "\\" in name or name.strip() != name:
        raise InputError(f"{what} must be 1–16 ASCII characters without spaces at its ends or backslashes, got {name!r}")
    return name


def _record(run_dir: Path, entries: list[dict]) -> None:
    from volbmd.io import atomic_output

    path = run_dir / SENT_RECORD
    try:
        before = json.loads(path.read_text()) if path.exists() else []
    except json.JSONDecodeError:
        before = []
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(before + entries, indent=1))


def send_results(
    run_dir: str | os.PathLike,
    node: str,
    *,
    calling_aet: str = "VOLBMD",
    called_aet: str = "ANY-SCP",
    timeout_s: float = 30.0,
) -> list[dict]:
    """C-STORE every DICOM result of ``run_dir`` to ``node`` ('HOST:PORT') in one association.

    Returns the entries recorded in sent.json. Raises InputError when there is nothing to send, the
    node cannot be reached or refuses the association, or refuses a file (the files it stored
    before are recorded, the others are not)."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    from volbmd.report.dicom_ct import DERIVED_CT_FOLDER
    from volbmd.report.dicom_outputs import DICOM_OUTPUTS

    run_dir = Path(run_dir)
    host, port = parse_node(node)
    _check_aet(calling_aet, "--aet")
    _check_aet(called_aet, "--called-aet")
    # the derived CT series of a non-DICOM scan first, so that the node holds the images the SEG references
    files = sorted((run_dir / DERIVED_CT_FOLDER).glob("*.dcm"))
    files += [run_dir / name for name in DICOM_OUTPUTS if (run_dir / name).is_file()]
    if not files:
        raise InputError(
            "no DICOM results to send (dicom_seg.dcm, dicom_sr.dcm, dicom_sc.dcm are written for DICOM inputs, "
            "and for other scans run with --study-uid)",
            run_dir,
        )
    datasets = []
    for f in files:
        try:
            datasets.append(pydicom.dcmread(f))
        except Exception as exc:
            raise InputError(f"cannot read as DICOM ({exc})", f) from None
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    for sop_class in dict.fromkeys(ds.SOPClassUID for ds in datasets):
        syntaxes = list(
            dict.fromkeys(
                [ds.file_meta.TransferSyntaxUID for ds in datasets if ds.SOPClassUID == sop_class]
                + [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            )
        )
        ae.add_requested_context(sop_class, syntaxes)
    where = f"{host}:{port}"
    try:  # pynetdicom reports an unreachable node as an aborted association: tell them apart first
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"cannot reach the DICOM node ({reason}); nothing was sent", where) from None
    assoc = ae.associate(host, port, ae_title=called_aet)
    if assoc.is_aborted:
        # a node that rejects and at once closes the connection can read as an abort when the
        # closed socket is seen before the rejection is read (storescp --refuse under CPU load):
        # one more try tells a rejection from a real abort
        time.sleep(0.5)
        assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise InputError(
                f"the DICOM node rejected the association (calling AE {calling_aet!r}, called AE "
                f"{called_aet!r}); nothing was sent",
                where,
            )
        if assoc.is_aborted:
            raise InputError("the DICOM node aborted the association; nothing was sent", where)
        raise InputError(f"no association with the DICOM node (no answer within {timeout_s:g} s); nothing was sent", where)
    sent, refused = [], []
    try:
        for f, ds in zip(files, datasets):
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code in _OK_STATUSES:
                sent.append(
                    {
                        "file": f.relative_to(run_dir).as_posix(),
                        "sop_instance_uid": str(ds.SOPInstanceUID),
                        "node": where,
                        "called_aet": called_aet,
                        "calling_aet": calling_aet,
                        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    }
                )
            else:
                refused.append(f"{f.relative_to(run_dir).as_posix()} (status {'none' if code is None else hex(code)})")
                if not assoc.is_established:
                    break
    finally:
        if assoc.is_established:
            assoc.release()
    if sent:
        _record(run_dir, sent)
    if refused:
        done = ", ".join(e["file"] for e in sent) or "nothing"
        raise InputError(f"the DICOM node did not store {', '.join(refused)}; stored: {done}", where)
    return sent
