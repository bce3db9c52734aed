"""The analysis config: presets load, every bad field is named before any model is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.config import load_analysis_config
from tasks.config import ConfigError


@pytest.mark.parametrize(
    "preset",
    ["tiny", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "study-qwen2.5-3b-released", "study-qwen2.5-3b-post"],
)
def test_presets_load(preset: str) -> None:
    cfg = load_analysis_config(preset)
    assert cfg.steering.layers and cfg.rollout.problems >= cfg.steering.problems


def test_study_presets_are_the_two_readings() -> None:
    released = load_analysis_config("study-qwen2.5-3b-released").steering
    post = load_analysis_config("study-qwen2.5-3b-post").steering
    assert released.layers == tuple(range(25, 34)) and released.mode == "released"
    assert post.layers == tuple(range(25, 37)) and post.mode == "every_kth" and post.position == "before_paren"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["steering.scale_s=[1]"], "Did you mean 'steering.scales'"),
        (["steering.layers=[-1]"], "steering.layers"),
        (["steering.every=0"], "steering.every"),
        (["steering.problems=500"], "steering.problems"),
        (["probe.test_fraction=1.5"], "probe.test_fraction"),
        (["rollout.samples=two"], "rollout.samples: expected an integer"),
        (["steering.mode=sometimes"], "steering.mode"),
        (["probe.calibration_fraction=0"], "probe.calibration_fraction: 0 leaves the calibration split empty"),
        (["rollout.gpu_memory_share=1.5"], "rollout.gpu_memory_share: expected a share"),
        (["probe.solver=newton"], "probe.solver"),
        (["rollout.temperature=0"], r"rollout.temperature: expected > 0 for the 2 sampled .* got 0.0$"),
    ],
)
def test_bad_fields_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_analysis_config("tiny", overrides)


def test_hub_presets_batch_probes_and_leave_gpu_room_tiny_keeps_reference() -> None:
    for preset in ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "study-qwen2.5-3b-released", "study-qwen2.5-3b-post"):
        cfg = load_analysis_config(preset)
        assert cfg.probe.solver == "torch" and cfg.rollout.gpu_memory_share == 0.8
    cue = load_analysis_config("tiny-cue")
    assert cue.probe.solver == "sklearn" and cue.rollout.gpu_memory_share is None
    tiny = load_analysis_config("tiny")  # the default: tiny-cue's analysis, every layer's probe in one batched fit
    assert tiny.probe.solver == "torch" and tiny.steps == (0, 6, 12, 36) and tiny.rollout.gpu_memory_share is None


def test_layers_checked_against_the_model() -> None:
    cfg = load_analysis_config("tiny", ["steering.layers=[2,9]"])
    with pytest.raises(ConfigError, match=r"layers \[9\] do not exist; this model has residual layers 0..4"):
        cfg.check_layers(4)


def test_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    from analysis.analyse_run import find_run

    with pytest.raises(ConfigError, match="no run with checkpoints"):
        find_run(load_analysis_config("tiny", [f"output_root={tmp_path}"]))
    with pytest.raises(ConfigError, match="has no step_<N> checkpoints"):
        find_run(load_analysis_config("tiny", [f"run={tmp_path}"]))
