"""The fixed-text protocol's headline numbers (summary.json) and its one-sentence answers, each with its test.

Every number here is measured on *report* problems at the headline layer, which was chosen on calibration problems
(never on these data). Every "did it change from the first step" answer reads a *paired* difference (the same texts
at both checkpoints, :mod:`analysis.fixed_text.changes`), never whether two intervals overlap. The questions:

* **readable in the base?** a verdict probe fit on the first checkpoint's activations of the last checkpoint's
  texts, its AUROC against chance, against shuffled-label probes (several independent permutations) and, paired
  per site, against the logit lens at the same layer (a probe says something only where it beats the lens);
* **made by RL, and when?** the first step whose paired change from the first step excludes 0;
* **steers?** the final direction added to the first checkpoint, on a line set fixed in advance (the wrong lines
  the first checkpoint rejects), against random directions of equal norm and against the logit direction;
* **what does the verdict follow?** the share of lines each checkpoint accepts by category and by position, with
  the content and position effects paired within problem.
"""

from __future__ import annotations

from typing import Any

from analysis.fixed_text.changes import half_step
from analysis.stats import fmt_ci

STEER_NAMES = ("own", "final", "logit", "meandiff", "parity", "random", "unsteered")


def _row(per_step: dict[str, Any], kind: str, label: str, layer: int, subset: str) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in per_step["probes"]
            if r["kind"] == kind and r["label"] == label and r["layer"] == layer and r["subset"] == subset
        ),
        None,
    )


def _get(row: dict[str, Any] | None, source: str, metric: str = "auroc") -> dict[str, Any] | None:
    return ((row or {}).get(source) or {}).get(metric)


def _steer(fixed: dict[str, Any], i: int) -> dict[str, Any]:
    out = {}
    for pos, st in (fixed.get("steering") or [{}] * (i + 1))[i].items():
        br, aw = st["base_rejected"], st["all_wrong"]
        out[f"steer_{pos}"] = {
            **{k: br.get(k) for k in (*STEER_NAMES, "n", "cases")},
            **{k: v for k, v in br.items() if k.endswith(("_minus_random", "_minus_logit"))},
            "all_wrong": {k: aw.get(k) for k in (*STEER_NAMES, "n")},
            "change_from_first": st.get("change_from_first"),
            "example": st.get("example"),
        }
    return out


def step_headline(fixed: dict[str, Any], i: int) -> dict[str, Any]:
    """The headline numbers of the i-th analysed checkpoint."""
    layer = fixed["headline_layer"]
    ps = fixed["per_step"][i]
    vf, ov = ps["versus_final"], ps["own_verdict"]
    row = _row(ps, "paren", "verdict", layer, "last")
    changes = (fixed.get("changes") or [{}] * (i + 1))[i]
    by_layer = [_row(ps, "paren", "verdict", x, "last") for x in range(len(vf["paren/verdict"]["cosine"]))]
    return {
        "step": fixed["steps"][i],
        "accepts": ov["by_category"],
        "accepts_by_position": ov["by_position"],
        "accepts_by_category_position": ov.get("by_category_position"),
        "content_effect": ov.get("content_effect"),
        "content_effect_slip": ov.get("content_effect_slip"),
        "position_effect": ov.get("position_effect"),
        "position_effect_by_category": ov.get("position_effect_by_category"),
        "verdict_follows_stated_auroc": ov["auroc_stated"],
        "verdict_follows_truth_auroc": ov["auroc_truth"],
        "verdict_probe_auroc": _get(row, "probe"),
        "verdict_probe_balanced_accuracy": _get(row, "probe", "balanced_accuracy"),
        "verdict_lens_auroc": _get(row, "lens"),
        "verdict_probe_minus_lens": (row or {}).get("probe_minus_lens"),
        "verdict_probe_minus_lens_by_layer": [(r or {}).get("probe_minus_lens") for r in by_layer],
        "verdict_shuffled_auroc": _get(row, "shuffled"),
        "verdict_shuffled_draws": ((row or {}).get("shuffled") or {}).get("auroc_draws"),
        "truth_probe_auroc_at_value": _get(_row(ps, "value", "truth", layer, "counterfactual"), "probe"),
        "truth_probe_auroc_at_paren": _get(_row(ps, "paren", "truth", layer, "counterfactual"), "probe"),
        "stated_probe_auroc_at_paren": _get(_row(ps, "paren", "stated", layer, "counterfactual"), "probe"),
        "verdict_leak_on_pairs_auroc": _get(_row(ps, "paren", "verdict", layer, "counterfactual"), "probe"),
        "cosine_with_final": vf["paren/verdict"]["cosine"][layer],
        "final_probe_auroc": vf["paren/verdict"]["final_probe_auroc"]["last"][layer],
        "pair_max_diff": ov["pair_max_diff"],
        "slip_p_not": changes.get("slip_p_not"),
        "slip_p_not_change": changes.get("slip_p_not_change"),
        "changes": {k: v for k, v in changes.items() if k not in ("slip_p_not", "slip_p_not_change")},
        **_steer(fixed, i),
    }


