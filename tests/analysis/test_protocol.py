"""The study's preset reproduces its protocol; every other preset's deviations are named."""

from __future__ import annotations

import pytest

from analysis.config import load_analysis_config
from analysis.protocol import deviations, study_layers


def test_study_layers_are_residual_25_to_36_and_keep_the_depth_fraction() -> None:
    assert study_layers(36) == tuple(range(25, 37))  # the study's decoder blocks 24..35
    assert study_layers(24) == tuple(range(17, 25)) and study_layers(28) == tuple(range(20, 29))


def test_the_study_preset_has_no_deviation() -> None:
    assert deviations(load_analysis_config("study-qwen2.5-3b"), 36) == []


@pytest.mark.parametrize(("preset", "layers"), [("qwen2.5-0.5b", 24), ("qwen2.5-1.5b", 28), ("qwen2.5-3b", 36)])
def test_qwen_presets_steer_at_the_study_depth_and_name_their_deviations(preset: str, layers: int) -> None:
    cfg = load_analysis_config(preset)
    assert cfg.steering.layers == study_layers(layers)
    dev = deviations(cfg, layers)
    assert any(d.startswith("probe.method") for d in dev) and any(d.startswith("steering.scale") for d in dev)
    assert not any(d.startswith("steering.layers") for d in dev)
    assert any(d.startswith("model depth") for d in dev) == (layers != 36)
