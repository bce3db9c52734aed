"""The combined report of a study (``make study``): every metric vs step over the RL runs and each control arm's
runs, and RL minus control with an exact test corrected over the table.

Sources, per run: ``eval.jsonl`` (held-out behaviour logged by ``make train``: success, false accepts and rejects,
lines, the degeneracy counters) and ``analysis/summary.json`` (the fixed-text headline of every checkpoint; the
keys read are :data:`analysis.study.metrics.FIXED`, one line per metric).

What RL taught is read as a *change*, last checkpoint minus first, per run. Each control (``shuffled``,
``format``) is an arm of its own runs with seeds distinct from the RL seeds (a control sharing an RL run's seed
would share its data order and sampling, so the two would not be independent draws). Per metric and control:
``RL minus control`` = mean of the RL runs' changes minus mean of the control runs' changes, with

* an exact permutation p over runs (:func:`analysis.study.stats.permutation_test`), the unit of evidence being
  the run, since everything within a run shares its seed;
* Holm's adjustment of those p-values across every row of the table (all metrics x controls), because a table of
  ~15-30 tests at 0.05 each finds something by chance;
* a bootstrap interval over runs within each arm, descriptive only.

One metric is the study's *primary* outcome, named in its preset before the runs (default: the share of completions
with verdict lines): it is answered first, at its own exact p. The other answers ("yes" / "no, the opposite" / "not
resolved") are secondary and follow the Holm-adjusted p at 0.05 with the direction from the sign, never an
interval's overlap. The floor an exact test puts on p (3 vs 3 runs: 0.1) is stated in the report, since with it
nothing can be significant. The report also shows the hash of the analysis config the study
froze before its first run (``analysis/study/runs.py``) and whether it is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.study.metrics import EVAL, FIXED, METRICS, PRIMARY, QUESTIONS
from analysis.study.stats import bootstrap_diff, holm, permutation_test, smallest_p
from tasks.atomic import write_text

ALPHA = 0.05  # family-wise error rate of the table (Holm)
N_BOOT = 10_000  # bootstrap replicates per row (descriptive interval)


def _value(x: Any) -> float | None:
    if isinstance(x, dict):
        x = x.get("value")
    return None if x is None else float(x)


def run_series(run: Path) -> dict[str, dict[int, float | None]]:
    """metric -> {step: value} for one run (missing files give empty series)."""
    out: dict[str, dict[int, float | None]] = {m: {} for m in METRICS}
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


def half_change_step(series: dict[int, float | None]) -> int | None:
    """The first step at which the change from the first step reaches half of the last step's change (None when
    the run has no change): when a run's change happened."""
    total = change(series)
    if not total:
        return None
    steps = sorted(series)
    first = series[steps[0]]
    for st in steps[1:]:
        v = series[st]
        if v is not None and first is not None and (v - first) / total >= 0.5:
            return st
    return None


def _changes(arm: dict[str, dict], metric: str) -> tuple[list[str], list[float]]:
    """The runs of one arm with a change for ``metric``, and those changes (runs missing either end left out)."""
    pairs = [(n, c) for n, s in arm.items() if (c := change(s[metric])) is not None]
    return [n for n, _ in pairs], [c for _, c in pairs]


def arm_row(rl: Sequence[float], control: Sequence[float], n_boot: int = N_BOOT) -> dict[str, Any]:
    """RL minus control for one metric and one control: the difference of the arms' mean changes, its bootstrap
    interval over runs and the exact permutation p (Holm's adjustment is added by :func:`compare`, over the table)."""
    test = permutation_test(rl, control)
    return {
        "rl_minus_control": test["diff"],
        "bootstrap": bootstrap_diff(rl, control, n_boot=n_boot, seed=0),
        "permutation_p": test["p"],
        "min_p": test["min_p"],
        "exact": test["exact"],
        "n_rl": len(rl),
        "n_control": len(control),
    }