def _word(ci: dict[str, Any] | None, above: float = 0.0) -> str:
    """ "Yes" when the interval lies above ``above``, "No, the opposite" when below, else "No measurable effect"."""
    if not ci or ci.get("lo") is None or ci.get("hi") is None:
        return "Not measured"
    if ci["lo"] > above:
        return "Yes"
    return "No, the opposite" if ci["hi"] < above else "No measurable effect"


def first_change(heads: list[dict[str, Any]], key: str) -> int | None:
    """The first step after the first whose paired change ``changes[key]`` has an interval excluding 0."""
    for h in heads[1:]:
        c = (h.get("changes") or {}).get(key) or {}
        if c.get("lo") is not None and (c["lo"] > 0 or c["hi"] < 0):
            return h["step"]
    return None


def _readable(base: dict[str, Any], final: dict[str, Any], layer: int, source: str) -> str:
    auc, sh = base.get("verdict_probe_auroc") or {}, base.get("verdict_shuffled_auroc") or {}
    margin = base.get("verdict_probe_minus_lens")
    word = "Not measured"
    if auc.get("lo") is not None:
        beats_shuffled = sh.get("hi") is None or auc["lo"] > sh["hi"]
        word = "Yes" if auc["lo"] > 0.5 and beats_shuffled else "No: its interval reaches chance or a shuffled probe"
    return (
        f"{word}; beyond the logit lens: {_word(margin).lower()}. At '(' (layer {layer}, {source}), a probe fit on "
        f"step {base['step']}'s activations of the final checkpoint's texts reads their verdict at AUROC "
        f"{fmt_ci(auc)} (balanced accuracy {fmt_ci(base.get('verdict_probe_balanced_accuracy') or {}, True)}); the "
        f"logit lens at the same layer {fmt_ci(base.get('verdict_lens_auroc') or {})}, probe minus lens "
        f"{fmt_ci(margin or {})} (paired per site); shuffled-label probes "
        f"({len(base.get('verdict_shuffled_draws') or [])} permutations) {sh.get('lo', float('nan')):.2f} to "
        f"{sh.get('hi', float('nan')):.2f}. At step {final['step']}: AUROC "
        f"{fmt_ci(final.get('verdict_probe_auroc') or {})}, minus lens "
        f"{fmt_ci(final.get('verdict_probe_minus_lens') or {})}."
    )


