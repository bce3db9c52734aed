"""A self-contained HTML report (plots embedded as PNG data URIs, readable offline) and ``summary.json``.

Plots are where a reader would rather look than read: the step x layer probe-accuracy heatmaps, direction cosines
with the final step, the transfer matrix, the steering sweep and steering effect over steps, and training curves.
Tables carry the exact numbers, the unembedded tokens and original vs steered text.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.figures import CSS, heatmap, lines, table


@dataclass(frozen=True)
class ReportInputs:
    """What the sections read: ``em`` the emergence stage's results, ``ok`` the checkpoints analysed without error,
    ``fixed`` the fixed-text stage's results (None when it was off)."""

    run_dir: Path
    em: dict[str, Any]
    ok: list[dict[str, Any]]
    summary: dict[str, Any]
    fixed: dict[str, Any] | None

    @property
    def steps(self) -> list[int]:
        return self.em["steps"]


def render(
    run_dir: Path,
    em: dict[str, Any],
    results: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    fixed: dict[str, Any] | None = None,
) -> str:
    """The whole report as one HTML string: every section of :data:`SECTIONS` in order."""
    r = ReportInputs(run_dir, em, [x for x in results if "error" not in x], summary, fixed)
    parts = [html_part for _, section in SECTIONS for html_part in section(r)]
    head = f"<!doctype html><html><head><meta charset='utf-8'><style>{CSS}</style></head>"
    return head + f"<body>{''.join(parts)}</body></html>"


def _header(r: ReportInputs) -> list[str]:
    from analysis.fixed_text.questions import questions_section

    parts = [f"<h1>Verification direction: {html.escape(r.run_dir.name)}</h1>"]
    parts += questions_section(r.fixed, r.summary.get("fixed_text"))
    parts.append(f"<p>Checkpoints analysed: {r.steps}; summary.json is at the end of this page.</p>")
    dev = r.summary.get("deviations_from_study")
    if dev is not None:
        parts.append(
            "<h3>Deviations from the original study's protocol</h3>"
            + ("<ul>" + "".join(f"<li>{html.escape(d)}</li>" for d in dev) + "</ul>" if dev else "<p>none</p>")
        )
    for b in r.em["broken"]:
        parts.append(f'<p class="broken">step {b["step"]}: NOT analysed: {html.escape(b["error"])}</p>')
    return parts


def _fixed(r: ReportInputs) -> list[str]:
    from analysis.fixed_text.sections import fixed_section

    return fixed_section(r.fixed, r.summary.get("fixed_text"))


def _behaviour(r: ReportInputs) -> list[str]:
    from analysis.stats import fmt_ci

    if not r.ok:
        return []
    kinds, metrics = ("greedy", "sampled"), ("success_ci", "false_accept_ci")
    return [
        "<h2>Behaviour: each checkpoint on its own rollouts</h2><p>What each checkpoint does on the texts it "
        "writes itself (report problems). Changes here mix what a checkpoint writes with how it represents it; the "
        "fixed-text section above separates the two.</p>",
        table(
            ["step", *(f"{k} {m}" for k in kinds for m in ("success", "false accepts | wrong"))],
            [
                [
                    x["step"],
                    *(fmt_ci((x["rollouts"].get(k) or {}).get(m) or {}, pct=True) for k in kinds for m in metrics),
                ]
                for x in r.ok
            ],
        ),
    ]


def _probes(r: ReportInputs) -> list[str]:
    if not r.ok:
        return []
    em, steps = r.em, r.steps
    parts = ["<h3>Probe accuracy, step x layer</h3>"]
    for key in ("paren/verdict", "paren/truth", "eq/verdict", "value/verdict", "paren/stated"):
        parts.append(heatmap(em["accuracy"][key], steps, f"{key} probe accuracy"))
    parts.append(heatmap(em["shuffled"]["paren/verdict"], steps, "paren/verdict shuffled-label control"))
    cols = ("kind", "label", "layer", "accuracy", "auroc", "majority", "shuffled", "disagree_accuracy", "disagree_n")
    parts.append(f"<h3>Final step {steps[-1]}: every probe</h3>")
    parts.append(
        table(
            ["kind", "label", "layer", "acc", "AUROC", "majority", "shuffled", "acc where verdict!=truth", "n"],
            [[x[c] for c in cols] for x in r.ok[-1]["probes"] if x["fit"]],
        )
    )
    return parts


def _direction(r: ReportInputs) -> list[str]:
    em, steps = r.em, r.steps
    if not r.ok:
        return []
    parts = ["<h2>Direction over training</h2>"]
    if em["cosine_with_final"]:
        title = "cosine of '(' verdict direction with final step"
        parts.append(heatmap(em["cosine_with_final"], steps, title, vmin=-1, vmax=1))
    if em["transfer"]:
        title = f"transfer: probe of step (row) on step (col), layer {em['transfer_layer']}"
        parts.append(heatmap(em["transfer"], steps, title, xlabel="tested on step", cols=steps))
    return parts