def verdict(diff: float | None, holm_p: float | None, min_p: float, sign: int, adjusted: bool = True) -> str:
    """ "yes" / "no, the opposite" / "not resolved (...)" from the Holm-adjusted permutation p at :data:`ALPHA`,
    the direction from the difference's sign (``sign``: the direction the question asks about); ``adjusted=False``
    for the primary outcome's own p. Never from an interval: with 3 runs per arm the bootstrap interval is
    descriptive only."""
    if diff is None or holm_p is None:
        return "not resolved (an arm has no runs with this metric)"
    if min_p > ALPHA:
        return f"not resolved (with these arm sizes no p can be below {min_p:.3f})"
    if holm_p > ALPHA:
        return f"not resolved ({'Holm-adjusted ' if adjusted else ''}p = {holm_p:.3f} > {ALPHA})"
    return "yes" if diff * sign > 0 else "no, the opposite"


def seeds_needed(alpha: float) -> int:
    """Runs per arm (equal arms) for the smallest achievable permutation p to reach ``alpha``."""
    n = 1
    while smallest_p(n, n) > alpha:
        n += 1
    return n


def compare(runs: dict[str, tuple[str, dict]], primary: str = PRIMARY) -> dict[str, Any]:
    """Per metric and control arm: RL changes per run, the control's changes per run, RL minus control with its
    bootstrap interval and permutation p, Holm's p across every row of the table; the per-question answers; and
    ``tests``: the rows counted, the arms' sizes, the smallest achievable p and the sentences the report shows.

    ``primary``: the one outcome the study declared before its runs (its preset's ``primary``). It is answered
    first, at its own permutation p: a single test named in advance needs no correction for the table, which
    holds everything else (the secondary outcomes, Holm-adjusted)."""
    rl = {n: s for n, (k, s) in runs.items() if k == "rl"}
    arms: dict[str, dict[str, dict]] = {}
    for n, (k, s) in runs.items():
        if k != "rl":
            arms.setdefault(k, {})[n] = s
    out: dict[str, Any] = {"metrics": {}, "answers": []}
    rows: list[dict[str, Any]] = []
    for m in METRICS:
        rl_runs, rl_changes = _changes(rl, m)
        halves = [half_change_step(s[m]) for s in rl.values()]
        row: dict[str, Any] = {"rl_runs": rl_runs, "rl_changes": rl_changes, "rl_half_steps": halves, "controls": {}}
        for cname, arm in arms.items():
            c_runs, c_changes = _changes(arm, m)
            mean = float(np.mean(c_changes)) if c_changes else None
            cell = {"runs": c_runs, "changes": c_changes, "change": mean, **arm_row(rl_changes, c_changes)}
            cell["half_steps"] = [half_change_step(s[m]) for s in arm.values()]
            row["controls"][cname] = cell
            rows.append(cell)
        out["metrics"][m] = row
    for cell, adjusted in zip(rows, holm([r["permutation_p"] for r in rows]), strict=True):
        cell["holm_p"] = adjusted
    k = sum(r["permutation_p"] is not None for r in rows)
    out["primary"] = {"metric": primary, "answers": []}
    asked = QUESTIONS.get(primary, (f"Does {primary} rise more under RL than under the control?", +1))
    items = [(primary, asked), *((m, q) for m, q in QUESTIONS.items() if m != primary)]
    for i, (m, (question, sign)) in enumerate(items):
        is_primary = i == 0
        row = out["metrics"][m]
        for cname, cell in row["controls"].items():
            if not cell["changes"] or not row["rl_changes"]:
                continue
            p = cell["permutation_p"] if is_primary else cell["holm_p"]
            b = cell["bootstrap"]
            ci = "" if b["lo"] is None else f" [{b['lo']:+.3f}, {b['hi']:+.3f}]"
            tested = (
                f"permutation p = {p:.3f} (the primary outcome: no correction)"
                if is_primary
                else f"permutation p = {cell['permutation_p']:.3f}, Holm p = {p:.3f} ({k} rows)"
            )
            (out["primary"]["answers"] if is_primary else out["answers"]).append(
                f"{question} ({cname}) {verdict(cell['rl_minus_control'], p, cell['min_p'], sign, not is_primary)}: "
                f"RL change {np.mean(row['rl_changes']):+.3f} over {cell['n_rl']} runs, {cname} {cell['change']:+.3f} "
                f"over {cell['n_control']} runs, difference {cell['rl_minus_control']:+.3f}{ci}, {tested}."
            )
    out["tests"] = statistics_note(len(rl), {c: len(a) for c, a in arms.items()}, k)
    return out


