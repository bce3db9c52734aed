"""The fixed-text protocol's headline numbers (summary.json) and its one-sentence answers, each with its CI.

Every number here is measured on *report* problems at the preset's headline layer (never a layer or scale picked
on these data). The questions:

* **in the base?** the final checkpoint's verdict probe read on the first checkpoint's activations (same texts),
  and the final direction steering the first checkpoint, against random directions of the same norm;
* **made by RL, and when?** the first step whose verdict-probe AUROC interval lies above the first step's;
* **what does the verdict follow?** the share of lines each checkpoint accepts by category: a checker accepts
  right lines and rejects slips (stated == target, arithmetic wrong); a pattern-matcher accepts both.
"""

from __future__ import annotations

from typing import Any

from analysis.stats import fmt_ci


def _row(per_step: dict[str, Any], kind: str, label: str, layer: int, subset: str) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in per_step["probes"]
            if r["kind"] == kind and r["label"] == label and r["layer"] == layer and r["subset"] == subset
        ),
        None,
    )


def _auroc(row: dict[str, Any] | None, source: str = "probe") -> dict[str, Any] | None:
    return ((row or {}).get(source) or {}).get("auroc")


def step_headline(fixed: dict[str, Any], i: int) -> dict[str, Any]:
    """The headline numbers of the i-th analysed checkpoint."""
    layer = fixed["headline_layer"]
    ps = fixed["per_step"][i]
    vf = ps["versus_final"]
    row = _row(ps, "paren", "verdict", layer, "last")
    out: dict[str, Any] = {
        "step": fixed["steps"][i],
        "accepts": ps["own_verdict"]["by_category"],
        "accepts_by_position": ps["own_verdict"]["by_position"],
        "content_effect": ps["own_verdict"].get("content_effect"),
        "position_effect": ps["own_verdict"].get("position_effect"),
        "verdict_follows_stated_auroc": ps["own_verdict"]["auroc_stated"],
        "verdict_follows_truth_auroc": ps["own_verdict"]["auroc_truth"],
        "verdict_probe_accuracy": ((row or {}).get("probe") or {}).get("accuracy"),
        "verdict_shuffled_accuracy": ((row or {}).get("shuffled") or {}).get("accuracy"),
        "verdict_lens_accuracy": ((row or {}).get("lens") or {}).get("accuracy"),
        "slip_p_not": ps.get("slip_p_not"),
        "slip_p_not_change": ps.get("slip_p_not_change"),
        "verdict_probe_auroc": _auroc(row),
        "verdict_shuffled_auroc": _auroc(row, "shuffled"),
        "verdict_lens_auroc": _auroc(row, "lens"),
        "truth_probe_auroc_at_value": _auroc(_row(ps, "value", "truth", layer, "counterfactual")),
        "truth_probe_auroc_at_paren": _auroc(_row(ps, "paren", "truth", layer, "counterfactual")),
        "stated_probe_auroc_at_paren": _auroc(_row(ps, "paren", "stated", layer, "counterfactual")),
        "verdict_leak_on_pairs_auroc": _auroc(_row(ps, "paren", "verdict", layer, "counterfactual")),
        "cosine_with_final": vf["paren/verdict"]["cosine"][layer],
        "final_probe_auroc": vf["paren/verdict"]["final_probe_auroc"]["last"][layer],
        "pair_max_diff": ps["own_verdict"]["pair_max_diff"],
    }
    for pos, st in fixed["steering"][i].items():
        out[f"steer_{pos}"] = {k: st.get(k) for k in ("n", "own", "final", "random", "final_minus_random")}
    return out


