"""HTML of a study's combined report: the answers, how they were tested, the frozen analysis config, one plot per
metric (each arm's runs' change from step 0, RL and every control alike, as their mean with a min-max band), and the
table of changes per run with RL minus control, its bootstrap interval, the exact permutation p, Holm's p and the step
at which each run reached half its change."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from analysis.figures import CSS, png, table


def _arms(runs: dict[str, tuple[str, dict]]) -> dict[str, list[dict]]:
    """kind -> its runs' series, RL first, then the controls in the order they ran."""
    arms: dict[str, list[dict]] = {"rl": []}
    for kind, series in runs.values():
        arms.setdefault(kind, []).append(series)
    return arms


def metric_plot(metric: str, runs: dict[str, tuple[str, dict]]) -> str:
    """Each arm's change from the first step vs step (the paired change within each run: its value at a step minus
    its own value at step 0): the arm's mean, and its runs' min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    for i, (kind, arm) in enumerate(_arms(runs).items()):
        series = [s[metric] for s in arm]
        steps = sorted({st for s in series for st in s})
        if not series or not steps:
            continue
        vals = np.array([[np.nan if s.get(st) is None else s[st] for st in steps] for s in series], dtype=float)
        vals = vals - vals[:, :1]  # paired: each run against its own first step
        ok = ~np.all(np.isnan(vals), axis=0)
        if not ok.any():
            continue
        x, v = np.array(steps)[ok], vals[:, ok]
        label = f"RL ({len(arm)} seeds)" if kind == "rl" else f"control: {kind} ({len(arm)} seeds)"
        style = {"ls": "-", "marker": "o"} if kind == "rl" else {"ls": "--", "marker": "s"}
        ax.plot(x, np.nanmean(v, 0), ms=3, color=f"C{i}", label=label, **style)
        ax.fill_between(x, np.nanmin(v, 0), np.nanmax(v, 0), color=f"C{i}", alpha=0.15)
    ax.set_title(f"{metric}: change from step 0", fontsize=9)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return png(fig)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


def _s(x: int | None) -> str:
    return "-" if x is None else str(x)


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _frozen(result: dict[str, Any]) -> str:
    f = result.get("analysis_config") or {}
    if not f.get("analysis_config_hash"):
        return "<p>Analysis config: not frozen (the report was written outside <code>make study</code>).</p>"
    when = "before any of the study's runs started" if f.get("frozen_before_runs") else "after some runs had started"
    state = (
        "unchanged since then (checked before this invocation trained or analysed anything)"
        if f.get("unchanged")
        else "not checked"
    )
    return (
        f"<p>Analysis config: sha256 <code>{html.escape(f['analysis_config_hash'])}</code>, frozen "
        f"{html.escape(str(f.get('analysis_config_frozen_at')))} ({when}) in "
        f"<code>{html.escape(str(f.get('path')))}</code>; {state}.</p>"
    )


def _finals(runs: dict[str, tuple[str, dict]], finals: dict[str, dict[str, Any]]) -> list[str]:
    """The table of each run's last checkpoint: value [paired 95% interval over problems] per metric."""
    if not finals:
        return []
    from analysis.study.finals import FINAL

    def cell(x: dict[str, Any] | None) -> str:
        if not x:
            return "-"
        ci = "" if x.get("lo") is None else f" [{x['lo']:+.2f}, {x['hi']:+.2f}]"
        return f"{x['value']:+.2f}{ci}"

    rows = [[n, runs[n][0], f["step"], *(cell(f[m]) for m in FINAL)] for n, f in finals.items()]
    header = ["run", "arm", "step", *(m.removeprefix("fixed text: ") for m in FINAL)]
    note = (
        "<p>Each run's own analysis at its last checkpoint (report problems; intervals: bootstrap over problems).</p>"
    )
    return ["<h2>Where each run ended</h2>", note, table(header, rows)]


def render(name: str, runs: dict[str, tuple[str, dict]], result: dict[str, Any]) -> str:
    parts = [f"<h1>Study {html.escape(name)}</h1>"]
    parts.append("<p>Runs: " + ", ".join(f"{html.escape(n)} ({html.escape(k)})" for n, (k, _) in runs.items()) + "</p>")
    parts.append(_frozen(result))
    primary = result.get("primary") or {}
    if primary.get("answers"):
        parts.append(f"<h2>Primary outcome: {html.escape(primary['metric'])}</h2>")
        parts.append("<p>Declared in the study's preset before its runs; tested alone, at its own exact p.</p>")
        parts.append("<ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in primary["answers"]) + "</ul>")
    parts.append("<h2>Secondary outcomes</h2><ul>")
    parts.append("".join(f"<li>{html.escape(a)}</li>" for a in result["answers"]) + "</ul>")
    parts += _finals(runs, result.get("finals") or {})
    parts.append("<h2>How RL is compared with the controls</h2>")
    parts.append(
        "<p>Change = last checkpoint minus first, per run. RL minus control = the RL runs' mean change minus the "
        "control runs' mean change (analysis/study/combined_report.py, analysis/study/stats.py).</p>"
    )
    parts.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in result["tests"]["lines"]) + "</ul>")
    rows = []
    for metric, row in result["metrics"].items():
        for cname, c in row["controls"].items():
            b = c["bootstrap"]
            ci = "" if b["lo"] is None else f" [{b['lo']:+.3f}, {b['hi']:+.3f}]"
            rows.append(
                [
                    metric,
                    cname,
                    " ".join(_f(x) for x in row["rl_changes"]),
                    " ".join(_f(x) for x in c["changes"]),
                    _f(c["rl_minus_control"]) + ci,
                    _p(c["permutation_p"]),
                    _p(c["holm_p"]),
                    " ".join(_s(x) for x in row.get("rl_half_steps", [])),
                    " ".join(_s(x) for x in c.get("half_steps", [])),
                ]
            )
    header = [
        "metric",
        "control",
        "RL changes (per seed)",
        "control changes (per seed)",
        "RL - control [bootstrap 95%]",
        "permutation p",
        "Holm p",
        "RL: step of half the change (per seed)",
        "control: step of half the change",
    ]
    parts.append(table(header, rows))
    parts.append("<h2>Every metric vs step</h2>")
    parts += [metric_plot(m, runs) for m in result["metrics"]]
    head = f"<!doctype html><html><head><meta charset='utf-8'><style>{CSS}</style></head>"
    return head + f"<body>{''.join(parts)}</body></html>"
