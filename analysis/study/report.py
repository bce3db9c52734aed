"""The combined report of a study (``make study``): every metric vs step over RL seeds and controls, and RL minus
control with an interval.

Sources, per run: ``eval.jsonl`` (held-out behaviour logged by ``make train``: success, false accepts and rejects,
lines, the degeneracy counters) and ``analysis/summary.json`` (the fixed-text headline of every checkpoint).

What RL taught is read as a *change*, last checkpoint minus first, compared between RL and each control:
``mean(RL seeds' changes) - control change``. Its interval treats the control as one more draw with the RL runs'
seed-to-seed spread: standard error ``sd_seeds * sqrt(1/n + 1)``, Student t with ``n - 1`` degrees of freedom
(so it needs two or more seeds; with one it is reported without an interval). Within-run sampling noise is part of
the seed-to-seed spread, so it is not added again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.atomic import write_text

EVAL = {
    "success": "success_rate",
    "false accepts | wrong": "false_accept_given_wrong",
    "false rejects | right": "false_reject_given_right",
    "lines per completion": "lines_per_completion",
    "completions with verdict lines": "verdict_share",
    "repeated attempt lines": "repeated_lines",
    "fabricated equalities": "fabricated_equalities",
    "identical lines with both verdicts": "both_verdicts",
}
FIXED = {
    "fixed text: accepts slips": ("accepts", "slip"),
    "fixed text: accepts right lines": ("accepts", "right"),
    "fixed text: content effect": ("content_effect",),
    "fixed text: position effect": ("position_effect",),
    "fixed text: verdict probe AUROC": ("verdict_probe_auroc",),
    "fixed text: truth probe AUROC (value)": ("truth_probe_auroc_at_value",),
    "fixed text: cosine with final direction": ("cosine_with_final",),
}
QUESTIONS = {
    "false accepts | wrong": "Do false accepts fall more under RL than under the control?",
    "fixed text: verdict probe AUROC": "Does the verdict direction change more under RL than under the control?",
    "fixed text: truth probe AUROC (value)": "Does the truth direction change more under RL than under the control?",
}


def _value(x: Any) -> float | None:
    if isinstance(x, dict):
        x = x.get("value")
    return None if x is None else float(x)


def run_series(run: Path) -> dict[str, dict[int, float | None]]:
    """metric -> {step: value} for one run (missing files give empty series)."""
    out: dict[str, dict[int, float | None]] = {m: {} for m in (*EVAL, *FIXED)}
    ev = run / "eval.jsonl"
    if ev.is_file():
        for line in ev.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            for m, k in EVAL.items():
                out[m][int(row["step"])] = row.get(k)
    sm = run / "analysis" / "summary.json"
    if sm.is_file():
        for head in (json.loads(sm.read_text()).get("fixed_text") or {}).get("per_step", []):
            for m, path in FIXED.items():
                x: Any = head
                for p in path:
                    x = (x or {}).get(p) if isinstance(x, dict) else None
                out[m][int(head["step"])] = _value(x)
    return out


def change(series: dict[int, float | None]) -> float | None:
    """Last step's value minus the first step's (None when either is missing)."""
    if not series:
        return None
    steps = sorted(series)
    a, b = series[steps[0]], series[steps[-1]]
    return None if a is None or b is None else b - a


def rl_minus_control(rl: Sequence[float], control: float | None) -> dict[str, Any]:
    """mean(rl) - control with the interval described in the module docstring (None values where a side is
    missing)."""
    from scipy.stats import t

    n = len(rl)
    if control is None or n == 0:
        return {"value": None, "lo": None, "hi": None, "n_seeds": n}
    diff = float(np.mean(rl)) - control
    if n < 2:
        return {"value": diff, "lo": None, "hi": None, "n_seeds": n}
    se = float(np.std(rl, ddof=1)) * math.sqrt(1 / n + 1)
    q = float(t.ppf(0.975, n - 1))
    return {"value": diff, "lo": diff - q * se, "hi": diff + q * se, "n_seeds": n}


def _verdict(d: dict[str, Any], decrease: bool) -> str:
    if d["lo"] is None:
        return "not resolved (one seed: no interval)"
    better = d["hi"] < 0 if decrease else d["lo"] > 0
    worse = d["lo"] > 0 if decrease else d["hi"] < 0
    return "yes" if better else "no, the opposite" if worse else "not resolved (the interval includes 0)"


def compare(runs: dict[str, tuple[str, dict]]) -> dict[str, Any]:
    """Per metric: RL changes per seed, each control's change, RL minus control; plus the per-question answers."""
    rl = {n: s for n, (k, s) in runs.items() if k == "rl"}
    controls = {n: s for n, (k, s) in runs.items() if k != "rl"}
    out: dict[str, Any] = {"metrics": {}, "answers": []}
    for m in (*EVAL, *FIXED):
        rl_changes = [c for c in (change(s[m]) for s in rl.values()) if c is not None]
        row: dict[str, Any] = {"rl_changes": rl_changes, "controls": {}}
        for cname, s in controls.items():
            c = change(s[m])
            row["controls"][cname] = {"change": c, "rl_minus_control": rl_minus_control(rl_changes, c)}
            if c is not None and rl_changes and m in QUESTIONS:
                d = row["controls"][cname]["rl_minus_control"]
                decrease = m.startswith("false accepts")
                ci = "" if d["lo"] is None else f" [{d['lo']:+.3f}, {d['hi']:+.3f}]"
                out["answers"].append(
                    f"{QUESTIONS[m]} ({cname}) {_verdict(d, decrease) if decrease else _verdict_change(d)}: RL "
                    f"change {np.mean(rl_changes):+.3f} over {len(rl_changes)} seeds, {cname} {c:+.3f}, "
                    f"difference {d['value']:+.3f}{ci}."
                )
        out["metrics"][m] = row
    return out


def _verdict_change(d: dict[str, Any]) -> str:
    """For 'changes more': the interval of the difference excludes 0 on either side."""
    if d["lo"] is None:
        return "not resolved (one seed: no interval)"
    return "yes" if d["lo"] > 0 or d["hi"] < 0 else "not resolved (the interval includes 0)"


def write_report(directory: Path, specs: Sequence[tuple[str, str]]) -> Path:
    """Write ``report.html`` and ``summary.json`` of the study in ``directory``; returns the report's path."""
    from analysis.cache import write_json
    from analysis.study.plots import render

    runs = {name: (kind, run_series(directory / name)) for name, kind in specs}
    result = compare(runs)
    result["runs"] = {n: k for n, (k, _) in runs.items()}
    result["series"] = {
        n: {m: {str(k): v for k, v in s.items()} for m, s in ser.items()} for n, (_, ser) in runs.items()
    }
    write_json(directory / "summary.json", result)
    return write_text(directory / "report.html", render(directory.name, runs, result))
