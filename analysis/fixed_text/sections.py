"""The report's first section: the fixed-text protocol, where every checkpoint read the same texts.

Plots with confidence bands (bootstrap over report problems) where a reader compares steps, heatmaps where they
compare layers, and the one-sentence answers from :mod:`analysis.fixed_text.summary` on top.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from analysis.figures import heatmap, png, table
from analysis.fixed_text.per_checkpoint import SUBSETS
from analysis.fixed_text.summary import fixed_headline
from analysis.stats import fmt_ci
from tasks.countdown.counterfactual import CATEGORIES


def draw_bands(
    ax: Any, x: Sequence[Any], series: dict[str, Sequence[dict[str, Any] | None]], title: str, ylabel: str
) -> None:
    """Draw each series of CI dicts ({"value", "lo", "hi"}) over step ``x`` on ``ax``, its interval shaded."""
    for name, ys in series.items():
        pts = [(a, y) for a, y in zip(x, ys, strict=False) if y and y.get("value") is not None]
        if not pts:
            continue
        xs = [a for a, _ in pts]
        (line,) = ax.plot(xs, [y["value"] for _, y in pts], marker="o", ms=3, label=name)
        lo = [y["lo"] if y.get("lo") is not None else y["value"] for _, y in pts]
        hi = [y["hi"] if y.get("hi") is not None else y["value"] for _, y in pts]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.18)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def bands(x: Sequence[Any], series: dict[str, Sequence[dict[str, Any] | None]], title: str, ylabel: str) -> str:
    """Lines of CI dicts ({"value", "lo", "hi"}) over ``x`` with their intervals shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    draw_bands(ax, x, series, title, ylabel)
    ax.legend(fontsize=7)
    return png(fig)


def _grid(fixed: dict[str, Any], kind: str, label: str, subset: str, source: str) -> list[list[float | None]]:
    grid = []
    for ps in fixed["per_step"]:
        rows = sorted(
            (r for r in ps["probes"] if r["kind"] == kind and r["label"] == label and r["subset"] == subset),
            key=lambda r: r["layer"],
        )
        grid.append([(((r.get(source) or {}).get("auroc")) or {}).get("value") for r in rows])
    return grid


def fixed_section(fixed: dict[str, Any] | None, h: dict[str, Any] | None = None) -> list[str]:
    """HTML parts of the fixed-text section (empty when the stage was off)."""
    if not fixed:
        return []
    h = h or fixed_headline(fixed)  # summary.json's fixed_text block when the caller has it
    steps, heads = fixed["steps"], h["per_step"]
    parts = [*_intro(h), *_verdict_bands(steps, heads, h["headline_layer"])]
    parts += [changes_figure(steps, heads), margin_by_layer(heads), *_causal_bands(steps, heads, h.get("patching"))]
    parts.append(_lens_note(heads))
    return parts + _layer_grids(fixed, steps) + [_per_step_table(heads)]


def _intro(h: dict[str, Any]) -> list[str]:
    """What was read, on which problems, at which layer and scale; the section's one-line answers."""
    return [
        "<h2>Fixed text: every checkpoint reads the same texts</h2>",
        f"<p>Texts: {html.escape(str(h['texts']))} sites by subset ('last' / 'first': completions of the last / first "
        f"checkpoint; 'counterfactual': lines with verdict, stated == target and truth set independently). Problems: "
        f"{html.escape(str(h['roles']))}; probes fit on train problems, every number below is on report problems, "
        f"at the preset's layer {h['headline_layer']}, with 95% bootstrap intervals over problems. Steering scale "
        f"{h['scale']['scale']:g} ({html.escape(h['scale']['source'])}), the same at every step.</p>",
        "<ul>" + "".join(f"<li><b>{k}</b>: {html.escape(v)}</li>" for k, v in h["answers"].items()) + "</ul>",
    ]


def _verdict_bands(steps: list[int], heads: list[dict[str, Any]], layer: int) -> list[str]:
    """Accept rates by category and by position, and what the probes and the lens read, vs step."""
    positions = sorted({p for hd in heads for p in hd["accepts_by_position"]}, key=int)
    return [
        bands(
            steps,
            {c: [hd["accepts"].get(c) for hd in heads] for c in CATEGORIES},
            "share of counterfactual lines the checkpoint accepts (its own verdict at '(')",
            "accepted",
        ),
        bands(
            steps,
            {f"after {p} rejected lines": [hd["accepts_by_position"].get(p) for hd in heads] for p in positions},
            "share of counterfactual lines accepted, by position (content mixed): a line counter rises with position",
            "accepted",
        ),
        bands(
            steps,
            {
                "verdict probe": [hd["verdict_probe_auroc"] for hd in heads],
                "logit lens (same layer)": [hd["verdict_lens_auroc"] for hd in heads],
                "final step's probe": [hd["final_probe_auroc"] for hd in heads],
                "shuffled labels": [hd["verdict_shuffled_auroc"] for hd in heads],
                "verdict on pairs (leak check)": [hd["verdict_leak_on_pairs_auroc"] for hd in heads],
            },
            f"'(' verdict, layer {layer}: AUROC on the last checkpoint's texts",
            "AUROC",
        ),
        bands(
            steps,
            {
                "truth at stated value": [hd["truth_probe_auroc_at_value"] for hd in heads],
                "truth at '('": [hd["truth_probe_auroc_at_paren"] for hd in heads],
                "stated == target at '('": [hd["stated_probe_auroc_at_paren"] for hd in heads],
                "own verdict vs stated": [hd["verdict_follows_stated_auroc"] for hd in heads],
                "own verdict vs truth": [hd["verdict_follows_truth_auroc"] for hd in heads],
            },
            f"counterfactual lines, layer {layer}: what is readable, and what the verdict follows",
            "AUROC",
        ),
    ]


