"""The segmentation flags volbmd writes (report.json ``segmentation.flags``), declared once: each
flag is a declared code followed by its detail, and the code says whether the flag is a warning
(printed, and listed in ``qa.warnings``) or information only. A backend adds a flag only with a
code from this table (tests/test_flags.py checks what the segmenters write)."""

from __future__ import annotations

__all__ = ["SEGMENTATION_FLAGS", "flag_code", "is_warning"]

#: code → True when the flag is a warning. A flag is its code, then ``:`` or `` (`` or ``_`` and a detail.
SEGMENTATION_FLAGS: dict[str, bool] = {
    "partial_fov": True,  # the scan cuts the spine (partial_fov:inferior|superior)
    "transitional": True,  # a transitional anatomy was chosen (transitional:L6 (…), transitional:13_rib_pairs (…))
    "levels:provisional": True,  # no landmark in view: names are a guess
    "levels:rib_count_disagrees": True,
    "levels:last_rib_disagrees": True,
    "levels:first_rib_disagrees": True,
    "levels:sacrum_disagrees": True,
    "levels:from": False,  # which landmarks named the levels (levels:from_sacrum_and_last_rib)
    "levels:single_landmark": False,  # one landmark only (levels:single_landmark (last rib only))
}


def flag_code(flag: str) -> str | None:
    """The declared code a flag starts with (the longest that fits), or None."""
    fits = [c for c in SEGMENTATION_FLAGS if flag == c or flag.startswith((c + ":", c + " (", c + "_"))]
    return max(fits, key=len) if fits else None


def is_warning(flag: str) -> bool:
    """True for a flag whose code is a warning; an undeclared flag is a warning too (say it rather
    than hide it)."""
    code = flag_code(flag)
    return True if code is None else SEGMENTATION_FLAGS[code]
