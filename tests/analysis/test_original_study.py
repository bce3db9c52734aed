"""The two study presets reproduce their readings (the released scripts, the post) and name only what cannot be the
same; every other preset's deviations are named; the released probe recipe and data filter, field by field."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.config import load_analysis_config
from analysis.original_study import both_verdict_sites, deviations, released_layers, study_layers
from tasks.config import ConfigError

REASONS = ("cannot be the same because", "not reproduced because")


class QwenLikeTokenizer:
    """Stands in for Qwen2.5's tokenizer: its size, and " (" as one token."""

    def __len__(self) -> int:
        return 151665

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, Any]:
        return {"input_ids": [320] if text == " (" else list(range(len(text)))}


def test_study_layers_are_residual_25_to_36_and_released_25_to_33() -> None:
    assert study_layers(36) == tuple(range(25, 37))  # the post's decoder blocks 24..35
    assert released_layers(36) == tuple(range(25, 34))  # intervene.py's hook_layers range(24, 33)
    assert study_layers(24) == tuple(range(17, 25)) and study_layers(28) == tuple(range(20, 29))


def test_released_preset_is_the_released_scripts_field_by_field() -> None:
    cfg = load_analysis_config("study-qwen2.5-3b-released")
    p, s = cfg.probe, cfg.steering
    assert (p.method, p.source, p.require_both_verdicts) == ("released", "greedy", True)
    assert cfg.precision == "fp32" and cfg.rollout.max_new_tokens == 150 and cfg.rollout.samples == 0
    assert s.layers == tuple(range(25, 34)) and s.direction_layer is None and s.direction == "verdict"
    assert (s.mode, s.position, s.every, s.scale, s.scale_unit) == ("released", "before_paren", 3, 20.0, "absolute")
    assert s.max_new_tokens == 300 and not cfg.report.unembed_gain


def test_post_preset_is_the_posts_text() -> None:
    cfg = load_analysis_config("study-qwen2.5-3b-post")
    s = cfg.steering
    assert s.layers == tuple(range(25, 37)) and s.direction_layer is None and s.direction == "verdict"
    assert (s.mode, s.position, s.every, s.scale, s.scale_unit) == ("every_kth", "before_paren", 3, 20.0, "absolute")
    assert cfg.probe.method == "released" and not cfg.report.unembed_gain


@pytest.mark.parametrize(
    ("preset", "reading", "axes"),
    [
        (
            "study-qwen2.5-3b-released",
            "released",
            [
                "model",
                "probe schedule",
                "direction",
                "free generation direction",
                "probe sites",
                "flip test",
            ],
        ),
        (
            "study-qwen2.5-3b-post",
            "post",
            ["model", "direction", "free generation direction", "probe sites", "flip test"],
        ),
    ],
)
def test_study_presets_deviate_only_where_nothing_can_be_the_same(preset: str, reading: str, axes: list[str]) -> None:
    dev = deviations(load_analysis_config(preset), 36, tokenizer=QwenLikeTokenizer())
    assert [d.split(": ")[1] for d in dev] == axes
    assert all(d.startswith(f"{reading}: ") and any(r in d for r in REASONS) for d in dev)
    assert deviations(load_analysis_config(preset), 36, "tinyzero-qwen2.5-3b-step300", QwenLikeTokenizer()) == dev[1:]


def test_a_small_tokenizer_and_another_task_are_named() -> None:
    cfg = load_analysis_config("study-qwen2.5-3b-post")
    small = QwenLikeTokenizer()
    small.__class__ = type("Small", (QwenLikeTokenizer,), {"__len__": lambda self: 400})
    dev = deviations(cfg, 36, tokenizer=small, num_operands=(3,))
    assert any("tokenizer: Small of 400 tokens" in d and "cannot be the same because" in d for d in dev)
    assert any(d.startswith("post: task: Countdown with [3] numbers") for d in dev)
    assert any(d == "post: tokenizer: not checked (not given)" for d in deviations(cfg, 36))


def test_the_released_rule_needs_before_paren() -> None:
    with pytest.raises(ConfigError, match="steering.position: mode released needs before_paren"):
        load_analysis_config("study-qwen2.5-3b-released", ["steering.position=paren"])


