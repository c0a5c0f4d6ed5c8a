"""``volbmd mri``: fat–water separation of multi-echo data, and vertebral marrow PDFF per level."""

from __future__ import annotations

from pathlib import Path

import typer

from volbmd.cli_common import handles_input_errors
from volbmd.errors import InputError

mri_app = typer.Typer(help="MRI: fat–water separation and vertebral marrow fat fraction (PDFF).", no_args_is_help=True)


def _numbers(text: str | None, option: str, scale: float = 1.0) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) * scale for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"must be comma-separated numbers, got {text!r}", option) from None


def _paths(text: str) -> list[Path]:
    return [Path(p.strip()) for p in text.split(",") if p.strip()]


def _version() -> str:
    from volbmd import __version__

    return __version__


def _check_vertebrae(masks: Path | None, segmenter: str | None, model: Path | None, bmd_model: Path | None) -> str | None:
    """The backend that finds the vertebrae (None: no levels), checked before any work."""
    backend = segmenter or ("masks" if masks is not None else None)
    if backend == "classical":
        raise InputError("the classical segmenter is CT only; give the vertebrae as --masks or an MR --model", "--segmenter")
    if backend not in (None, "masks", "nnunet", "monai"):
        raise InputError(f"unknown segmenter {backend!r} (masks, nnunet or monai on MRI)", "--segmenter")
    if backend == "masks" and masks is None:
        raise InputError("--segmenter masks needs --masks", "--segmenter")
    if backend in ("nnunet", "monai") and model is None:
        raise InputError(f"--segmenter {backend} needs --model (a model trained on MR images)", "--segmenter")
    if backend is None and bmd_model is not None:
        raise InputError("--bmd-model estimates BMD per level: give the vertebrae (--masks or --segmenter)", bmd_model)
    if bmd_model is not None:
        from volbmd.mri.bmd_model import load_bmd_model

        load_bmd_model(bmd_model)  # a bad model fails before the work
    return backend


def _levels(pdff_percent, image, backend, masks, label_scheme, model, device, cortical_depth_mm, bmd_model):
    """PDFF per level, the vertebrae from ``masks`` or found by a network on ``image`` (the water
    image: its grid is the PDFF's), with BMD estimates when a model is given; [] without vertebrae."""
    from volbmd.mri.levels import apply_bmd_model, level_pdff

    if backend is None:
        return []
    if backend == "masks":
        from volbmd.segment.masks import load_masks

        labels = load_masks(masks, image, label_scheme=label_scheme)
    else:
        from volbmd.segment.base import make_segmenter

        labels = make_segmenter(backend, model=model, device=device).segment(image)
    levels = level_pdff(pdff_percent, labels, cortical_depth_mm=cortical_depth_mm)
    if bmd_model is not None:
        from volbmd.mri.bmd_model import load_bmd_model

        levels = apply_bmd_model(levels, load_bmd_model(bmd_model))
    return levels


#: Above this share of voxels whose fat and water the regularisation swapped back, the separation
#: was hard (few echoes, low SNR): a global swap of a whole region becomes possible; say so.
SWAPS_WARNING_SHARE = 0.05


def _global_warnings(maps) -> list[str]:
    if maps.swaps_undone_share > SWAPS_WARNING_SHARE:
        return [
            f"fat_water_swap_risk: the field-map regularisation swapped {100 * maps.swaps_undone_share:.1f}% of "
            "the voxels back; check the PDFF map for whole regions swapped"
        ]
    return []


def _print_levels(levels) -> None:
    for lv in levels:
        shown = "—" if lv.pdff_median_percent is None else f"{lv.pdff_median_percent:.1f}%"
        line = f"{lv.level}: PDFF median {shown} ({lv.n_voxels} voxels)"
        if lv.bmd_estimate_mg_cm3 is not None:
            line += f"; BMD {lv.bmd_estimate_mg_cm3:.0f} ± {lv.bmd_estimate_sd_mg_cm3:.0f} mg/cm³ ({lv.bmd_estimate_label})"
        if lv.flags:
            line += "  " + ", ".join(lv.flags)
        typer.echo(line)


MASKS_HELP = "Vertebra masks on the same grid (multilabel file or folder), for PDFF per level."
SEGMENTER_HELP = "How the vertebrae are found: masks (given) | nnunet | monai (with an MR --model, on the water image)."
MODEL_HELP = "PDFF→BMD model from 'volbmd mri fit-bmd': adds a BMD estimate per level (needs --masks)."
# the options by which `separate` and `pdff` find and measure the vertebrae (declared once for both)
MASKS_OPTION = typer.Option(None, "--masks", help=MASKS_HELP)
LABEL_SCHEME_OPTION = typer.Option("verse", "--label-scheme", help="Ids of a multilabel mask: verse | totalseg.")
CORTICAL_DEPTH_OPTION = typer.Option(2.0, "--cortical-depth-mm", min=0, help="Cortex stripped from each body.")
BMD_MODEL_OPTION = typer.Option(None, "--bmd-model", help=MODEL_HELP)
SEGMENTER_OPTION = typer.Option(None, "--segmenter", help=SEGMENTER_HELP)
MODEL_OPTION = typer.Option(None, "--model", help="nnU-Net model folder or AnatomyNet checkpoint (MR).")
DEVICE_OPTION = typer.Option("cpu", "--device", help="Where the network runs: cpu | cuda.")