def _causal_bands(steps: list[int], heads: list[dict[str, Any]], patch: dict[str, Any] | None) -> list[str]:
    """Value patching and steering with each direction and control, vs step."""
    parts = []
    if patch and patch.get("effects"):
        parts.append(
            bands(
                steps,
                {
                    f"effect at layer {patch['layer']}": [patch["effects"][str(s)][patch["layer"]] for s in steps],
                    "paired change from the first step": patch["change_from_first"],
                },
                "value patching: change in P(this) on right lines given the slip's residual at the value's tokens",
                "P(this) change",
            )
        )
    for pos in ("before_paren", "paren"):
        key = f"steer_{pos}"
        if any(key in hd for hd in heads):
            parts.append(
                bands(
                    steps,
                    {
                        n: [(hd.get(key) or {}).get(n) for hd in heads]
                        for n in ("unsteered", "own", "final", "logit", "meandiff", "parity", "random")
                    },
                    f"steering at {pos}: the first step's rejected wrong lines (fixed set), share accepted",
                    "accepted",
                )
            )
    return parts


def _lens_note(heads: list[dict[str, Any]]) -> str:
    return (
        "<p>At the output layer the logit-lens margin <i>is</i> the model's next-token preference, so a probe for the "
        "model's own greedy verdict reaches full accuracy there by construction; what a probe adds is what the lens "
        "cannot read at earlier layers. The pair leak check must stay at 0.5: the two texts of a pair are identical "
        "up to '(' (largest activation difference within a pair per step: "
        + ", ".join(f"{hd['step']}: {hd['pair_max_diff']:.1e}" for hd in heads if hd["pair_max_diff"] is not None)
        + ").</p>"
    )


def _layer_grids(fixed: dict[str, Any], steps: list[int]) -> list[str]:
    """Step x layer heatmaps: the verdict probe per text subset, the lens, the value's truth probe."""
    parts = [
        heatmap(_grid(fixed, "paren", "verdict", s, "probe"), steps, f"'(' verdict probe AUROC, {s}") for s in SUBSETS
    ]
    parts.append(heatmap(_grid(fixed, "paren", "verdict", "last", "lens"), steps, "'(' verdict logit-lens AUROC, last"))
    parts.append(heatmap(_grid(fixed, "value", "truth", "counterfactual", "probe"), steps, "value truth probe AUROC"))
    return parts


def _per_step_table(heads: list[dict[str, Any]]) -> str:
    return table(
        ["step", *[f"accepts {c}" for c in CATEGORIES], "verdict probe", "cos(final)", "steer final (before '(')"],
        [
            [
                hd["step"],
                *[fmt_ci(hd["accepts"].get(c) or {}, True) for c in CATEGORIES],
                fmt_ci(hd["verdict_probe_auroc"] or {}),
                hd["cosine_with_final"],
                fmt_ci((hd.get("steer_before_paren") or {}).get("final") or {}, True),
            ]
            for hd in heads
        ],
    )


CHANGES = {
    "verdict probe AUROC": ("changes", "verdict_probe_auroc"),
    "probe minus lens": ("changes", "verdict_probe_minus_lens"),
    "truth AUROC at '('": ("changes", "truth_auroc_at_paren"),
    "own P('not') on slips": ("slip_p_not_change",),
    "accepts right lines": ("changes", "accepts", "right"),
    "accepts slips": ("changes", "accepts", "slip"),
}


def _dig(d: Any, path: Sequence[str]) -> Any:
    for k in path:
        d = (d or {}).get(k) if isinstance(d, dict) else None
    return d


def changes_figure(steps: Sequence[Any], heads: Sequence[dict[str, Any]]) -> str:
    """Every headline quantity as a paired change from the first step (same texts at both), with its 95% interval:
    a band that leaves 0 is a change; two overlapping marginal bands say nothing about one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    series = {name: [_dig(h, path) for h in heads] for name, path in CHANGES.items()}
    for pos in ("before_paren",):
        series["final direction steers (fixed set)"] = [
            _dig(h, (f"steer_{pos}", "change_from_first", "final")) for h in heads
        ]
    draw_bands(ax, steps, series, "paired change from the first step (95% interval over report problems)", "change")
    ax.axhline(0, color="k", lw=0.8)
    ax.legend(fontsize=6)
    return png(fig)


def margin_by_layer(heads: Sequence[dict[str, Any]]) -> str:
    """The verdict probe's AUROC minus the logit lens's, per layer, at the first and last step (paired per site)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for h in (heads[0], heads[-1]):
        rows = h.get("verdict_probe_minus_lens_by_layer") or []
        draw_bands(ax, list(range(len(rows))), {f"step {h['step']}": rows}, "", "")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("layer", fontsize=8)
    ax.set_ylabel("probe AUROC - lens AUROC", fontsize=8)
    ax.set_title("'(' verdict: what a probe reads beyond the logit lens, per layer", fontsize=9)
    ax.legend(fontsize=7)
    return png(fig)
