"""Value patching on a random-weight Qwen2 with the tiny digit tokenizer: pairs, alignment, and the two layers where
the effect must be exactly zero (a test that would catch a patch written at the wrong positions or layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.fixed_text.patching import _cut, patch_pairs, patch_summary, value_patching
from analysis.fixed_text.per_checkpoint import fixed_records
from analysis.splits import problem_roles
from tasks.countdown.counterfactual import LineStyle
from tasks.countdown.generate import ProblemSpec, generate_problems
from tests.analysis.conftest import load

SPEC = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=12, operators=("+", "-"))


@pytest.fixture(scope="module")
def patched(digit_dir: Path) -> tuple:
    model, tok = load(digit_dir)
    problems = generate_problems(SPEC, 12, seed=0)
    style = LineStyle(("+", "-"), chain=True)
    texts = fixed_records([], [], problems, "base", 0, 12, 0, 2, tok, style=style)
    return model, tok, texts, value_patching(model, tok, texts, batch=7, ends=True)


def test_pairs_are_a_right_line_and_a_slip_stating_the_same_value(patched: tuple) -> None:
    _, _, texts, _ = patched
    pairs = patch_pairs(texts)
    assert len(pairs) == 12 * 3  # every problem at positions 0..2
    for p, i, j in pairs:
        a, b = texts[i], texts[j]
        assert (a["category"], b["category"]) == ("right", "slip") and a["problem"] == b["problem"] == p
        ca, sa, ea = _cut(a)
        cb, sb, eb = _cut(b)
        assert ca.endswith(" (") and cb.endswith(" (")
        assert ca[sa:ea] == cb[sb:eb] == str(a["target"])  # the stated value, the same in both
        assert ca[:sa] != cb[:sb]  # different arithmetic before it
        assert " = " in ca[ca.rindex("\n") :] and ca[ca.rindex("\n") :].count("=") == 2  # chained: one step per "="


def test_patch_is_a_no_op_at_the_embeddings_and_after_the_last_block(patched: tuple) -> None:
    model, _, _, rows = patched
    p = np.asarray(rows["p_patched"])
    right = np.asarray(rows["p_right"])
    assert p.shape == (36, model.config.num_hidden_layers + 1)
    np.testing.assert_allclose(p[:, 0], right, rtol=1e-6)  # the same value tokens: the same embeddings
    np.testing.assert_allclose(p[:, -1], right, rtol=1e-6)  # nothing reads the value's last residual at "("
    # in between, the slip's context reaches "(" through the value's tokens (a random model's P(this) is ~1/vocab,
    # so compare log-probabilities)
    assert np.abs(np.log(p[:, 1:-1]) - np.log(right)[:, None]).max() > 1e-5
    assert np.abs(np.log(rows["p_slip"]) - np.log(right)).max() > 1e-3  # the two lines differ for the model


def test_without_ends_only_the_middle_layers_are_patched_and_problems_are_kept(patched: tuple) -> None:
    model, tok, texts, rows = patched
    lean = value_patching(model, tok, texts, batch=7, problems={0, 3})
    keep = np.isin(rows["problem"], [0, 3])
    assert sorted(set(lean["problem"])) == [0, 3] and len(lean["problem"]) == keep.sum()
    np.testing.assert_allclose(np.asarray(lean["p_patched"]), np.asarray(rows["p_patched"])[keep], rtol=1e-5)


def test_summary_pairs_each_step_with_the_first(patched: tuple) -> None:
    model, _, _, rows = patched
    roles = problem_roles(12, 0.3, 0.4, 0)
    shifted = {**rows, "p_patched": (np.asarray(rows["p_patched"]) - 0.1).tolist()}
    out = patch_summary([0, 5, 10], {0: rows, 5: rows, 10: shifted}, roles, n_boot=50)
    assert 0 < out["layer"] < model.config.num_hidden_layers  # layer 0 and the last are zero by construction
    changes = out["change_from_first"]
    assert changes[0]["value"] == pytest.approx(0.0) and changes[1]["value"] == pytest.approx(0.0)
    assert changes[2]["value"] == pytest.approx(-0.1, abs=1e-6) and changes[2]["hi"] < 0
    assert out["half_step"] == 10