@mri_app.command()
@handles_input_errors
def separate(
    echoes: Path | None = typer.Option(
        None, "--echoes", help="Multi-echo complex data: challenge .mat, or .npy (z, y, x, echo)."
    ),
    magnitude: str | None = typer.Option(
        None, "--magnitude", help="Or: magnitude images, one per echo, comma-separated (NIfTI/NRRD/MHA)."
    ),
    phase: str | None = typer.Option(None, "--phase", help="... with their phase images (radians or Siemens' ±4096)."),
    out: Path = typer.Option(..., "--out", help="Output folder (pdff, water, fat, r2star, fieldmap .nii.gz; report.json)."),
    te_ms: str | None = typer.Option(None, "--te", help="Echo times in ms, e.g. 1.2,2.4,3.6 (when the file lacks them)."),
    field_t: float | None = typer.Option(None, "--field-t", help="Field strength in tesla (when the file lacks it)."),
    spectrum: str = typer.Option(
        "liver6", "--spectrum", help="Fat spectrum: liver6 (Hernando) | marrow9 (Ren; for marrow)."
    ),
    voxelwise: bool = typer.Option(False, "--voxelwise", help="No field-map regularisation (each voxel's lowest residual)."),
    masks: Path | None = MASKS_OPTION,
    label_scheme: str = LABEL_SCHEME_OPTION,
    cortical_depth_mm: float = CORTICAL_DEPTH_OPTION,
    bmd_model: Path | None = BMD_MODEL_OPTION,
    segmenter: str | None = SEGMENTER_OPTION,
    model: Path | None = MODEL_OPTION,
    device: str = DEVICE_OPTION,
):
    """Separate fat and water (VARPRO, multi-peak fat, R2*, region-grown field map); write the maps."""
    from volbmd.io.output_folder import check_output_folder
    from volbmd.mri import SeparationOptions, challenge_score, read_echoes, separate_fat_water
    from volbmd.mri.echoes import read_magnitude_phase
    from volbmd.mri.outputs import MAP_FILES, MriReport, write_mri_outputs
    from volbmd.mri.spectra import load_spectrum

    check_output_folder(out)
    load_spectrum(spectrum)  # an unknown name fails before the work
    backend = _check_vertebrae(masks, segmenter, model, bmd_model)
    te_s = _numbers(te_ms, "--te", 1e-3)
    if (echoes is None) == (magnitude is None):
        raise InputError("give the echoes either as --echoes FILE or as --magnitude and --phase", "volbmd mri separate")
    if echoes is not None:
        data = read_echoes(echoes, te_s=te_s, field_t=field_t)
    elif magnitude is not None:
        if not phase:
            raise InputError("--magnitude needs --phase (the same number of files, in echo order)", "--phase")
        data = read_magnitude_phase(_paths(magnitude), _paths(phase), te_s=te_s, field_t=field_t)
    name = Path(data.source or "echoes").name
    options = SeparationOptions(spectrum=spectrum, regularise=not voxelwise)
    maps = separate_fat_water(data, options)
    volumes = {name: data.volume(getattr(maps, attr)) for name, attr in MAP_FILES.items()}
    levels = _levels(
        maps.pdff_percent, volumes["water.nii.gz"], backend, masks, label_scheme, model, device, cortical_depth_mm, bmd_model
    )
    score = None
    if data.reference_ff is not None and data.eval_mask is not None and data.eval_mask.any():
        score = challenge_score(maps.pdff_percent, data.reference_ff, data.eval_mask)
    report = MriReport(
        volbmd_version=_version(),
        kind="fat_water_separation",
        input={
            "path": name,
            "shape": list(data.shape),
            "echo_times_ms": [round(t * 1e3, 4) for t in data.te_s],
            "field_strength_t": data.field_t,
        },
        method={
            "spectrum": maps.spectrum.name,
            "spectrum_source": maps.spectrum.source,
            "r2star_max_per_s": options.r2star_max_per_s,
            "fieldmap": "region grown over the VARPRO residual minima" if options.regularise else "voxel-wise minimum",
            "swaps_undone_share": round(maps.swaps_undone_share, 4),
        },
        levels=levels,
        challenge_score=score,
        warnings=[f"{lv.level}: {flag}" for lv in levels for flag in lv.flags] + _global_warnings(maps),
        timings_s={k: round(v, 3) for k, v in maps.timings_s.items()},
    )
    write_mri_outputs(out, volumes, report)
    _print_levels(levels)
    typer.echo(
        f"{name}: {len(data.te_s)} echoes at {data.field_t:g} T, spectrum {maps.spectrum.name}, "
        f"{sum(maps.timings_s.values()):.1f} s" + (f"; challenge score {score:.4f}" if score is not None else "")
    )
    typer.echo(f"wrote {', '.join(sorted([*volumes, 'report.json']))} to {out}")