def _steering(r: ReportInputs) -> list[str]:
    from analysis.stats import fmt_ci

    if not r.ok:
        return []
    st = r.em["steering"]
    parts = ["<h2>Steering</h2>"]
    curves = {
        "W flips wrong->accept": [s["flip_direction"] for s in st],
        "random flips": [s["flip_random"] for s in st],
        "-W flips right->reject": [s["flip_negative_on_right"] for s in st],
    }
    parts.append(lines(r.steps, curves, "flip rate at the chosen scale vs step", "step"))
    last = r.ok[-1]["steering"]
    if "sweep" not in last:
        return parts
    sw = last["sweep"]
    curves = {
        "W": [x["flip_direction"] for x in sw],
        "random": [x["flip_random"] for x in sw],
        "-W on right": [x["flip_negative_on_right"] for x in sw],
    }
    norms = ", ".join(f"L{k} {v:.0f}" for k, v in last["residual_norm"].items())
    title = f"final step: flip rate vs scale (layers {last['layers']}, mean residual norm {norms})"
    parts.append(lines([x["scale"] for x in sw], curves, title, "scale"))
    metrics = ("success", "format", "wrong_accepted", "steered_wrong_accepted")
    rows = [
        [
            k + (f" ({v['draws']} draws pooled)" if v.get("draws") else ""),
            v.get("completions", "-"),
            *(fmt_ci(v.get(f"{m}_ci") or {"value": v[m]}, pct=True) for m in metrics),
        ]
        for k, v in last["free"].items()
    ]
    parts.append(
        table(["condition", "completions", "success", "format", "wrong accepted", "steered wrong accepted"], rows)
    )
    for smp in last["samples"]:
        parts.append(
            f"<p>{smp['numbers']} -> {smp['target']}</p><div class='pair'>"
            f"<pre>{html.escape(smp['original'])}</pre><pre>{html.escape(smp['steered'])}</pre></div>"
        )
    return parts


def _unembedding(r: ReportInputs) -> list[str]:
    if not r.ok:
        return []
    un = r.ok[-1]["unembed"]
    rows = [[layer, side, " | ".join(f"{t!r}" for t, _ in toks)] for layer, d in un.items() for side, toks in d.items()]
    return [
        "<h2>Unembedding of the '(' verdict direction (final step)</h2>",
        table(["layer", "space/side", "top tokens"], rows),
    ]


def _components(r: ReportInputs) -> list[str]:
    from analysis.components.section import component_section

    return component_section(r.em.get("components"))


def _training(r: ReportInputs) -> list[str]:
    parts: list[str] = []
    tr, ev = r.em["training"], r.em["eval"]
    if tr:
        keys = {
            "reward": "rewards/countdown_reward/mean",
            "success": "rewards/success/mean",
            "format": "rewards/has_answer/mean",
            "truncated": "completions/clipped_ratio",
        }
        curves = {n: [x.get(k) for x in tr] for n, k in keys.items() if any(k in x for x in tr)}
        parts += [
            "<h2>Training</h2>",
            lines([x.get("step") for x in tr], curves, "training batch (per GRPO step)", "step"),
        ]
    if ev:
        keys_ev = ("success_rate", "false_accept_given_wrong", "line_verdict_matches_truth", "false_reject_given_right")
        curves = {k: [x.get(k) for x in ev] for k in keys_ev}
        parts.append(lines([x["step"] for x in ev], curves, "held-out evaluation during training", "step"))
    return parts


def _summary(r: ReportInputs) -> list[str]:
    return [f"<details><summary>summary.json</summary><pre>{html.escape(_short(r.summary))}</pre></details>"]


SECTIONS: tuple[tuple[str, Callable[[ReportInputs], list[str]]], ...] = (
    ("Header", _header),
    ("Fixed text", _fixed),
    ("Behaviour", _behaviour),
    ("Probes", _probes),
    ("Direction over training", _direction),
    ("Steering", _steering),
    ("Unembedding", _unembedding),
    ("Components", _components),
    ("Training", _training),
    ("summary.json", _summary),
)
"""The report's sections in page order; each stage of analysis/stages.py names the one that shows it."""


def _short(summary: dict[str, Any]) -> str:
    import json

    short = {k: v for k, v in summary.items() if k not in ("per_step", "fixed_text")}
    if "fixed_text" in summary:
        short["fixed_text"] = {k: v for k, v in summary["fixed_text"].items() if k != "per_step"}
    return json.dumps(short, indent=1)
