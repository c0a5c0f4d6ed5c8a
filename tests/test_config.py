"""Configs: shipped YAML validates; errors name the file and the field."""

from __future__ import annotations

from importlib import resources

import pytest

from volbmd.config import LabelScheme, PipelineConfig, load_config, load_yaml_model
from volbmd.errors import ConfigError
from volbmd.labels import LEVELS, load_label_scheme


def test_every_shipped_yaml_validates():
    root = resources.files("volbmd_configs")
    assert isinstance(load_yaml_model(PipelineConfig, root / "pipeline" / "default.yaml"), PipelineConfig)
    for name in ("verse", "totalseg"):
        assert isinstance(load_yaml_model(LabelScheme, root / "labels" / f"{name}.yaml"), LabelScheme)


def test_label_schemes_match_published_ids():
    verse = load_label_scheme("verse")
    assert verse["C1"] == 1 and verse["T1"] == 8 and verse["T12"] == 19 and verse["L1"] == 20
    assert verse["L6"] == 25 and verse["T13"] == 28
    assert [verse[f"C{i}"] for i in range(1, 8)] + [verse[f"T{i}"] for i in range(1, 13)] + [
        verse[f"L{i}"] for i in range(1, 7)
    ] == list(range(1, 26))
    ts = load_label_scheme("totalseg")
    assert (ts["S1"], ts["L5"], ts["L1"], ts["T12"], ts["T11"], ts["C1"]) == (26, 27, 31, 32, 33, 50)
    assert all(name in LEVELS for name in verse) and all(name in LEVELS for name in ts)


def test_unknown_scheme():
    with pytest.raises(ConfigError, match="unknown label scheme"):
        load_label_scheme("nope")


def test_user_file_errors_name_file_and_field(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("measurement:\n  roi: sphere\n  cortical_depth_mm: -3\n  colour: red\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text and "measurement.roi" in text and "measurement.colour" in text
    assert "measurement.cortical_depth_mm" in text


def test_user_file_overrides_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("measurement:\n  roi: mid_slab_ellipse\n")
    cfg = load_config(path, overrides={"measurement": {"cortical_depth_mm": 4}})
    assert cfg.measurement.roi == "mid_slab_ellipse" and cfg.measurement.cortical_depth_mm == 4
    assert cfg.segmentation.label_scheme == "verse"


def test_bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("measurement: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(path)


def test_the_shipped_config_runs_the_classical_segmenter_on_its_own_defaults():
    """The pipeline (the CLI, ``volbmd.analyze``) and the Python API (``segment_spine``) segment
    alike: the shipped default.yaml overrides none of the classical segmenter's tuned defaults. It
    once kept an 'example' ``discs.period_penalty: 2.0`` after the code's default became 3.0, so
    the pipeline ran on a value that tools/eval_segmentation.py and the segment_spine tests did not
    (the default is 2.0 again: what every published bench figure was measured with)."""
    from volbmd.segment.classical.options import ClassicalOptions

    assert load_config(None).segmentation.classical == ClassicalOptions()