@pytest.mark.parametrize(("preset", "layers"), [("qwen2.5-0.5b", 24), ("qwen2.5-1.5b", 28), ("qwen2.5-3b", 36)])
def test_qwen_presets_steer_at_the_study_depth_and_name_their_deviations(preset: str, layers: int) -> None:
    cfg = load_analysis_config(preset)
    assert cfg.steering.layers == study_layers(layers)
    dev = deviations(cfg, layers)
    assert all(d.startswith("post: ") for d in dev)  # closest to the post's reading (its layers)
    assert any("probe.method" in d for d in dev) and any("steering.scale:" in d for d in dev)
    assert not any("steering.layers" in d for d in dev)
    assert any("model depth" in d for d in dev) == (layers != 36)
    assert any("released: " in d for d in deviations(cfg, layers, reading="released"))


def test_released_recipe_defaults_are_the_released_values() -> None:
    from analysis.softmax_probe import fit_released_probes

    d = {k: v.default for k, v in inspect.signature(fit_released_probes).parameters.items()}
    assert (d["lr"], d["betas"], d["weight_decay"], d["patience"]) == (1e-4, (0.9, 0.99), 0.01, 10)
    assert d["accumulate_grad"] is False


def test_fit_layers_released_returns_the_row_difference_and_no_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis import softmax_probe
    from analysis.fixed_text.probe_fit import fit_layers

    w = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    monkeypatch.setattr(softmax_probe, "fit_released_probes", lambda x, y, **kw: (w, np.zeros((2, 2)), {}))
    wd, b = fit_layers(np.zeros((4, 2, 3)), np.array([0, 1, 0, 1]), "released", 1.0, 10)
    np.testing.assert_array_equal(wd, w[:, 1] - w[:, 0])
    assert not b.any() and b.shape == (2,)


LINES = {
    "both": "<think>\n- 3 * 5 - 1 = 14 (not 16)\n- 3 * 5 + 1 = 16 (this works)\n</think>",
    "rejects": "<think>\n- 3 * 5 - 1 = 14 (not 16)\n- 3 - 5 + 1 = -1 (not 16)\n</think>",
    "accepts": "<think>\n- 3 * 5 + 1 = 16 (this works)\n</think>",
}


def test_data_filter_drops_completions_without_both_verdicts(qwen_dir: Path) -> None:
    from analysis.fixed_text.per_checkpoint import fixed_records
    from tasks.countdown.generate import Problem
    from tasks.countdown.prompts import make_prompt
    from tests.analysis.conftest import load

    _, tok = load(qwen_dir)
    recs = [
        {"problem": 0, "numbers": [3, 5, 1], "target": 16, "kind": kind, "prompt": make_prompt((3, 5, 1), 16),
         "completion": LINES[name], "name": name}
        for name in LINES for kind in ("greedy", "sampled")
    ]  # fmt: skip
    args = ([Problem((3, 5, 1), 16)], "base", 10, 0, 0, 1, tok)

    def kept(**kw: Any) -> list[tuple[str, str]]:
        out = fixed_records(recs, recs, *args, **kw)
        return [(r["completion"], r["kind"]) for r in out if r["subset"] == "last"]

    assert len(kept()) == 6
    assert kept(source="greedy", require_both_verdicts=True) == [(LINES["both"], "greedy")]
    assert len(kept(require_both_verdicts=True)) == 2
    mask = both_verdict_sites(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 0, 0, 1]))
    assert mask.tolist() == [True, True, False, False, False]


def test_the_released_preset_accumulates_gradients_as_probe_py_did_and_says_so_otherwise() -> None:
    import dataclasses

    from analysis.fixed_text.probe_fit import released_recipe

    cfg = load_analysis_config("study-qwen2.5-3b-released")
    recipe = released_recipe(cfg.probe)
    assert recipe == {"seed": 0, "val_fraction": 0.1, "patience": 10, "max_epochs": 500, "accumulate_grad": True}
    zeroed = dataclasses.replace(cfg, probe=dataclasses.replace(cfg.probe, accumulate_grad=False))
    lines = deviations(zeroed, 36, "tinyzero-qwen2.5-3b-step300", QwenLikeTokenizer(), reading="released")
    assert any(line.startswith("released: probe.accumulate_grad: False") for line in lines)
