"""Every tunable number of the classical segmenter, named, typed and validated.

``ClassicalOptions`` is what ``segmentation.classical`` in the pipeline config holds (all keys
optional); the defaults are the values tuned on the development CTs. Lengths are in mm, areas in
mm², volumes in mm³, attenuation in HU. This module imports pydantic only, so the config can
validate it without loading the segmenter.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ClassicalOptions",
    "LocaliseOptions",
    "CanalOptions",
    "DiscOptions",
    "OutlineOptions",
    "GrowthOptions",
    "LevelOptions",
    "QualityOptions",
]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocaliseOptions(_Options):
    """The working grid, the patient and the vertebral bodies in front of the canal."""

    work_in_plane_mm: float = Field(1.5, gt=0, description="in-plane block size of the localisation grid")
    work_slice_mm: float = Field(2.0, gt=0, description="slices thinner than this are averaged in blocks")
    patient_hu: float = Field(-500.0, description="the patient (and not air) is above this")
    bone_low_hu: float = Field(100.0, description="bone outline of the localisation grid ...")
    bone_high_hu: float = Field(200.0, description="... connected to voxels above this (cortex)")
    posterior_wall_max_mm: float = Field(
        20.0, gt=0, description="the body's posterior wall lies within this of the canal centre"
    )
    body_gap_mm: float = Field(1.5, ge=0, description="a gap in the bone this long ends the body anteriorly")
    body_depth_max_mm: float = Field(60.0, gt=0, description="longer bone runs in front of the canal are not one body")
    waist_fraction: float = Field(
        0.5, gt=0, lt=1, description="a bone run in front of the canal narrower than this share of the body behind it ..."
    )
    waist_regrow_mm: float = Field(8.0, ge=0, description="... that widens again by this much is the body and a vessel")
    waist_min_depth_mm: float = Field(12.0, ge=0, description="... and lies this far in front of the posterior wall")
    waist_agree_mm: float = Field(
        4.5, ge=0, description="... and a neighbouring slice has a waist this close (a vessel runs along the spine)"
    )
    half_depth_range_mm: tuple[float, float] = (7.0, 22.0)
    running_window_mm: float = Field(60.0, gt=0, description="window of the running medians along the spine")
    smooth_mm: float = Field(8.0, gt=0, description="Gaussian smoothing of the centre line along the spine")
    line_extend_mm: float = Field(
        12.0, ge=0, description="the centre line runs on this far past the track (within the scan)"
    )
    extend_radius_mm: float = Field(
        15.0, gt=0, description="past the canal's ends the track follows the thickest bone this near"
    )
    extend_min_thickness_mm: float = Field(3.0, gt=0)
    extend_max_gap_mm: float = Field(25.0, gt=0, description="the extended track stops after this long without bone")
    pelvis_width_mm: float = Field(
        140.0, gt=0, description="bone this wide under the last body is the pelvis: that body is S1"
    )
    pelvis_lateral_mm: float = Field(40.0, gt=0, description="the pelvis's bone lies this far beside the body's centre")
    pelvis_bone_hu: float = Field(
        270.0, description="... and holds cortical bone: a 90th percentile of at least this (enhanced organs do not)"
    )
    lung_hu: float = Field(-500.0, description="air in the lungs reads below this")
    lung_lateral_mm: tuple[float, float] = Field(
        (25.0, 90.0), description="the lungs beside the lowest body lie this far to either side of its centre"
    )
    lung_ap_mm: float = Field(30.0, gt=0, description="... and within this of it front and back")
    lung_height_mm: float = Field(20.0, gt=0, description="... over this height up from the lowest body")
    lung_max_share: float = Field(
        0.25, ge=0, le=1, description="more air than this share beside the lowest body: a chest, never the sacrum"
    )


class CanalOptions(_Options):
    """The spinal canal: a dark hole in a bony ring, followed from slice to slice."""

    smooth_mm: float = Field(1.5, gt=0, description="in-plane Gaussian smoothing before thresholding")
    ring_thresholds_hu: tuple[float, ...] = Field(
        (110.0, 160.0, 220.0), min_length=1, description="bone thresholds tried for the ring (low for osteoporotic bone)"
    )
    closing_mm: float = Field(3.0, ge=0, description="gaps in the ring up to about twice this are closed")
    area_mm2: tuple[float, float] = (40.0, 600.0)
    max_content_hu: float = Field(130.0, description="the canal's mean is below this (and 40 HU under the ring threshold)")
    min_content_hu: float = Field(-60.0)
    midline_mm: float = Field(50.0, gt=0, description="candidates lie within this of the patient's midline")
    anterior_fraction: float = Field(0.3, ge=0, lt=1, description="... and behind this fraction of the patient's depth")
    max_skip_mm: float = Field(40.0, gt=0, description="the path may bridge slices without a candidate over this length")
    max_slope: float = Field(0.7, gt=0, description="in-plane movement per mm along the spine (plus 4 mm)")
    reward_cap_mm: float = Field(10.0, gt=0, description="a step along the path earns its length up to this ...")
    gap_penalty: float = Field(0.3, ge=0, description="... and loses this per mm beyond it")
    move_penalty: float = Field(0.2, ge=0, description="cost per mm of in-plane movement")
    min_length_mm: float = Field(12.0, gt=0, description="a shorter path is not a spine")


class DiscOptions(_Options):
    """Discs along the straightened spine, chosen jointly by dynamic programming."""

    step_mm: float = Field(1.0, gt=0, description="sampling step along the centre line")
    core_fraction: float = Field(0.6, gt=0, le=1, description="profile disk radius as a fraction of the body's half depth")
    core_min_radius_mm: float = Field(5.0, gt=0)
    endplate_fraction: float = Field(
        0.3, gt=0, lt=0.5, description="a disc's endplates lie within this share of the local period"
    )
    endplate_reach_range_mm: tuple[float, float] = (4.0, 12.0)
    band_half_mm: float = Field(3.0, gt=0, description="half width of a thin disc's bright endplate band")
    min_score: float = Field(0.04, ge=0, description="weaker troughs (as a share of the profile's spread) are no candidates")
    min_separation_mm: float = Field(5.0, gt=0)
    period_range_mm: tuple[float, float] = (14.0, 50.0)
    period_window_mm: float = Field(110.0, gt=0, description="window of the local period (autocorrelation)")
    period_min_window_share: float = Field(
        0.75,
        ge=0,
        le=1,
        description="windows cut shorter than this share of period_window_mm by an end of the line "
        "give no period (the ends take the nearest whole window's), unless none is whole",
    )
    min_period_strength: float = Field(0.15, ge=0, description="weaker autocorrelation is no period at all")
    strong_period_strength: float = Field(0.35, ge=0, description="a period this clear is trusted as it is")
    period_tolerance: float = Field(0.25, ge=0, description="a weak period this close to the nearest clear one is kept")
    depth_to_period: float = Field(1.0, gt=0, description="fallback period: this times the body's depth")
    period_penalty: float = Field(2.0, ge=0, description="cost of (log(spacing / period))²")
    disc_cost: float = Field(
        0.15, ge=0, description="cost of each disc (score units): more discs are not better in themselves"
    )
    sign_switch_cost: float = Field(
        0.1,
        ge=0,
        description="cost (score units) of two neighbouring discs of different kinds (a dark trough next to a bright "
        "band), in full on slices of sign_switch_slices_mm[1] or thicker",
    )
    sign_switch_slices_mm: tuple[float, float] = Field(
        (2.0, 4.0),
        description="slices up to the first resolve each disc (whether it shows dark or as a band is its own: no cost); "
        "from the second, they blur every thin disc alike (the full cost); blended between",
    )
    spacing_range: tuple[float, float] = Field((0.5, 2.2), description="allowed spacing as multiples of the local period")
    alternative_window: float = Field(
        0.25, gt=0, lt=0.5, description="a disc's alternative lies beyond this share of the local period from it"
    )
    max_tilt_deg: float = Field(30.0, ge=0, description="disc planes tilt up to this (sagittal), a third of it coronally")
    max_shift_mm: float = Field(4.0, ge=0)
    trough_reach_mm: float = Field(
        8.0, gt=0, description="a disc plane's trough lies below the endplate maxima within this either side"
    )
    tilt_cost_per_deg: float = Field(
        0.2, ge=0, description="each degree of a plane's tilt from the centre line costs this much trough depth (SE)"
    )
    shift_cost_per_mm: float = Field(0.2, ge=0, description="each mm of a plane's shift costs this much depth (SE)")
    clear_trough_se: tuple[float, float] = Field(
        (6.0, 12.0),
        description="a disc plane follows its fitted tilt and shift in full where the trough between the endplates "
        "is this deep (in standard errors of its HU) at the upper value, not at all at the lower, blended between",
    )
    min_segment_mm: float = Field(8.0, ge=0, description="shorter pieces at the ends of the track are dropped")


class OutlineOptions(_Options):
    """The full-resolution bone outline of the vertebrae."""

    label_low_hu: float = Field(100.0, description="outline of the final masks")
    bone_high_hu: float = Field(200.0, description="... connected to cortex above this")
    rim_hu: float = Field(150.0, description="a surface voxel dimmer than this is partial volume, not bone")
    min_hole_hu: float = Field(30.0, description="a hole behind the body's core darker than this is not marrow")
    ring_gap_mm: float = Field(3.0, ge=0, description="body rings with gaps up to this are closed")
    canal_core_mm: float = Field(4.0, ge=0, description="this near the followed canal centre is never vertebra")
    vessel_window_mm: float = Field(5.0, gt=0)
    vessel_min_hu: float = Field(120.0, description="contrast-filled vessels: brighter than this on average ...")
    vessel_max_sd_hu: float = Field(20.0, gt=0, description="... and more homogeneous than this")
    vessel_noise_factor: float = Field(1.3, gt=0, description="... or than this times the scan's noise (SD of muscle)")
    vessel_front_noise_factor: float = Field(
        1.7,
        gt=0,
        description="... or, in front of the body, than this times the scan's noise (an aorta against the "
        "body, its contrast still mixing or its wall calcified: a CTA's T12 took in part of it)",
    )
    vessel_front_texture_hu: float = Field(
        50.0,
        ge=0,
        description="... or, in front of the body, an SD of up to this beyond the scan's noise (added in "
        "quadrature): the aorta's own texture does not fall with the noise, so a smoother reconstruction "
        "of the same scan keeps it a vessel",
    )
    vessel_front_share: float = Field(
        0.6, ge=0, description="'in front of the body': farther in front of its centre than this share of its half depth"
    )
    vessel_min_volume_mm3: float = Field(500.0, ge=0)
    carve_reach_mm: float = Field(12.0, gt=0, description="disc carving looks this far along the disc's normal")
    carve_min_contrast_hu: float = Field(50.0, ge=0, description="endplates must be this much brighter than the disc")
    carve_min_endplate_hu: float = Field(
        50.0,
        description="the endplate peaks of the profile must reach this (else the profile is not across a "
        "body: fat or lung around a misplaced point, where a noise trough once carved 18 mm of bone)",
    )
    carve_max_thickness: float = Field(
        0.6,
        gt=0,
        description="a disc is at most this share of the body's half depth "
        "thick (lumbar about 0.45, thoracic less); a wider dark stretch is a body's marrow "
        "(on 3 mm slices of a CTA it once took T8's whole body)",
    )
    carve_tile_mm: float = Field(8.0, gt=0)
    carve_max_shift_mm: float = Field(4.0, ge=0)
    carve_marrow_margin_hu: float = Field(40.0, ge=0, description="marrow this much darker than the disc is kept")


class GrowthOptions(_Options):
    """The geodesic growth that hands each arch to its body, and the ribs beside it."""

    lateral_mm: float = Field(55.0, gt=0, description="vertebrae end this far from the centre line")
    rib_lateral_mm: float = Field(38.0, gt=0, description="... rib-bearing ones this far")
    foreign_margin_mm: float = Field(15.0, ge=0, description="bone running this far past the lateral limit is rib or pelvis")
    front_factor: float = Field(
        1.2,
        gt=0,
        description="nothing this many half depths (plus front_margin_mm) in front of the body's centre is vertebra or rib",
    )
    front_margin_mm: float = Field(6.0, ge=0, description="room for anterior osteophytes")
    arch_hu: float = Field(600.0, description="bone dimmer than this costs more to cross")
    dim_cost: float = Field(4.0, ge=0)
    up_factor: float = Field(2.0, gt=0, description="climbing costs this much more (processes hang down)")
    max_path_cost: float = Field(150.0, gt=0)
    rib_reach_mm: float = Field(4.0, gt=0, description="pelvic bone this near the sacral vertebra is no rib")
    rib_head_zone_mm: float = Field(40.0, gt=0, description="rib heads and necks lie this near the centre line")
    rib_head_band_mm: float = Field(3.0, gt=0, description="a rib's head: its part within this of its most medial point")
    rib_head_touch_mm: float = Field(
        3.0,
        gt=0,
        description="a rib's head meets the vertebrae whose grown bone lies this near it (else the disc planes say)",
    )
    rib_head_share: float = Field(
        0.25, gt=0, le=1, description="... and belongs to the lowest one with this share of the most-touched one's bone"
    )
    rib_min_contact_mm3: float = Field(30.0, ge=0, description="smaller rib pieces near the spine are ignored")
    rib_max_radius_mm: float = Field(9.0, gt=0, description="thicker lateral bone (its largest inscribed radius) is no rib")


class LevelOptions(_Options):
    """Naming the vertebrae from the landmarks in view."""

    rib_beside_thoracic_mm3: float = Field(
        500.0, ge=0, description="this much rib beside the lowest vertebra makes a field of view thoracic"
    )
    first_rib_min_above: int = Field(1, ge=1, description="rib-free vertebrae needed above the first rib to call it T1")
    cervical_max_lung_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="a rib-free vertebra with more lung beside it is thoracic with its ribs missed, not C7",
    )
    lumbar_max_lung_share: float = Field(
        0.6,
        ge=0,
        le=1,
        description="a rib-free vertebra below the ribs with more lung beside it is thoracic (L1 had up to 0.39)",
    )
    weak_only_confidence: float = Field(
        0.45, ge=0, le=1, description="naming confidence at most, when only weak landmarks agree with the names"
    )
    sacrum_weight: float = Field(6.0, ge=0)
    rib_weight: float = Field(1.0, ge=0, description="per vertebra whose rib state fits its name")
    end_rib_weight: float = Field(3.0, ge=0, description="first and last rib-bearing vertebra where the name says")


class QualityOptions(_Options):
    """Plausibility of each vertebra found."""

    spacing_ratio_max: float = Field(
        1.6, gt=1, description="a vertebra this much taller or shorter than its neighbours is suspect"
    )
    min_height_mm: float = Field(8.0, gt=0)
    max_height_mm: float = Field(60.0, gt=0)
    volume_factor: float = Field(
        2.5, gt=1, description="a vertebra this far outside the typical volume of its level is suspect"
    )
    uncertain_margin: float = Field(
        0.15,
        ge=0,
        description="a disc whose best alternative chain scores within this is uncertain (score units; a 3 mm copy "
        "of the CTA chose a chain half a vertebra off at its bottom with the right one 0.10 behind)",
    )


class ClassicalOptions(_Options):
    """All options of the classical segmenter (``segmentation.classical`` in the pipeline config)."""

    localise: LocaliseOptions = LocaliseOptions()
    canal: CanalOptions = CanalOptions()
    discs: DiscOptions = DiscOptions()
    outline: OutlineOptions = OutlineOptions()
    growth: GrowthOptions = GrowthOptions()
    levels: LevelOptions = LevelOptions()
    quality: QualityOptions = QualityOptions()

    @model_validator(mode="after")
    def _consistent(self) -> ClassicalOptions:
        lo, hi = self.discs.period_range_mm
        if not 0 < lo < hi:
            raise ValueError("discs.period_range_mm must be increasing and positive")
        a, b = self.canal.area_mm2
        if not 0 <= a < b:
            raise ValueError("canal.area_mm2 must be increasing")
        return self
