"""A run's ``summary.json``: step 0 against the final checkpoint on held-out problems, with paired intervals.

Also the two splits that tell what RL rewarded: success on problems with one way to the target vs several
(``grpo.min_solutions``), and the mean group advantage verifying and plain rollouts received (metrics.jsonl).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.countdown.generate import Problem
from train import checkpoints as ck
from train.config import TrainConfig
from train.evaluate import paired_gain_se, rate_changes, success_by_style
from train.grpo import solution_counts


def _gain_se_points(first: dict[str, Any], last: dict[str, Any]) -> float | None:
    """Paired standard error of the success change in points (None for evaluations of other shapes)."""
    a, b = first.get("solved_per_problem"), last.get("solved_per_problem") or []
    if not a or first["completions"] != last["completions"] or first["completions"] % len(a):
        return None
    se = paired_gain_se(a, b, first["completions"] // len(a))  # None unless b pairs up with a
    return None if se is None else 100 * se


def success_by_ways(
    problems: list[Problem], first: dict[str, Any], last: dict[str, Any], cfg: TrainConfig
) -> dict[str, dict[str, float]] | None:
    """Success on held-out problems with one way vs several (``grpo.min_solutions`` trains on the latter only).

    None when the evaluations carry no per-problem counts for these problems.
    """
    a, b = first.get("solved_per_problem"), last.get("solved_per_problem")
    if not a or not b or len(a) != len(problems) or len(b) != len(problems):
        return None
    samples = first["completions"] // len(problems)
    ways = solution_counts(problems, cfg)
    out = {}
    for name, keep in (("1", lambda w: w <= 1), ("2+", lambda w: w >= 2)):
        idx = [i for i, w in enumerate(ways) if keep(w)]
        if idx:
            n = samples * len(idx)
            out[name] = {"problems": len(idx), "first": sum(a[i] for i in idx) / n, "final": sum(b[i] for i in idx) / n}
    return out


def advantage_by_style(run_dir: Path, window: int = 10) -> dict[str, Any] | None:
    """From metrics.jsonl: the mean group advantage RL gave verifying and plain rollouts, and the share of rollouts
    that verify, over the first and the last ``window`` logged steps (a step without a style logs NaN and is
    skipped); None for a run logged before these metrics existed."""
    import math

    path = run_dir / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    rows = [r for r in rows if "rewards/verifying/mean" in r]
    if not rows:
        return None

    def mean(part: list[dict[str, Any]], key: str) -> float | None:
        vals = [r[key] for r in part if r.get(key) is not None and not math.isnan(r[key])]
        return sum(vals) / len(vals) if vals else None

    keys = {"verifying": "advantage_verifying", "plain": "advantage_plain", "share_verifying": "verifying"}
    return {
        when: {name: mean(part, f"rewards/{key}/mean") for name, key in keys.items()} | {"steps": len(part)}
        for when, part in (("first", rows[:window]), ("last", rows[-window:]))
    }


def summarize(
    run_dir: Path, problems: list[Problem] | None = None, cfg: TrainConfig | None = None, **extra: Any
) -> dict[str, Any]:
    """Step-0 vs final-checkpoint comparison from eval.jsonl, written to summary.json and returned.

    With the held-out ``problems`` and the run's ``cfg`` it also splits success by the problems' number of ways.
    """
    rows = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines() if x.strip()]
    by_step = {r["step"]: r for r in rows}
    first, last = by_step[min(by_step)], by_step[max(by_step)]
    keys = [
        "success_rate",
        "format_rate",
        "false_accept_given_wrong",
        "false_reject_given_right",
        "line_verdict_matches_truth",
        "line_false_accept",
        "line_false_reject",
        "lines_per_completion",
        "truncation_rate",
        "verdict_share",
        "repeated_lines",
        "fabricated_equalities",
        "both_verdicts",
    ]
    summary = {
        "first_step": first["step"],
        "final_step": last["step"],
        "checkpoints": [s for s, _ in ck.list_checkpoints(run_dir)],
        **{f"{k}/first": first.get(k) for k in keys},  # .get: runs logged before a metric existed
        **{f"{k}/final": last.get(k) for k in keys},
        "success_gain_points": 100 * (last["success_rate"] - first["success_rate"]),
        "success_gain_se_points": _gain_se_points(first, last),
        "changes": rate_changes(first, last),  # rate -> {value, lo, hi}: paired 95% bootstrap over problems
        "success_by_style": {"first": success_by_style(first), "final": success_by_style(last)},
        "false_accept_change_points": 100 * (last["false_accept_given_wrong"] - first["false_accept_given_wrong"]),
        "success_by_ways": success_by_ways(problems, first, last, cfg) if problems and cfg else None,
        "advantage_by_style": advantage_by_style(run_dir),
        **extra,
    }
    ck.write_json(run_dir / "summary.json", summary)
    return summary
