"""Digital phantoms with known truth: a CT-like lumbar spine in a soft-tissue body.

Used by ``volbmd demo`` and by the tests. Everything is in the canonical LPS frame: array axis 0 runs
inferior → superior, axis 1 anterior → posterior, axis 2 right → left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from volbmd.labels import load_label_scheme
from volbmd.volume import LabelMap, Volume

__all__ = ["SpinePhantom", "make_spine_phantom", "DEFAULT_TRABECULAR_HU"]

DEFAULT_TRABECULAR_HU = {"T12": 190.0, "L1": 160.0, "L2": 130.0, "L3": 100.0, "L4": 80.0, "L5": 60.0}


@dataclass(frozen=True)
class SpinePhantom:
    volume: Volume
    labels: LabelMap  # whole vertebrae (body + posterior elements), VerSe ids
    bodies: LabelMap  # vertebral bodies only, VerSe ids
    trabecular_hu: dict[str, float]
    body_height_mm: dict[str, float]
    cortical_thickness_mm: float
    notes: dict = field(default_factory=dict)


def make_spine_phantom(
    levels: tuple[str, ...] = ("T12", "L1", "L2", "L3"),
    *,
    spacing_mm: tuple[float, float, float] = (1.5, 0.8, 0.8),
    trabecular_hu: dict[str, float] | None = None,
    cortical_hu: float = 700.0,
    posterior_hu: float = 450.0,
    cortical_thickness_mm: float = 1.5,
    body_height_mm: float | dict[str, float] = 26.0,
    body_semi_axes_mm: tuple[float, float] = (15.0, 21.0),
    disc_height_mm: float = 9.0,
    anterior_height_loss: dict[str, float] | None = None,
    field_of_view_mm: tuple[float, float] = (184.0, 170.0),
    noise_hu: float = 0.0,
    seed: int = 0,
    rib_levels: tuple[str, ...] = (),
    sacrum: bool = False,
    dtype=np.int16,
) -> SpinePhantom:
    """A stack of vertebrae (elliptic bodies with a cortical shell, an arch and a spinous process).

    Args:
        levels: cranio-caudal names, top first (e.g. ("T12", "L1", "L2")).
        spacing_mm: (z, y, x) voxel size.
        trabecular_hu: HU inside each body's trabecular core (default :data:`DEFAULT_TRABECULAR_HU`).
        body_height_mm: one height for all, or per level (a wedge-free compression fracture).
        body_semi_axes_mm: (AP, LR) semi-axes of the elliptic body cross-section.
        anterior_height_loss: per level, the fraction of height lost at the anterior wall (a wedge
            fracture: the superior endplate slopes down linearly from the posterior wall).
        field_of_view_mm: (AP, LR) extent of the grid.
        noise_hu: SD of Gaussian noise added to every voxel (seeded).
        rib_levels: levels with a pair of ribs (bars from the body's side out past 90 mm lateral,
            at the upper half of the body, not part of the vertebra's label).
        sacrum: add a sacrum below the lowest level (labelled S1) joined to two iliac wings
            (unlabelled) that reach 95 mm to each side, as the pelvis does.
        The grid widens to fit ribs and iliac wings.
    """
    scheme = load_label_scheme("verse")
    hu = {lvl: float((trabecular_hu or DEFAULT_TRABECULAR_HU).get(lvl, 150.0)) for lvl in levels}
    heights = {lvl: float(body_height_mm[lvl] if isinstance(body_height_mm, dict) else body_height_mm) for lvl in levels}
    sz, sy, sx = spacing_mm
    margin_mm = 12.0
    sacrum_mm = 40.0 if sacrum else 0.0
    total_z = sum(heights.values()) + disc_height_mm * (len(levels) + 1) + 2 * margin_mm + sacrum_mm
    fov_y, fov_x = field_of_view_mm
    if rib_levels or sacrum:
        fov_x = max(fov_x, 230.0)
    shape = (int(round(total_z / sz)), int(round(fov_y / sy)), int(round(fov_x / sx)))
    z = (np.arange(shape[0]) + 0.5) * sz
    y = (np.arange(shape[1]) + 0.5) * sy - fov_y / 2  # 0 at the body's AP centre line
    x = (np.arange(shape[2]) + 0.5) * sx - fov_x / 2
    Y, X = np.meshgrid(y, x, indexing="ij")

    volume = np.full(shape, -1000.0, dtype=np.float32)
    # Body outline: fat ring around muscle-like soft tissue; the spine lies in its posterior half.
    half_width = 80.0 if fov_x <= 170.0 else fov_x / 2 - 5.0
    body_r = ((Y + 20) / 70.0) ** 2 + (X / half_width) ** 2
    inner = ((Y + 20) / 62.0) ** 2 + (X / (half_width - 8.0)) ** 2
    volume[:, body_r <= 1] = -100.0
    volume[:, inner <= 1] = 45.0

    a_ap, a_lr = body_semi_axes_mm
    body_cy = -10.0  # body centre, anterior of the canal
    ell = np.sqrt(((Y - body_cy) / a_ap) ** 2 + (X / a_lr) ** 2)  # 1 on the body surface
    # distance inside the ellipse outline, approximated by the radial gap scaled to the local radius
    canal_cy = body_cy + a_ap + 9.0
    r_canal = np.hypot(Y - canal_cy, X)
    arch = (r_canal >= 8.0) & (r_canal <= 14.0) & (Y >= body_cy + a_ap - 4)
    spinous = (np.abs(X) <= 3.5) & (Y > canal_cy) & (Y <= canal_cy + 30.0)
    posterior_2d = (arch | spinous) & (ell > 1.0)

    labels = np.zeros(shape, dtype=np.int16)
    bodies = np.zeros(shape, dtype=np.int16)
    z_top = total_z - margin_mm - disc_height_mm
    for lvl in levels:
        h = heights[lvl]
        z0, z1 = z_top - h, z_top
        zsl = (z >= z0) & (z < z1)
        # disc below this body
        dsl = (z >= z0 - disc_height_mm) & (z < z0)
        volume[dsl] = np.where(ell <= 1.0, 90.0, volume[dsl])
        above = (z >= z_top) & (z < z_top + disc_height_mm)
        volume[above] = np.where(ell <= 1.0, 90.0, volume[above])
        # cortex: within cortical_thickness of the side wall or the endplates
        side_depth_mm = (1.0 - ell) * min(a_ap, a_lr)
        loss = float((anterior_height_loss or {}).get(lvl, 0.0))
        # local top of the body: z1 at the posterior wall, z1 - loss·h at the anterior wall
        toward_front = np.clip((body_cy + a_ap - Y) / (2 * a_ap), 0.0, 1.0)
        top = z1 - loss * h * toward_front
        for k in np.flatnonzero(zsl):
            end_depth = np.minimum(z[k] - z0, top - z[k])
            inside = (ell <= 1.0) & (z[k] < top)
            cortex = inside & ((side_depth_mm < cortical_thickness_mm) | (end_depth < cortical_thickness_mm))
            sl = volume[k]
            sl[inside] = hu[lvl]
            sl[cortex] = cortical_hu
            sl[posterior_2d] = posterior_hu
            labels[k][inside | posterior_2d] = scheme[lvl]
            bodies[k][inside] = scheme[lvl]
            if lvl in rib_levels and z[k] >= z0 + 0.5 * h and z[k] < z1 - 2.0:
                # ribs: from the body's side (behind its centre) out and back, 8 mm thick
                rib = (
                    (np.abs(X) >= a_lr - 1.0)
                    & (np.abs(X) <= 100.0)
                    & (np.abs(Y - (body_cy + 5.0 + 0.15 * np.abs(X))) <= 4.0)
                )
                sl[rib & ~inside] = posterior_hu
        z_top = z0 - disc_height_mm
    if sacrum:
        # S1: a body and arch tapering down, joined at its sides to iliac wings
        s_top = z_top  # the lumbosacral disc lies above it
        disc = (z >= s_top) & (z < s_top + disc_height_mm)
        volume[disc] = np.where(ell <= 1.0, 90.0, volume[disc])
        for k in np.flatnonzero((z < s_top) & (z >= s_top - sacrum_mm)):
            depth = s_top - z[k]
            scale = 1.0 - 0.4 * depth / sacrum_mm
            body = np.sqrt(((Y - body_cy) / (a_ap * scale)) ** 2 + (X / (a_lr * scale)) ** 2) <= 1.0
            wings = (np.abs(X) >= a_lr * scale - 2.0) & (np.abs(X) <= 95.0) & (np.abs(Y - (body_cy + 10.0)) <= 6.0)
            sl = volume[k]
            sl[wings] = posterior_hu
            sl[body] = 220.0
            sl[posterior_2d & (Y < canal_cy + 20.0)] = posterior_hu
            labels[k][body | (posterior_2d & (Y < canal_cy + 20.0))] = scheme["S1"]
            bodies[k][body] = scheme["S1"]
    if noise_hu > 0:
        volume += np.random.default_rng(seed).normal(0.0, noise_hu, size=shape).astype(np.float32)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    array = np.clip(np.round(volume), info.min, info.max).astype(dtype) if info else volume.astype(dtype)
    vol = Volume(
        array=array,
        spacing_mm=spacing_mm,
        origin_lps_mm=(-fov_x / 2, -fov_y / 2, 0.0),
        metadata={
            "format": "phantom",
            "modality": "CT",
            "kvp": 120.0,
            "slice_thickness_mm": float(sz),
            "contrast_agent": None,
            "manufacturer": "volbmd digital phantom",
        },
        source="volbmd digital spine phantom",
    )
    present = {lvl: scheme[lvl] for lvl in levels + (("S1",) if sacrum else ())}
    return SpinePhantom(
        volume=vol,
        labels=LabelMap.on_grid_of(vol, labels, present, source="phantom labels"),
        bodies=LabelMap.on_grid_of(vol, bodies, present, source="phantom bodies"),
        trabecular_hu=hu,
        body_height_mm=heights,
        cortical_thickness_mm=cortical_thickness_mm,
    )


@dataclass(frozen=True)
class EspScan:
    """An ESP-like spine phantom with reference tissues and a rod phantom below it, scanned."""

    volume: Volume
    labels: LabelMap  # whole vertebrae (VerSe ids)
    rods: LabelMap  # rod k = label k in the rod phantom's certificate order (core of each rod)
    trabecular_mg_cm3: dict[str, float]  # true HA density per level
    rod_phantom: str
    gain: float  # scanner HU scale: measured = gain · true_hu + offset
    offset_hu: float
    ha_mg_cm3_per_hu: float  # true HU of HA: density / this
    tissue_true_hu: dict[str, float]


def make_esp_phantom(
    *,
    densities_mg_cm3: dict[str, float] | None = None,
    rod_phantom: str = "bmas200",
    spacing_mm: tuple[float, float, float] = (1.5, 0.9, 0.9),
    gain: float = 1.04,
    offset_hu: float = 8.0,
    ha_mg_cm3_per_hu: float = 0.8,
    blur_sigma_mm: float = 0.6,
    noise_hu: float = 8.0,
    supersample: int = 2,
    aorta_true_hu: float = 40.0,
    seed: int = 0,
) -> EspScan:
    """An ESP-like spine phantom scanned together with a rod phantom: known densities everywhere.

    Three vertebrae (L1–L3, trabecular 50/100/200 mg HA/cm³, cortical shells thickening with
    density) in a water-equivalent body with a subcutaneous fat layer, paraspinal muscle, an aorta of
    blood and air around; a rod phantom (certificate ``rod_phantom``) lies under the body in a
    fat-like base. Physics: true HU = ρ_HA / ``ha_mg_cm3_per_hu`` for bone and rods, nominal HU for
    tissues (air −1000, fat −100, muscle 50, blood 40, water 0); the scanner maps true HU to
    ``gain · HU + offset_hu``. Partial volume comes from supersampling, then Gaussian blur and noise.
    ``aorta_true_hu`` above 40 simulates contrast in the aorta (e.g. 250 for an arterial phase).
    """
    from volbmd.calibrate.phantom import load_phantom

    dens = dict(densities_mg_cm3 or {"L1": 50.0, "L2": 100.0, "L3": 200.0})
    levels = tuple(dens)
    rod_def = load_phantom(rod_phantom)
    tissue = {"air": -1000.0, "fat": -100.0, "muscle": 50.0, "blood": 40.0, "water": 0.0}
    ss = int(supersample)
    fine = tuple(s / ss for s in spacing_mm)
    body_h, disc_h, margin = 25.0, 8.0, 10.0
    total_z = len(levels) * (body_h + disc_h) + disc_h + 2 * margin
    fov_y, fov_x = 250.0, 280.0
    shape = tuple(int(round(extent / s)) * ss for extent, s in zip((total_z, fov_y, fov_x), spacing_mm))
    z = (np.arange(shape[0]) + 0.5) * fine[0]
    y = (np.arange(shape[1]) + 0.5) * fine[1] - 115.0  # body outline from −105 to 55 mm; rods behind
    x = (np.arange(shape[2]) + 0.5) * fine[2] - fov_x / 2
    Y, X = np.meshgrid(y, x, indexing="ij")

    plane = np.full(shape[1:], tissue["air"], np.float32)
    outer = ((Y + 25.0) / 80.0) ** 2 + (X / 120.0) ** 2 <= 1
    inner = ((Y + 25.0) / 70.0) ** 2 + (X / 110.0) ** 2 <= 1  # 10 mm of subcutaneous fat
    plane[outer] = tissue["fat"]
    plane[inner] = tissue["water"]
    body_cy, a_ap, a_lr = -5.0, 14.0, 20.0
    for side in (-1, 1):  # paraspinal muscles behind the spine
        plane[((Y - 34.0) / 20.0) ** 2 + ((X - side * 36.0) / 24.0) ** 2 <= 1] = tissue["muscle"]
    plane[np.hypot(Y - (body_cy - a_ap - 16.0), X - 22.0) <= 11.0] = aorta_true_hu  # aorta, front left
    # rod phantom under the body: a fat-like base block with rods along z
    base = (np.abs(Y - 90.0) <= 14.0) & (np.abs(X) <= 105.0)
    plane[base] = -80.0
    n_rods = len(rod_def.rods)
    rod_x = np.linspace(-80.0, 80.0, n_rods)
    rod_planes = np.zeros(shape[1:], np.int16)
    for k, rod in enumerate(rod_def.rods):
        disc = np.hypot(Y - 90.0, X - rod_x[k]) <= 7.0
        if rod_def.model == "mindways":
            true = rod.density_mg_cm3 * 1.2 + ((rod.water_mg_cm3 or 1000.0) - 1000.0)  # an approximate K2HPO4 response
        else:
            true = rod.density_mg_cm3 / ha_mg_cm3_per_hu
        plane[disc] = true
        rod_planes[np.hypot(Y - 90.0, X - rod_x[k]) <= 4.5] = k + 1

    volume = np.broadcast_to(plane, shape).copy()
    labels = np.zeros(shape, np.int16)
    ell = np.sqrt(((Y - body_cy) / a_ap) ** 2 + (X / a_lr) ** 2)
    canal_cy = body_cy + a_ap + 9.0
    r_canal = np.hypot(Y - canal_cy, X)
    arch = (r_canal >= 8.0) & (r_canal <= 13.0) & (Y >= body_cy + a_ap - 3) & (ell > 1.0)
    spinous = (np.abs(X) <= 3.0) & (Y > canal_cy) & (Y <= canal_cy + 30.0) & (ell > 1.0)
    verse = load_label_scheme("verse")
    z_top = total_z - margin - disc_h
    shell_mm = {lvl: 1.0 + 0.5 * i for i, lvl in enumerate(sorted(dens, key=lambda lvl: dens[lvl]))}
    cortical_true = 400.0 / ha_mg_cm3_per_hu
    for lvl in levels:
        z0, z1 = z_top - body_h, z_top
        side_depth = (1.0 - ell) * min(a_ap, a_lr)
        for k in np.flatnonzero((z >= z0) & (z < z1)).tolist():
            end = min(z[k] - z0, z1 - z[k])
            inside = ell <= 1.0
            sl = volume[k]
            sl[inside] = dens[lvl] / ha_mg_cm3_per_hu
            sl[inside & ((side_depth < shell_mm[lvl]) | (end < shell_mm[lvl]))] = cortical_true
            sl[arch | spinous] = cortical_true
            labels[k][inside | arch | spinous] = verse[lvl]
        z_top = z0 - disc_h

    volume = gain * volume + offset_hu

    # partial volume: average the supersampled voxels; labels by majority (nearest centre)
    def pool(a):
        return a.reshape(shape[0] // ss, ss, shape[1] // ss, ss, shape[2] // ss, ss).mean(axis=(1, 3, 5))

    coarse = pool(volume)
    centre = ss // 2
    labels_c = labels[centre::ss, centre::ss, centre::ss]
    rods_c = np.broadcast_to(rod_planes[centre::ss, centre::ss], labels_c.shape).copy()
    if blur_sigma_mm > 0:
        from scipy import ndimage as ndi

        coarse = ndi.gaussian_filter(coarse, [blur_sigma_mm / s for s in spacing_mm], mode="nearest")
    if noise_hu > 0:
        coarse = coarse + np.random.default_rng(seed).normal(0.0, noise_hu, coarse.shape)
    vol = Volume(
        array=np.round(coarse).astype(np.int16),
        spacing_mm=spacing_mm,
        origin_lps_mm=(float(x[0] - fine[2] / 2 + spacing_mm[2] / 2), float(y[0] - fine[1] / 2 + spacing_mm[1] / 2), 0.0),
        metadata={
            "format": "phantom",
            "modality": "CT",
            "kvp": 120.0,
            "slice_thickness_mm": float(spacing_mm[0]),
            "contrast_agent": None,
            "manufacturer": "volbmd",
            "manufacturer_model": "digital ESP-like phantom",
            "convolution_kernel": "smooth",
        },
        source="volbmd digital ESP-like phantom",
    )
    return EspScan(
        volume=vol,
        labels=LabelMap.on_grid_of(vol, labels_c, {lvl: verse[lvl] for lvl in levels}, source="esp labels"),
        rods=LabelMap.on_grid_of(vol, rods_c, {}, source="rod labels"),
        trabecular_mg_cm3=dens,
        rod_phantom=rod_phantom,
        gain=gain,
        offset_hu=offset_hu,
        ha_mg_cm3_per_hu=ha_mg_cm3_per_hu,
        tissue_true_hu=tissue,
    )