@mri_app.command()
@handles_input_errors
def pdff(
    water: Path = typer.Option(..., "--water", help="Water magnitude image (mDixon W), NIfTI/NRRD/MHA."),
    fat: Path = typer.Option(..., "--fat", help="Fat magnitude image (mDixon F), same grid."),
    out: Path = typer.Option(..., "--out", help="Output folder (pdff.nii.gz, report.json)."),
    masks: Path | None = MASKS_OPTION,
    label_scheme: str = LABEL_SCHEME_OPTION,
    cortical_depth_mm: float = CORTICAL_DEPTH_OPTION,
    bmd_model: Path | None = BMD_MODEL_OPTION,
    segmenter: str | None = SEGMENTER_OPTION,
    model: Path | None = MODEL_OPTION,
    device: str = DEVICE_OPTION,
):
    """PDFF from scanner-separated Dixon water and fat images (noise-floor corrected), per level with masks."""
    import numpy as np

    from volbmd.io import load_volume
    from volbmd.io.output_folder import check_output_folder
    from volbmd.mri.dixon import pdff_from_magnitudes
    from volbmd.mri.outputs import MriReport, write_mri_outputs

    check_output_folder(out)
    backend = _check_vertebrae(masks, segmenter, model, bmd_model)
    w = load_volume(water)
    f = load_volume(fat)
    if not w.geometry.matches(f.geometry):
        raise InputError(f"not on the water image's grid: {f.geometry.difference(w.geometry)}", fat)
    for image, path in ((w, water), (f, fat)):
        if float(image.array.min()) < 0:
            raise InputError("has negative values: a magnitude image is needed (not phase or real part)", path)
    values, sigma = pdff_from_magnitudes(w.array, f.array)
    pdff_volume = w.with_array(np.nan_to_num(values, nan=0.0))  # the map shows 0 where the signal is too low
    levels = _levels(values, w, backend, masks, label_scheme, model, device, cortical_depth_mm, bmd_model)
    warnings = [f"{lv.level}: {flag}" for lv in levels for flag in lv.flags]
    report = MriReport(
        volbmd_version=_version(),
        kind="dixon_pdff",
        input={"water": water.name, "fat": fat.name, "shape": list(w.shape), "spacing_mm": list(w.spacing_mm)},
        method={
            "noise_sigma": sigma,
            "noise_floor": "Rician, corrected as sqrt(M² − 2σ²); pdff.nii.gz is 0 where the signal is below 5σ",
            "cortical_depth_mm": cortical_depth_mm,
        },
        levels=levels,
        warnings=warnings,
    )
    write_mri_outputs(out, {"pdff.nii.gz": pdff_volume}, report)
    _print_levels(levels)
    typer.echo(f"wrote pdff.nii.gz, report.json to {out}")


@mri_app.command("fit-bmd")
@handles_input_errors
def fit_bmd(
    manifest: Path = typer.Argument(..., help="CSV, one row per level: pdff_percent, bmd_mg_cm3 (QCT of the same level)."),
    out: Path = typer.Option(..., "--out", help="The model to write (JSON), for --bmd-model."),
):
    """Fit BMD = a + b·PDFF to paired levels; write the model with its residual SD."""
    from volbmd.io import atomic_output
    from volbmd.io.output_folder import check_output_file
    from volbmd.mri.bmd_model import fit_pdff_bmd, read_pairs

    check_output_file(out)
    pdff_values, bmd_values = read_pairs(manifest)
    model = fit_pdff_bmd(pdff_values, bmd_values, source=str(manifest))
    with atomic_output(out) as tmp:
        tmp.write_text(model.model_dump_json(indent=2))
    typer.echo(
        f"BMD = {model.intercept_mg_cm3:.1f} {model.slope_mg_cm3_per_percent:+.2f}·PDFF mg/cm³ over {model.n_levels} "
        f"levels (r {model.pearson_r:.2f}, residual SD {model.residual_sd_mg_cm3:.1f} mg/cm³); wrote {out}"
    )


@mri_app.command()
@handles_input_errors
def view(run_dir: Path = typer.Argument(..., help="A folder written by 'volbmd mri separate' or 'volbmd mri pdff'.")):
    """Open napari on an MRI result: PDFF with a colour bar over water, fat, R2* and field map."""
    from volbmd.cli import _check_display
    from volbmd.napari._reader import _is_mri_run

    if not _is_mri_run(run_dir):
        raise InputError("not an MRI result folder (report.json with modality MR and pdff.nii.gz)", run_dir)
    _check_display()
    import napari

    from volbmd.napari._mri import add_mri_layers

    viewer = napari.Viewer(title=f"volbmd MRI: {run_dir.name}")
    add_mri_layers(viewer, run_dir)
    napari.run()