def statistics_note(n_rl: int, n_controls: dict[str, int], k: int) -> dict[str, Any]:
    """What the report says about its statistics: the test, the correction, the interval (one sentence each), and
    the floor the arm sizes put on p, said plainly when it makes a significant result impossible."""
    sizes = {c: {"rl": n_rl, "control": n, "min_p": smallest_p(n_rl, n)} for c, n in n_controls.items()}
    few = min([n_rl, *n_controls.values()])
    lines = [
        "Exact permutation test over runs: under the null that RL and control runs' changes are exchangeable, every "
        "split of the pooled runs into arms of these sizes is equally likely; p is the share of splits whose mean "
        "difference is at least as large in magnitude as the observed one.",
        f"Holm's step-down correction across the table's {k} rows (every metric x control) controls the family-wise "
        f"error rate at {ALPHA:.0%} without assuming the rows are independent; the answers use the Holm-adjusted p "
        "at 0.05, their direction from the sign of RL minus control.",
        f"The bootstrap interval resamples runs within each arm; with {few} runs per arm it is narrow and only "
        "descriptive (no verdict uses it).",
    ]
    for c, s in sizes.items():
        floor = f"With {s['rl']} RL vs {s['control']} {c} runs the smallest achievable p is {s['min_p']:.3f}"
        if s["min_p"] > ALPHA:
            lines.append(
                f"{floor}: nothing in the {c} rows can be significant at {ALPHA}, whatever the data; run at least "
                f"{seeds_needed(ALPHA)} seeds per arm ({seeds_needed(ALPHA)} vs {seeds_needed(ALPHA)}: "
                f"{smallest_p(seeds_needed(ALPHA), seeds_needed(ALPHA)):.3f})."
            )
        else:
            lines.append(f"{floor}.")
    if k > 1:
        n = seeds_needed(ALPHA / k)
        lines.append(
            f"After Holm's correction over {k} rows, the smallest p must be at most {ALPHA}/{k} = {ALPHA / k:.4f}: "
            f"{n} vs {n} runs per arm (smallest p {smallest_p(n, n):.4f}) can reach it."
        )
    return {"rows": k, "alpha": ALPHA, "arms": sizes, "lines": lines}


def write_report(
    directory: Path, specs: Sequence[tuple[str, str]], frozen: dict[str, Any] | None = None, primary: str = PRIMARY
) -> Path:
    """Write ``report.html`` and ``summary.json`` of the study in ``directory``; returns the report's path.

    ``frozen``: the analysis config the study froze before its runs (``analysis/study/runs.py``: hash, time, path,
    whether it was frozen before any run started and whether it is unchanged); recorded in both files. ``primary``:
    the outcome the study declared in advance (:func:`compare`)."""
    from analysis.cache import write_json
    from analysis.study.finals import final_checkpoints
    from analysis.study.plots import render

    runs = {name: (kind, run_series(directory / name)) for name, kind in specs}
    result = compare(runs, primary)
    frozen = frozen or {}
    result["analysis_config_hash"] = frozen.get("analysis_config_hash")
    result["analysis_config_frozen_at"] = frozen.get("analysis_config_frozen_at")
    result["analysis_config"] = frozen
    result["runs"] = {n: k for n, (k, _) in runs.items()}
    result["series"] = {
        n: {m: {str(k): v for k, v in s.items()} for m, s in ser.items()} for n, (_, ser) in runs.items()
    }
    result["finals"] = final_checkpoints(directory, [n for n, _ in specs])
    write_json(directory / "summary.json", result)
    return write_text(directory / "report.html", render(directory.name, runs, result))
