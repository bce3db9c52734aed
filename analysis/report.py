"""A self-contained HTML report (plots embedded as PNG data URIs, readable offline) and ``summary.json``.

Plots are where a reader would rather look than read: the step x layer probe-accuracy heatmaps, direction cosines
with the final step, the transfer matrix, the steering sweep and steering effect over steps, and training curves.
Tables carry the exact numbers, the unembedded tokens and original vs steered text.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.figures import CSS, heatmap, lines, table


def render(
    run_dir: Path,
    em: dict[str, Any],
    results: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    fixed: dict[str, Any] | None = None,
) -> str:
    """The whole report as one HTML string: ``em`` the emergence stage's results, ``results`` each checkpoint's,
    ``fixed`` the fixed-text stage's (None when it was off)."""
    steps = em["steps"]
    ok = [r for r in results if "error" not in r]
    from analysis.fixed.report import fixed_section, questions_section

    parts = [f"<h1>Verification direction: {html.escape(run_dir.name)}</h1>"]
    parts += questions_section(fixed, summary.get("fixed_text"))
    parts.append(f"<p>Checkpoints analysed: {steps}; summary.json is at the end of this page.</p>")
    dev = summary.get("deviations_from_study")
    if dev is not None:
        parts.append(
            "<h3>Deviations from the original study's protocol</h3>"
            + ("<ul>" + "".join(f"<li>{html.escape(d)}</li>" for d in dev) + "</ul>" if dev else "<p>none</p>")
        )
    for b in em["broken"]:
        parts.append(f'<p class="broken">step {b["step"]}: NOT analysed: {html.escape(b["error"])}</p>')
    parts += fixed_section(fixed, summary.get("fixed_text"))
    if ok:
        parts.append(
            "<h2>Behaviour: each checkpoint on its own rollouts</h2><p>What each checkpoint does on the texts it "
            "writes itself (report problems). Changes here mix what a checkpoint writes with how it represents it; the "
            "fixed-text section above separates the two.</p>"
        )
        from analysis.stats import fmt_ci

        parts.append(
            table(
                ["step", *(f"{k} {m}" for k in ("greedy", "sampled") for m in ("success", "false accepts | wrong"))],
                [
                    [
                        r["step"],
                        *(
                            fmt_ci((r["rollouts"].get(k) or {}).get(m) or {}, pct=True)
                            for k in ("greedy", "sampled")
                            for m in ("success_ci", "false_accept_ci")
                        ),
                    ]
                    for r in ok
                ],
            )
        )
        parts.append("<h3>Probe accuracy, step x layer</h3>")
        for key in ("paren/verdict", "paren/truth", "eq/verdict", "value/verdict", "paren/stated"):
            parts.append(heatmap(em["accuracy"][key], steps, f"{key} probe accuracy"))
        parts.append(heatmap(em["shuffled"]["paren/verdict"], steps, "paren/verdict shuffled-label control"))
        final = [r for r in ok[-1]["probes"] if r["fit"]]
        parts.append(f"<h3>Final step {steps[-1]}: every probe</h3>")
        parts.append(
            table(
                ["kind", "label", "layer", "acc", "AUROC", "majority", "shuffled", "acc where verdict!=truth", "n"],
                [
                    [
                        r["kind"],
                        r["label"],
                        r["layer"],
                        r["accuracy"],
                        r["auroc"],
                        r["majority"],
                        r["shuffled"],
                        r["disagree_accuracy"],
                        r["disagree_n"],
                    ]
                    for r in final
                ],
            )
        )
        parts.append("<h2>Direction over training</h2>")
        if em["cosine_with_final"]:
            parts.append(
                heatmap(
                    em["cosine_with_final"], steps, "cosine of '(' verdict direction with final step", vmin=-1, vmax=1
                )
            )
        if em["transfer"]:
            parts.append(
                heatmap(
                    em["transfer"],
                    steps,
                    f"transfer: probe of step (row) on step (col), layer {em['transfer_layer']}",
                    xlabel="tested on step",
                    cols=steps,
                )
            )
        parts.append("<h2>Steering</h2>")
        st = em["steering"]
        parts.append(
            lines(
                steps,
                {
                    "W flips wrong->accept": [s["flip_direction"] for s in st],
                    "random flips": [s["flip_random"] for s in st],
                    "-W flips right->reject": [s["flip_negative_on_right"] for s in st],
                },
                "flip rate at the chosen scale vs step",
                "step",
            )
        )
        last = ok[-1]["steering"]
        if "sweep" in last:
            sw = last["sweep"]
            parts.append(
                lines(
                    [x["scale"] for x in sw],
                    {
                        "W": [x["flip_direction"] for x in sw],
                        "random": [x["flip_random"] for x in sw],
                        "-W on right": [x["flip_negative_on_right"] for x in sw],
                    },
                    f"final step: flip rate vs scale (layers {last['layers']}, mean residual norm "
                    + ", ".join(f"L{k} {v:.0f}" for k, v in last["residual_norm"].items())
                    + ")",
                    "scale",
                )
            )
            parts.append(
                table(
                    ["condition", "completions", "success", "format", "wrong accepted", "steered wrong accepted"],
                    [
                        [
                            k + (f" ({v['draws']} draws pooled)" if v.get("draws") else ""),
                            v.get("completions", "-"),
                            *(
                                fmt_ci(v.get(f"{m}_ci") or {"value": v[m]}, pct=True)
                                for m in ("success", "format", "wrong_accepted", "steered_wrong_accepted")
                            ),
                        ]
                        for k, v in last["free"].items()
                    ],
                )
            )
            for smp in last["samples"]:
                parts.append(
                    f"<p>{smp['numbers']} -> {smp['target']}</p><div class='pair'>"
                    f"<pre>{html.escape(smp['original'])}</pre><pre>{html.escape(smp['steered'])}</pre></div>"
                )
        parts.append("<h2>Unembedding of the '(' verdict direction (final step)</h2>")
        un = ok[-1]["unembed"]
        parts.append(
            table(
                ["layer", "space/side", "top tokens"],
                [
                    [layer, side, " | ".join(f"{t!r}" for t, _ in toks)]
                    for layer, d in un.items()
                    for side, toks in d.items()
                ],
            )
        )
    from analysis.components.report import component_section

    parts += component_section(em.get("components"))
    tr = em["training"]
    if tr:
        x = [r.get("step") for r in tr]
        parts.append("<h2>Training</h2>")
        keys = {
            "reward": "rewards/countdown_reward/mean",
            "success": "rewards/success/mean",
            "format": "rewards/has_answer/mean",
            "truncated": "completions/clipped_ratio",
        }
        parts.append(
            lines(
                x,
                {n: [r.get(k) for r in tr] for n, k in keys.items() if any(k in r for r in tr)},
                "training batch (per GRPO step)",
                "step",
            )
        )
    ev = em["eval"]
    if ev:
        parts.append(
            lines(
                [r["step"] for r in ev],
                {
                    k: [r.get(k) for r in ev]
                    for k in (
                        "success_rate",
                        "false_accept_given_wrong",
                        "line_verdict_matches_truth",
                        "false_reject_given_right",
                    )
                },
                "held-out evaluation during training",
                "step",
            )
        )
    parts.append(f"<details><summary>summary.json</summary><pre>{html.escape(_short(summary))}</pre></details>")
    head = f"<!doctype html><html><head><meta charset='utf-8'><style>{CSS}</style></head>"
    return head + f"<body>{''.join(parts)}</body></html>"


def _short(summary: dict[str, Any]) -> str:
    import json

    short = {k: v for k, v in summary.items() if k not in ("per_step", "fixed_text")}
    if "fixed_text" in summary:
        short["fixed_text"] = {k: v for k, v in summary["fixed_text"].items() if k != "per_step"}
    return json.dumps(short, indent=1)
