"""The report's component section: which heads / MLP blocks write the verdict direction, over training, and what
ablating or patching them does (from :func:`analysis.emergence.component_emergence`)."""

from __future__ import annotations

import html
from typing import Any

from analysis.figures import heatmap, lines, table


def component_section(ce: dict[str, Any] | None) -> list[str]:
    """Which heads / MLP blocks write the verdict direction, over training, and what ablating them does."""
    if not ce:
        return []
    parts = ["<h2>Components writing the verdict direction</h2>"]
    grid = ce["score_grid"]
    lim = max((abs(v) for row in grid for v in row if v is not None), default=1.0) or 1.0
    parts.append(
        heatmap(
            grid,
            ce["steps"],
            "direct attribution onto the final verdict direction ('this' - 'not')",
            xlabel="component",
            cols=ce["names"],
            vmin=-lim,
            vmax=lim,
        )
    )
    if ce.get("finding"):
        parts.append(f"<p><b>{html.escape(ce['finding'])}</b></p>")
    last = ce["ablation"][-1]
    ks = [r["k"] for r in last["by_k"]]
    parts.append(
        lines(
            ks,
            {
                "top-k heads": [r["top_change"] for r in last["by_k"]],
                "random k heads (mean)": [r["random_change_mean"] for r in last["by_k"]],
            },
            f"final step: change of verdict-error rate when ablating k heads (baseline {last['baseline_error']:.3f})",
            "k",
        )
    )
    parts.append(
        lines(
            ce["steps"],
            {
                f"top-{k} heads": [
                    next((r["top_change"] for r in a["by_k"] if r["k"] == k), None) for a in ce["ablation"]
                ]
                for k in (1, 3, 5)
            }
            | {
                "random 3": [
                    next((r["random_change_mean"] for r in a["by_k"] if r["k"] == 3), None) for a in ce["ablation"]
                ]
            },
            "ablation effect vs step",
            "step",
        )
    )
    parts.append(
        table(
            ["final top component", "first step in top set", "rank at first analysed step"],
            [[n, ce["first_in_top"][n], ce["rank_in_first_step"][n]] for n in ce["final_top"]],
        )
    )
    parts.append(
        table(
            ["step", "top components", "patching flips top-3 / random-3", "free-gen verdict error"],
            [
                [
                    a["step"],
                    " ".join(ce["top"][a["step"]]),
                    f"{_f(a['patching'].get('top'))} / {_f(a['patching'].get('random'))}",
                    " ".join(f"{k} {_f(v['error'])} ({v['lines']} lines)" for k, v in (a["free"] or {}).items()) or "-",
                ]
                for a in ce["ablation"]
            ],
        )
    )
    return parts + _control_parts(ce["controls"][-1])


def _control_parts(ctl: dict[str, Any]) -> list[str]:
    """The final step's controls: W against the verdict tokens' span, steering vectors of equal norm, prompting."""
    parts = []
    if "span_cosine_by_layer" in ctl:
        parts.append(
            f"<p>Cosine of W with the span of the verdict tokens' vectors and W's top unembedding "
            f"neighbours {html.escape(str(ctl.get('neighbours')))}, per layer: "
            f"{html.escape(', '.join(_f(x) for x in ctl['span_cosine_by_layer']))}</p>"
        )
    if "steer_flip_at_scale" in ctl:
        parts.append(
            table(
                ["steering vector (equal norm)", "flip rate"], [[k, v] for k, v in ctl["steer_flip_at_scale"].items()]
            )
        )
    if "prompt_flip" in ctl:
        parts.append(table(["words inserted before '('", "flip rate"], [[k, v] for k, v in ctl["prompt_flip"].items()]))
    return parts


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"
