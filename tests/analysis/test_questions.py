"""The report's four opening sentences: each verdict word read off the interval it quotes, numbers included."""

from __future__ import annotations

import numpy as np

from analysis.fixed_text.per_checkpoint import SUBSETS
from analysis.fixed_text.summary import questions
from analysis.fixed_text.verdict import slip_p_not
from tasks.countdown.counterfactual import CATEGORIES


def ci(value: float, lo: float, hi: float) -> dict:
    return {"value": value, "lo": lo, "hi": hi}


def head(step: int, auroc: dict, p_not: dict, change: dict | None, truth: dict, steer: dict, **kw: dict) -> dict:
    return {
        "step": step,
        "verdict_probe_auroc": auroc,
        "verdict_probe_balanced_accuracy": ci(0.8, 0.75, 0.85),
        "verdict_shuffled_auroc": ci(0.5, 0.4, 0.6),
        "verdict_shuffled_draws": [0.4, 0.5, 0.6],
        "verdict_lens_auroc": ci(0.7, 0.6, 0.8),
        "verdict_probe_minus_lens": kw.get("margin", ci(0.2, 0.1, 0.3)),
        "slip_p_not": p_not,
        "slip_p_not_change": change,
        "truth_probe_auroc_at_paren": truth,
        "changes": {"truth_auroc_at_paren": kw.get("truth_change")},
        "steer_before_paren": steer,
    }


def test_questions_answer_each_way_with_the_quoted_numbers() -> None:
    steer_yes = {
        "n": 40,
        "final": ci(0.4, 0.3, 0.5),
        "random": ci(0.02, 0.0, 0.05),
        "logit": ci(0.1, 0.05, 0.2),
        "final_minus_random": ci(0.38, 0.28, 0.48),
        "final_minus_logit": ci(0.3, 0.2, 0.4),
    }
    heads = [
        head(0, ci(0.9, 0.85, 0.95), ci(0.2, 0.1, 0.3), ci(0.0, 0.0, 0.0), ci(0.6, 0.55, 0.65), steer_yes),
        head(50, ci(0.9, 0.85, 0.95), ci(0.3, 0.2, 0.4), ci(0.1, -0.05, 0.2), ci(0.8, 0.75, 0.85), steer_yes,
             truth_change=ci(0.2, 0.1, 0.3)),
        head(100, ci(0.95, 0.9, 0.99), ci(0.7, 0.6, 0.8), ci(0.5, 0.4, 0.6), ci(0.7, 0.6, 0.8), steer_yes,
             truth_change=ci(0.1, 0.02, 0.2)),
    ]  # fmt: skip
    q = questions(heads, layer=3)
    assert q["readable_at_base"].startswith("Yes; beyond the logit lens: yes.")
    assert "0.90 [0.85, 0.95]" in q["readable_at_base"] and "0.40 to 0.60" in q["readable_at_base"]
    assert q["slip_p_not_rises"].startswith("Yes:") and "paired change 50% [40, 60]" in q["slip_p_not_rises"]
    # the word follows the paired change, and the first step whose paired change excludes 0 is named
    assert q["truth_at_paren_rises"].startswith("Yes:") and "excludes 0 is 50." in q["truth_at_paren_rises"]
    steers = q["final_direction_steers_base"]
    assert steers.startswith("Yes; beyond the logit direction: yes.") and "40% [30, 50]" in steers
    assert "of the 40 wrong lines" in steers and "logit direction 10% [5, 20]" in steers

    steer_no = {
        "final": ci(0.03, 0.0, 0.06),
        "random": ci(0.02, 0.0, 0.05),
        "final_minus_random": ci(0.01, -0.03, 0.05),
        "final_minus_logit": ci(-0.2, -0.3, -0.1),
    }
    heads = [
        head(0, ci(0.58, 0.45, 0.66), ci(0.5, 0.4, 0.6), ci(0.0, 0.0, 0.0), ci(0.6, 0.55, 0.65), steer_no,
             margin=ci(0.0, -0.05, 0.05)),
        head(100, ci(0.9, 0.85, 0.95), ci(0.3, 0.2, 0.4), ci(-0.2, -0.3, -0.1), ci(0.62, 0.5, 0.7), steer_no,
             truth_change=ci(0.02, -0.05, 0.09)),
    ]  # fmt: skip
    q = questions(heads, layer=3)
    assert q["readable_at_base"].startswith("No: its interval reaches chance")
    assert "beyond the logit lens: no measurable effect" in q["readable_at_base"]
    assert q["slip_p_not_rises"].startswith("No, the opposite:")
    assert (
        q["truth_at_paren_rises"].startswith("No measurable effect:")
        and "no step's paired" in q["truth_at_paren_rises"]
    )
    assert q["final_direction_steers_base"].startswith(
        "No measurable effect; beyond the logit direction: no, the opposite"
    )
    heads[-1]["slip_p_not_change"] = None
    assert questions(heads, layer=3)["slip_p_not_rises"].startswith("Not measured")


def test_slip_p_not_reads_the_output_margin_of_report_slip_lines_only() -> None:
    cf, slip = SUBSETS.index("counterfactual"), CATEGORIES.index("slip")
    arrays = {
        "subset": np.array([cf, cf, cf, SUBSETS.index("last")]),
        "category": np.array([slip, slip, CATEGORIES.index("right"), slip]),
        "problem": np.array([0, 1, 0, 0]),
        "margin": np.array([[9.0, 0.0], [9.0, np.log(3.0)], [0.0, -5.0], [0.0, -5.0]], dtype=np.float32),
    }
    roles = np.array(["report", "train"])
    p_not, groups = slip_p_not(arrays, roles)
    assert groups.tolist() == [0]  # problem 1 is a train problem; the right line and the 'last' site are not slips
    assert np.allclose(p_not, [0.5])  # output margin 0: P('not' | 'this' or 'not') = 1/2
    roles = np.array(["report", "report"])
    p_not, groups = slip_p_not(arrays, roles)
    assert np.allclose(p_not, [0.5, 0.25]) and groups.tolist() == [0, 1]  # margin log 3: P(this) = 3 P(not)


def test_patching_answer_calls_a_rounding_sized_change_no_effect() -> None:
    from analysis.fixed_text.summary import patching_answer

    def ci(v: float, lo: float, hi: float) -> dict[str, float]:
        return {"value": v, "lo": lo, "hi": hi}

    def patch(change: dict[str, float]) -> dict:
        effects = {"0": [ci(0, 0, 0)] * 3, "36": [ci(0, 0, 0)] * 3}
        return {
            "effects": effects,
            "change_from_first": [ci(0, 0, 0), change],
            "layer": 2,
            "pairs": 462,
            "half_step": 36,
        }

    noise = patching_answer(patch(ci(3e-9, 5e-7, 1.2e-6)), [0, 36])  # above 0, but by float rounding
    assert noise.endswith("No measurable effect.") and "half of it" not in noise
    real = patching_answer(patch(ci(0.08, 0.05, 0.11)), [0, 36])
    assert real.endswith("Yes, half of it reached at step 36.")
    assert patching_answer(patch(ci(-0.08, -0.11, -0.05)), [0, 36]).endswith(
        "No, the opposite, half of it reached at step 36."
    )