def _above(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return bool(a and b and a.get("lo") is not None and b.get("hi") is not None and a["lo"] > b["hi"])


def answers(heads: list[dict[str, Any]], position: str = "before_paren") -> dict[str, str]:
    """One sentence per question, from the per-step headlines (first = base, last = final)."""
    base, final = heads[0], heads[-1]
    out = {}
    fb = base.get(f"steer_{position}") or {}
    out["in_base"] = (
        f"The final checkpoint's '(' verdict probe reads the base's activations on the final texts at AUROC "
        f"{fmt_ci(base['final_probe_auroc'] or {})} (at the final step itself: "
        f"{fmt_ci(final['final_probe_auroc'] or {})}); the final direction (at {position}) makes the base accept "
        f"{fmt_ci(fb.get('final') or {}, pct=True)} of the wrong lines it rejects, random directions "
        f"{fmt_ci(fb.get('random') or {}, pct=True)} (difference {fmt_ci(fb.get('final_minus_random') or {}, True)})."
    )
    first = next((h["step"] for h in heads[1:] if _above(h["verdict_probe_auroc"], base["verdict_probe_auroc"])), None)
    out["when"] = (
        f"Verdict probe AUROC at '(' on the final texts: base {fmt_ci(base['verdict_probe_auroc'] or {})}, final "
        f"{fmt_ci(final['verdict_probe_auroc'] or {})}; "
        + (
            f"the first step whose interval lies above the base's is {first}."
            if first is not None
            else "no step's interval lies above the base's (no measurable emergence on these texts)."
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
        base_ce, base_pe = base.get("content_effect") or {}, base.get("position_effect") or {}
        out["content_or_position"] = (
            f"Final checkpoint: a right line instead of a wrong one (same problem, same place) changes the accept "
            f"rate by {fmt_ci(ce, True)}; lines after {pe['positions'][1]} rejected lines instead of "
            f"{pe['positions'][0]} are accepted {fmt_ci(pe, True)} more often (base: content "
            f"{fmt_ci(base_ce, True)}, position {fmt_ci(base_pe, True)})."
        )
    return out


def _verdict(ci: dict[str, Any] | None, above: float = 0.0) -> str:
    """ "Yes" when the interval lies above ``above``, "No, the opposite" when below, else "No measurable effect"."""
    if not ci or ci.get("lo") is None or ci.get("hi") is None:
        return "Not measured"
    if ci["lo"] > above:
        return "Yes"
    return "No, the opposite" if ci["hi"] < above else "No measurable effect"


def questions(heads: list[dict[str, Any]], layer: int, position: str = "before_paren") -> dict[str, str]:
    """The report's four opening questions, each answered in one sentence with its numbers and CIs, whichever way
    they go. The opening word (Yes / No / No measurable effect) is read off the interval named in the sentence (95%,
    resampling report problems)."""
    base, final = heads[0], heads[-1]
    b_acc, sh = base.get("verdict_probe_accuracy") or {}, base.get("verdict_shuffled_accuracy") or {}
    readable = "Not measured"
    if b_acc.get("lo") is not None and sh.get("hi") is not None:
        readable = "Yes" if b_acc["lo"] > sh["hi"] else "No: its interval overlaps the shuffled-label control's"
    out = {
        "readable_at_base": (
            f"{readable}: at '(' (layer {layer}), a probe fit on step {base['step']}'s activations of the final "
            f"checkpoint's texts reads their verdict at accuracy {fmt_ci(b_acc, True)} (shuffled labels "
            f"{fmt_ci(sh, True)}, logit lens {fmt_ci(base.get('verdict_lens_accuracy') or {}, True)}); at step "
            f"{final['step']}: {fmt_ci(final.get('verdict_probe_accuracy') or {}, True)}."
        )
    }
    change = final.get("slip_p_not_change")
    out["slip_p_not_rises"] = (
        f"{_verdict(change)}: on slip lines (stated value = target, arithmetic wrong) the checkpoint's own "
        f"P('not' | 'this' or 'not') at '(' is {fmt_ci(base.get('slip_p_not') or {}, True)} at step {base['step']} "
        f"and {fmt_ci(final.get('slip_p_not') or {}, True)} at step {final['step']} (paired change "
        f"{fmt_ci(change or {}, True)}); a checker would reject them."
    )
    tb, tf = base.get("truth_probe_auroc_at_paren"), final.get("truth_probe_auroc_at_paren")
    rise = next((h["step"] for h in heads[1:] if _above(h.get("truth_probe_auroc_at_paren"), tb)), None)
    out["truth_at_paren_rises"] = (
        ("Yes" if rise is not None else "No")
        + f": the arithmetic's truth is decodable at '(' on counterfactual lines at AUROC {fmt_ci(tb or {})} at step "
        f"{base['step']} and {fmt_ci(tf or {})} at step {final['step']}; "
        + (
            f"the first step whose interval lies above step {base['step']}'s is {rise}."
            if rise is not None
            else f"no step's interval lies above step {base['step']}'s."
        )
    )
    st = base.get(f"steer_{position}") or {}
    out["final_direction_steers_base"] = (
        f"{_verdict(st.get('final_minus_random'))}: added at {position} with the run's one scale, the final "
        f"checkpoint's own-decision direction makes step {base['step']} accept {fmt_ci(st.get('final') or {}, True)} "
        f"of the wrong lines it rejects, random directions of equal norm {fmt_ci(st.get('random') or {}, True)} "
        f"(difference {fmt_ci(st.get('final_minus_random') or {}, True)})."
    )
    return out


def fixed_headline(fixed: dict[str, Any]) -> dict[str, Any]:
    """summary.json's ``fixed_text`` block."""
    heads = [step_headline(fixed, i) for i in range(len(fixed["steps"]))]
    return {
        "headline_layer": fixed["headline_layer"],
        "roles": fixed["roles"],
        "texts": fixed["texts"],
        "scale": {k: v for k, v in fixed["scale"].items() if k != "sweep"},
        "position": fixed.get("position", "before_paren"),
        "questions": questions(heads, fixed["headline_layer"], fixed.get("position", "before_paren")) if heads else {},
        "answers": answers(heads, fixed.get("position", "before_paren")) if heads else {},
        "per_step": heads,
    }
