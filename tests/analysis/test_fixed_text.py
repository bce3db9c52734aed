"""The fixed-text stage on a random-weight Qwen2 with the tiny digit tokenizer: leakage check, lens, CIs, roles."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.capture_files import read_capture
from analysis.config import AnalysisConfig, FixedTextSettings, RolloutSettings, SteeringSettings
from analysis.fixed_text.flips import POSITIONS, accepted, flip_outcomes, rates_on, scaled_vectors, wrong_line_cases
from analysis.fixed_text.per_checkpoint import SUBSETS, fixed_checkpoint, fixed_records
from analysis.lens import lens_margin
from analysis.splits import problem_roles
from analysis.steering.evaluate import random_units
from tasks.countdown.generate import ProblemSpec, generate_problems
from tasks.countdown.prompts import make_prompt
from tasks.countdown.synth import TraceStyle, write_trace
from tests.analysis.conftest import load
from train.base_tokenizer import verdict_token_ids

SPEC = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=20, operators=("+", "-", "*", "/"))


def _rollouts(problems: list, seed: int) -> list[dict]:
    rng = random.Random(seed)
    style = TraceStyle(max_wrong=3, slip_rate=0.2, verdict_noise=0.3)
    return [
        {
            "problem": i,
            "numbers": list(p.numbers),
            "target": p.target,
            "kind": "greedy",
            "prompt": make_prompt(p.numbers, p.target),
            "completion": write_trace(p, rng, style, SPEC.operators).completion,
        }
        for i, p in enumerate(problems)
    ]


@pytest.fixture(scope="module")
def fixed(digit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    model, tok = load(digit_dir)
    problems = generate_problems(SPEC, 30, seed=0)
    texts = fixed_records(_rollouts(problems, 1), _rollouts(problems, 2), problems, "base", 30, 30, 0, 2, tok)
    cfg = AnalysisConfig(
        rollout=RolloutSettings(problems=30),
        steering=SteeringSettings(problems=10),
        fixed=FixedTextSettings(bootstrap=50),
    )
    roles = problem_roles(30, 0.2, 0.4, 0)
    capture_dir = tmp_path_factory.mktemp("fixed") / "capture"
    arrays, summary = fixed_checkpoint(model, tok, texts, roles, cfg, capture_dir)
    return model, tok, texts, roles, cfg, arrays, summary, read_capture(capture_dir)


def test_text_set_has_all_subsets_and_the_pairs_do_not_leak(fixed: tuple) -> None:
    _, _, texts, _, _, arrays, summary, _ = fixed
    assert {t["subset"] for t in texts} == set(SUBSETS)
    assert all(summary["sites"][s] > 0 for s in SUBSETS)
    # the two texts of a pair are identical up to "(", so their activations there are too (float16 storage)
    assert summary["own_verdict"]["pair_max_diff"] < 1e-2
    leak = [
        r["probe"]["auroc"]["value"]
        for r in summary["probes"]
        if r["kind"] == "paren" and r["label"] == "verdict" and r["subset"] == "counterfactual" and r["fit"]
    ]
    assert leak and all(abs(v - 0.5) < 0.02 for v in leak)


def test_lens_at_the_output_is_the_models_own_next_token_preference(fixed: tuple) -> None:
    model, tok, texts, _, _, arrays, _, acts = fixed
    this_id, not_id = verdict_token_ids(tok)
    assert tok.decode([this_id]).strip().startswith("t") and tok.decode([not_id]).strip().startswith("n")
    r = texts[arrays["record"][0]]
    enc = tok(r["prompt"] + r["completion"], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**enc).logits[0, arrays["paren_pos"][0]].float()
    want = float(logits[this_id] - logits[not_id])
    last = acts.layer("paren", acts.n_layers - 1)[:1, None].astype(np.float32)
    got = lens_margin(model, last, (this_id, not_id))[0, -1]
    assert got == pytest.approx(want, abs=2e-2 * max(1.0, abs(want)))
    assert arrays["margin"][0, -1] == pytest.approx(got, abs=1e-5)
    assert not any(k.startswith("act_") for k in arrays)  # activations stay on disk, not in fixed.npz


def test_every_reported_number_comes_from_report_problems_with_an_interval(fixed: tuple) -> None:
    _, _, _, roles, _, arrays, summary, _ = fixed
    assert set(np.unique(roles)) == {"calibration", "train", "report"}
    rows = [r for r in summary["probes"] if r["fit"] and r["kind"] == "paren" and r["label"] == "truth"]
    assert rows
    n_report = int(sum((roles[p] == "report") for p in arrays["problem"][arrays["subset"] == 1]))
    cf = next(r for r in rows if r["subset"] == "counterfactual")
    assert cf["probe"]["n"] == n_report
    ci = cf["probe"]["auroc"]
    assert ci["lo"] <= ci["value"] <= ci["hi"] and ci["groups"] == int((roles == "report").sum())
    by_cat = summary["own_verdict"]["by_category"]
    assert set(by_cat) == {"right", "wrong", "slip", "misstated"}
    assert all(0 <= v["value"] <= 1 for v in by_cat.values())


def test_flip_cases_are_cut_where_configured_and_zero_scale_flips_nothing(fixed: tuple) -> None:
    model, tok, texts, roles, cfg, arrays, _, _ = fixed
    units = {2: np.eye(model.config.hidden_size)[0]}
    for pos in POSITIONS:
        cases = wrong_line_cases(texts, roles, "report", pos, 10)
        assert cases and all(roles[c.problem] == "report" for c in cases)
        assert all(c.prefix.endswith("(") == (pos == "paren") for c in cases)
        rands = [scaled_vectors(r, 0.0, None) for r in random_units(units, 0, 5)]
        out = flip_outcomes(model, tok, cases, {"own": scaled_vectors(units, 0.0, None)}, rands, 6, 8)
        assert out["accept"]["own"] == out["unsteered"] and all(r == out["unsteered"] for r in out["random"])
        res = rates_on(out, np.asarray(out["unsteered"]) == 0, 50)
        assert res["own"]["value"] in (0.0, None) and res["random"]["value"] in (0.0, None)
    c = wrong_line_cases(texts, roles, "report", "before_paren", 1)[0]
    assert accepted(c, "! Yes, we got it!") and accepted(c, " (this works)") and not accepted(c, " (not 5)")
    line = c.prefix[c.line_start :]
    expr, stated = line[2:].split(" = ")[0], line.rsplit(" = ", 1)[1]
    assert accepted(c, f"! Yes, we got it! {expr} = {stated}.")  # the study's restated shape counts as a flip


def test_rates_are_on_the_fixed_line_set_whatever_a_checkpoint_rejects() -> None:
    """The denominator is chosen once (the first checkpoint's rejected lines): a later checkpoint that accepts some
    of them unsteered keeps them in its denominator, so rates at two steps are on the same lines."""
    first = {
        "problems": [0, 1, 2, 3],
        "unsteered": [0, 0, 1, 0],
        "accept": {"final": [1, 0, 1, 0]},
        "random": [[0] * 4],
    }
    later = {
        "problems": [0, 1, 2, 3],
        "unsteered": [1, 0, 0, 0],
        "accept": {"final": [1, 1, 0, 0]},
        "random": [[0] * 4],
    }
    fixed_set = np.asarray(first["unsteered"]) == 0
    a, b = rates_on(first, fixed_set, 50), rates_on(later, fixed_set, 50)
    assert a["n"] == b["n"] == 3
    assert a["final"]["value"] == pytest.approx(1 / 3) and b["final"]["value"] == pytest.approx(2 / 3)
    assert b["unsteered"]["value"] == pytest.approx(1 / 3)
    every = rates_on(later, np.ones(4, bool), 50)
    assert every["n"] == 4 and every["final"]["value"] == pytest.approx(0.5)


def test_fixed_checkpoint_stores_controls_scores_and_shuffle_draws(fixed: tuple) -> None:
    model, tok, _, _, cfg, arrays, summary, acts = fixed
    d = model.config.hidden_size
    assert arrays["d_logit"].shape == (d,) and arrays["d_meandiff"].shape == (acts.n_layers, d)
    assert arrays["d_parity"].shape == (acts.n_layers, d) and arrays["resid_norm"].shape == (acts.n_layers,)
    assert np.all(arrays["resid_norm"] > 0)
    n = len(arrays["problem"])
    assert arrays["s_paren_verdict"].shape == (n, acts.n_layers)
    rows = [r for r in summary["probes"] if r["fit"] and r["kind"] == "paren" and r["subset"] == "last"]
    draws = {r["label"]: len(r["shuffled"]["auroc_draws"]) for r in rows if "auroc" in r["shuffled"]}
    assert draws["verdict"] == cfg.fixed.shuffles and all(n == 1 for k, n in draws.items() if k != "verdict")
    with_lens = [r for r in rows if r["label"] == "verdict" and r["probe_minus_lens"]["value"] is not None]
    assert with_lens and all("calibration" in r for r in with_lens)


def test_headline_layer_is_chosen_on_calibration_rows_only() -> None:
    from analysis.fixed_text.per_run import choose_layer

    def row(layer: int, probe: float, lens: float) -> dict:
        return {"kind": "paren", "label": "verdict", "subset": "last", "layer": layer,
                "calibration": {"probe": probe, "lens": lens},
                "probe": {"auroc": {"value": 1.0 - layer / 10}}}  # fmt: skip

    rows = [row(0, 0.6, 0.5), row(1, 0.9, 0.6), row(2, 0.95, 0.9), row(3, 0.99, 0.99)]
    assert choose_layer(rows, 3) == (1, choose_layer(rows, 3)[1])
    assert choose_layer([], 3)[0] == 3
    # a layer at chance (probe = lens = 0.5, gap exactly 0) does not beat layers that read the verdict as the lens does
    flat = [row(0, 0.5, 0.5), row(1, 0.99, 0.995), row(2, 0.99, 0.992), row(3, 0.99, 0.999)]
    assert choose_layer(flat, 3)[0] == 2
    layer, why = choose_layer([row(0, 0.5, 0.5), row(1, 0.55, 0.5)], 3)
    assert layer == 3 and "no layer" in why


def test_scale_choice_smallest_hit_else_best_else_largest() -> None:
    from analysis.fixed_text.flips import choose_scale

    def sweep(rates: list[float]) -> list[dict]:
        return [{"scale": s, "final": {"value": r}} for s, r in zip([0.0, 2.0, 4.0, 8.0], rates, strict=True)]

    assert choose_scale(sweep([0, 0.2, 0.6, 0.9]), "final", 0.5) == 4.0
    assert choose_scale(sweep([0, 0.3, 0.3, 0.1]), "final", 0.5) == 2.0
    assert choose_scale(sweep([0, 0, 0, 0]), "final", 0.5) == 8.0


def test_checkpoints_that_wrote_no_paren_still_get_every_fixed_text_number(digit_dir: Path, tmp_path: Path) -> None:
    """A checkpoint whose own rollouts have no "(" sites (an early real-model checkpoint) still reads the
    counterfactual lines: its own verdict, the content/position effects and the stated/truth probes exist."""
    model, tok = load(digit_dir)
    problems = generate_problems(SPEC, 30, seed=0)
    bare = [{**r, "completion": "\nI guess 1 + 2.\n</think>\n<answer> 1 + 2 </answer>"} for r in _rollouts(problems, 1)]
    texts = fixed_records(bare, bare, problems, "base", 30, 30, 0, 2, tok)
    assert {t["subset"] for t in texts} == {"counterfactual"}
    cfg = AnalysisConfig(
        rollout=RolloutSettings(problems=30),
        steering=SteeringSettings(problems=10),
        fixed=FixedTextSettings(bootstrap=50),
    )
    arrays, summary = fixed_checkpoint(model, tok, texts, problem_roles(30, 0.2, 0.4, 0), cfg, tmp_path / "cap")
    assert summary["sites"]["last"] == 0 and summary["sites"]["counterfactual"] > 0
    assert not np.any(arrays["w_paren_verdict"])  # no rollout verdicts to fit on: reported as not fit
    assert any(r["fit"] for r in summary["probes"] if r["label"] == "truth")
    ov = summary["own_verdict"]
    assert ov["content_effect"]["value"] is not None and ov["position_effect"]["positions"] == [0, 2]


def test_probes_fitted_layer_chunk_by_chunk_equal_one_chunk(fixed: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large model's fixed-text capture is read a few layers at a time (CHUNK_BYTES); the probes and directions
    must not depend on how many layers a chunk holds. The capture on disk is reused, not recomputed."""
    import analysis.fixed_text.per_checkpoint as fc

    model, tok, texts, roles, cfg, arrays, summary, acts = fixed
    monkeypatch.setattr(fc, "CHUNK_BYTES", 1)  # one layer per chunk
    again, summary2 = fixed_checkpoint(model, tok, texts, roles, cfg, acts.dir)
    for k in (k for k in arrays if k.startswith(("w_", "b_"))):
        assert np.array_equal(arrays[k], again[k]), k
    assert [r.get("probe") for r in summary["probes"]] == [r.get("probe") for r in summary2["probes"]]
    assert np.allclose(arrays["margin"], again["margin"], atol=1e-6)


def test_an_empty_fixed_text_set_is_one_error_naming_the_fields(digit_dir: Path, tmp_path: Path) -> None:
    """No counterfactual lines on report problems (here: no problems at all) stops the stage before any model is
    loaded, with the fields to change."""
    from analysis.context import RunContext
    from analysis.fixed_text.per_run import run_fixed
    from tasks.config import ConfigError

    class NoRollouts(RunContext):
        def rollouts(self, step: int, path: Path) -> tuple[list, str]:
            return [], f"rollouts-{step}"

    cfg = AnalysisConfig(
        rollout=RolloutSettings(problems=30),
        steering=SteeringSettings(problems=10),
        fixed=FixedTextSettings(bootstrap=50),
    )
    ctx = NoRollouts(cfg, tmp_path, [], "base", problem_roles(30, 0.2, 0.4, 0))
    with pytest.raises(ConfigError, match=r"fixed\.counterfactual_problems or rollout\.problems") as e:
        run_fixed(ctx, [(0, digit_dir), (5, digit_dir)])
    assert "has 0 texts" in str(e.value) and "\n" not in str(e.value)