def questions(heads: list[dict[str, Any]], layer: int, position: str = "before_paren", source: str = "") -> dict:
    """The report's four opening questions, each answered in one sentence with its numbers and the test its opening
    word follows (95% intervals resampling report problems; changes paired on identical texts)."""
    base, final = heads[0], heads[-1]
    out = {"readable_at_base": _readable(base, final, layer, source or "the preset's layer")}
    change = final.get("slip_p_not_change")
    out["slip_p_not_rises"] = (
        f"{_word(change)}: on slip lines (stated value = target, arithmetic wrong) the checkpoint's own "
        f"P('not' | 'this' or 'not') at '(' is {fmt_ci(base.get('slip_p_not') or {}, True)} at step {base['step']} "
        f"and {fmt_ci(final.get('slip_p_not') or {}, True)} at step {final['step']} (paired change "
        f"{fmt_ci(change or {}, True)}); a checker would reject them."
    )
    tc = (final.get("changes") or {}).get("truth_auroc_at_paren")
    rise = first_change(heads, "truth_auroc_at_paren")
    out["truth_at_paren_rises"] = (
        f"{_word(tc)}: the arithmetic's truth is decodable at '(' on counterfactual lines at AUROC "
        f"{fmt_ci(base.get('truth_probe_auroc_at_paren') or {})} at step {base['step']} and "
        f"{fmt_ci(final.get('truth_probe_auroc_at_paren') or {})} at step {final['step']} (paired change "
        f"{fmt_ci(tc or {})}); "
        + (
            f"the first step whose paired change from step {base['step']} excludes 0 is {rise}."
            if rise is not None
            else "no step's paired change excludes 0."
        )
    )
    out["final_direction_steers_base"] = _steers(base, position)
    return out


def _steers(base: dict[str, Any], position: str) -> str:
    st = base.get(f"steer_{position}") or {}
    n = st.get("n")

    def r(k: str) -> str:
        return fmt_ci(st.get(k) or {}, True)

    return (
        f"{_word(st.get('final_minus_random'))}; beyond the logit direction: "
        f"{_word(st.get('final_minus_logit')).lower()}. Added at {position} with the run's one scale, the final "
        f"checkpoint's direction makes step {base['step']} accept {r('final')} of the {n} wrong lines it rejects "
        f"unsteered (a set fixed before analysis); random directions of equal norm {r('random')}, the logit "
        f"direction {r('logit')}, class-mean difference {r('meandiff')}, an unrelated (line parity) probe "
        f"{r('parity')}; final minus random {r('final_minus_random')}, final minus logit {r('final_minus_logit')} "
        f"(paired per line)."
    )


def answers(heads: list[dict[str, Any]], position: str = "before_paren") -> dict[str, str]:
    """One sentence per question of the detailed section (first = base, last = final)."""
    base, final = heads[0], heads[-1]
    out = {}
    out["in_base"] = (
        f"The final checkpoint's '(' verdict probe reads the base's activations on the final texts at AUROC "
        f"{fmt_ci(base['final_probe_auroc'] or {})} (at the final step itself: "
        f"{fmt_ci(final['final_probe_auroc'] or {})}). " + _steers(base, position)
    )
    first = first_change(heads, "verdict_probe_minus_lens")
    series = [(h.get("changes") or {}).get("verdict_probe_minus_lens") for h in heads]
    half = half_step([h["step"] for h in heads], series)
    ch = series[-1] or {}
    out["when"] = (
        f"The verdict probe's AUROC margin over the logit lens at '(' changes by {fmt_ci(ch)} from step "
        f"{base['step']} to {final['step']} (paired); "
        + (
            f"the first step whose paired change excludes 0 is {first}"
            + (
                f"; half the final change is reached at step {half}."
                if _word(ch) in ("Yes", "No, the opposite")
                else ", though the final step's does not."
            )
            if first is not None
            else "no step's paired change excludes 0 (no measurable emergence on these texts)."
        )
    )
    acc = final["accepts"]
    out["follows"] = (
        f"Final checkpoint accepts right lines {fmt_ci(acc.get('right') or {}, True)}, slips (stated = target, "
        f"arithmetic wrong) {fmt_ci(acc.get('slip') or {}, True)}, wrong lines {fmt_ci(acc.get('wrong') or {}, True)}, "
        f"misstated right lines {fmt_ci(acc.get('misstated') or {}, True)}; its verdict separates stated == target at "
        f"AUROC {fmt_ci(final['verdict_follows_stated_auroc'] or {})} and truth at "
        f"{fmt_ci(final['verdict_follows_truth_auroc'] or {})} (base: slips "
        f"{fmt_ci(base['accepts'].get('slip') or {}, True)}, right {fmt_ci(base['accepts'].get('right') or {}, True)})."
    )
    ce, pe = final.get("content_effect") or {}, final.get("position_effect") or {}
    if pe:
        out["content_or_position"] = (
            f"Final checkpoint, paired within problem: a right line instead of a wrong one at the same place changes "
            f"the accept rate by {fmt_ci(ce, True)} (instead of a slip: "
            f"{fmt_ci(final.get('content_effect_slip') or {}, True)}); the same lines after "
            f"{pe['positions'][1]} rejected lines instead of {pe['positions'][0]} are accepted {fmt_ci(pe, True)} "
            f"more often (base: content {fmt_ci(base.get('content_effect') or {}, True)}, position "
            f"{fmt_ci(base.get('position_effect') or {}, True)})."
        )
    return out


