"""The report's first screen: the four questions of the fixed-text protocol, one figure panel and one sentence each
(the sentences from analysis/fixed_text/summary.py)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from analysis.figures import png
from analysis.fixed_text.sections import draw_bands
from analysis.fixed_text.summary import fixed_headline

QUESTIONS = {
    "readable_at_base": "Is the verdict readable at step 0 on fixed text?",
    "slip_p_not_rises": "Does the checkpoint's own P('not') on slip lines rise over training?",
    "truth_at_paren_rises": "Does the arithmetic's truth become more decodable at '('?",
    "final_direction_steers_base": "Does the final direction steer step 0?",
}


def questions_figure(steps: Sequence[Any], heads: Sequence[dict[str, Any]], layer: int, position: str) -> str:
    """One figure, one panel per opening question, every point with its 95% interval over report problems."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (
            f"1. verdict at '(' (layer {layer}), final texts",
            "AUROC",
            {
                "probe": [h.get("verdict_probe_auroc") for h in heads],
                "logit lens": [h.get("verdict_lens_auroc") for h in heads],
                "shuffled labels (range)": [h.get("verdict_shuffled_auroc") for h in heads],
            },
        ),
        ("2. own P('not') at '(' on slip lines", "P('not')", {"slip lines": [h.get("slip_p_not") for h in heads]}),
        (
            f"3. truth at '(' (layer {layer}), counterfactual lines",
            "AUROC",
            {"truth probe": [h.get("truth_probe_auroc_at_paren") for h in heads]},
        ),
        (
            f"4. steering at {position}: first step's rejected wrong lines accepted",
            "accepted",
            {
                n: [(h.get(f"steer_{position}") or {}).get(n) for h in heads]
                for n in ("final", "own", "logit", "meandiff", "parity", "random")
            },
        ),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.6))
    for ax, (title, ylabel, series) in zip(axes.flat, panels, strict=True):
        draw_bands(ax, steps, series, title, ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def questions_section(fixed: dict[str, Any] | None, h: dict[str, Any] | None = None) -> list[str]:
    """The report's opening: one figure and one sentence per question (empty when the fixed-text stage was off)."""
    if not fixed:
        return []
    h = h or fixed_headline(fixed)  # summary.json's fixed_text block when the caller has it
    q = h["questions"]
    return [
        "<h2>Four questions, answered on fixed text</h2>",
        questions_figure(fixed["steps"], h["per_step"], h["headline_layer"], h["position"]),
        "<ol>"
        + "".join(f"<li><b>{html.escape(QUESTIONS[k])}</b> {html.escape(q[k])}</li>" for k in QUESTIONS if k in q)
        + "</ol>",
        "<p>Every checkpoint read the same texts; probes fit on train problems, every number is on report problems "
        "with a 95% bootstrap interval over problems; layer and scale fixed by the preset or chosen on calibration "
        "problems. Details below.</p>",
    ]
