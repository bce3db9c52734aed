"""HTML of a study's combined report: the answers, one plot per metric (RL seeds' mean with their min-max band, each
control as its own line), and the table of changes with RL minus control and its interval."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from analysis.report import CSS, _png, _table


def metric_plot(metric: str, runs: dict[str, tuple[str, dict]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    rl = [s[metric] for k, s in runs.values() if k == "rl"]
    steps = sorted({st for s in rl for st in s})
    if rl and steps:
        vals = np.array([[np.nan if s.get(st) is None else s[st] for st in steps] for s in rl], dtype=float)
        ok = ~np.all(np.isnan(vals), axis=0)
        if ok.any():
            x = np.array(steps)[ok]
            v = vals[:, ok]
            ax.plot(x, np.nanmean(v, 0), marker="o", ms=3, color="C0", label=f"RL ({len(rl)} seeds)")
            ax.fill_between(x, np.nanmin(v, 0), np.nanmax(v, 0), color="C0", alpha=0.2)
    for i, (name, (_, s)) in enumerate((n, r) for n, r in runs.items() if r[0] != "rl"):
        pts = sorted((st, y) for st, y in s[metric].items() if y is not None)
        if pts:
            ax.plot(*zip(*pts, strict=True), ls="--", marker="s", ms=3, color=f"C{i + 1}", label=f"control: {name}")
    ax.set_title(metric, fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


def render(name: str, runs: dict[str, tuple[str, dict]], result: dict[str, Any]) -> str:
    parts = [f"<h1>Study {html.escape(name)}</h1>"]
    parts.append("<p>Runs: " + ", ".join(f"{html.escape(n)} ({html.escape(k)})" for n, (k, _) in runs.items()) + "</p>")
    parts.append("<h2>Answers</h2><ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in result["answers"]) + "</ul>")
    parts.append(
        "<p>Change = last checkpoint minus first. RL minus control: the RL seeds' mean change minus the control's, "
        "95% interval from the seeds' spread (the control counted as one more draw; analysis/study/report.py).</p>"
    )
    rows = []
    for metric, row in result["metrics"].items():
        for cname, c in row["controls"].items():
            d = c["rl_minus_control"]
            ci = "" if d["lo"] is None else f" [{d['lo']:+.3f}, {d['hi']:+.3f}]"
            per_seed = " ".join(_f(x) for x in row["rl_changes"])
            rows.append([metric, per_seed, cname, _f(c["change"]), _f(d["value"]) + ci])
    parts.append(_table(["metric", "RL changes (per seed)", "control", "control change", "RL - control"], rows))
    parts.append("<h2>Every metric vs step</h2>")
    parts += [metric_plot(m, runs) for m in result["metrics"]]
    head = f"<!doctype html><html><head><meta charset='utf-8'><style>{CSS}</style></head>"
    return head + f"<body>{''.join(parts)}</body></html>"