# A paired change of P(this) whose whole interval lies within this of 0 is no effect, whatever its sign: the patched
# and unpatched passes then differ by float rounding (effects of ~1e-6 on the tiny preset), not by the value.
PATCH_NEGLIGIBLE = 0.005


def patching_answer(patch: dict[str, Any] | None, steps: list[int]) -> str:
    """One sentence on the value patching (analysis/fixed_text/patching.py): the effect at the first and last step and
    its paired change."""
    if not patch or not patch.get("effects"):
        return ""
    eff, ch = patch["effects"], patch["change_from_first"]
    first, last = eff[str(steps[0])][patch["layer"]], eff[str(steps[-1])][patch["layer"]]
    half = patch.get("half_step")
    change = ch[-1]
    negligible = change and max(abs(change["lo"]), abs(change["hi"])) < PATCH_NEGLIGIBLE
    word = "n/a" if not change else "No measurable effect" if negligible else _word(change, above=0.0)
    return (
        f"Patching the slip's residual at the stated value's tokens (layer {patch['layer']}, chosen on calibration "
        f"problems) into the right line changes P(this) at '(' by {fmt_ci(first or {}, True)} at step {steps[0]} and "
        f"{fmt_ci(last or {}, True)} at step {steps[-1]} ({patch['pairs']} report pairs); paired change "
        f"{fmt_ci(change or {}, True)}: {word}"
        + (f", half of it reached at step {half}." if half is not None and word in ("Yes", "No, the opposite") else ".")
    )


def fixed_headline(fixed: dict[str, Any]) -> dict[str, Any]:
    """summary.json's ``fixed_text`` block."""
    heads = [step_headline(fixed, i) for i in range(len(fixed["steps"]))]
    position = fixed.get("position", "before_paren")
    source = fixed.get("headline_layer_source", "")
    return {
        "headline_layer": fixed["headline_layer"],
        "headline_layer_source": source,
        "report_split": fixed.get("report_split"),
        "roles": fixed["roles"],
        "texts": fixed["texts"],
        "scale": {k: v for k, v in fixed["scale"].items() if k != "sweep"},
        "position": position,
        "flip_denominator": "the wrong lines the first checkpoint rejects unsteered (fixed before analysis); "
        "all_wrong: every wrong line",
        "questions": questions(heads, fixed["headline_layer"], position, source) if heads else {},
        "answers": {
            **(answers(heads, position) if heads else {}),
            **({"checked_at_value": a} if (a := patching_answer(fixed.get("patching"), fixed["steps"])) else {}),
        },
        "patching": fixed.get("patching"),
        "per_step": heads,
    }
