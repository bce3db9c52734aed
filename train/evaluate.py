"""Held-out success and verification metrics of a checkpoint's completions.

Success alone cannot tell "RL taught the model to check its work" from "RL taught it to commit to its first
guess" (both raise reward; the notes measured the second). So every checkpoint is scored on both: answer success
and format (the TinyZero reward), and, from the chain-of-thought parser, how its verdicts relate to the truth of
each attempt line: agreement, false accepts ("this works" on a wrong line), false rejects ("not" on a right
line), whether the verdict follows the value the model itself wrote, arithmetic accuracy and lines per
completion. The metrics are pure functions of text, so the same code scores vLLM and HF generations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tasks.countdown.degeneracy import LineCounts, count_lines, rates
from tasks.countdown.generate import Problem
from tasks.countdown.reward import breakdown
from tasks.countdown.trace import parse_attempts


@dataclass(frozen=True)
class EvalMetrics:
    """Rates over all completions (``*_rate`` of completions) and over attempt lines (``line_*``)."""

    completions: int
    success_rate: float  # reward == correct score
    format_rate: float  # an answer tag on the last line
    mean_reward: float
    truncation_rate: float  # completions cut at the token limit
    lines_per_completion: float
    line_verdict_matches_truth: float  # verdict "this" exactly on the right lines, among lines with a verdict
    line_false_accept: float  # "this" on a wrong line, share of lines with a verdict
    line_false_reject: float  # "not" on a right line, share of lines with a verdict
    false_accept_given_wrong: float  # P(this | wrong line)
    false_reject_given_right: float  # P(not | right line)
    line_verdict_follows_written: float  # verdict "this" exactly when the written value is the target
    line_arithmetic_ok: float  # written value == true value
    unparsed_lines: float  # share of candidate lines the parser could not read
    # how real the search is (tasks/countdown/degeneracy.py): completions with a judged line, attempt lines that
    # repeat an earlier one, wrong lines stating the target, expressions both accepted and rejected
    verdict_share: float = 0.0
    verdict_line_share: float = 0.0  # attempt lines with a verdict / attempt lines (does not grow with length alone)
    repeated_lines: float = 0.0
    fabricated_equalities: float = 0.0
    both_verdicts: float = 0.0
    # successful samples of each problem, in problem order: two checkpoints' counts give a paired standard error
    # of the success change (see :func:`paired_gain_se`)
    solved_per_problem: tuple[int, ...] = ()
    # [numerator, denominator] per problem for the other rates whose change gets an interval (:func:`rate_changes`)
    per_problem: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_gain_se(first: Sequence[int], final: Sequence[int], samples: int) -> float | None:
    """Standard error of the success change between two evaluations of the same problems (rates, not points).

    Both checkpoints answer the same held-out problems, so the change is the mean over problems of each problem's
    change in success rate, and its standard error is their standard deviation over sqrt(#problems). It covers both
    the sampling of completions and which problems were drawn. None when the counts do not pair up.
    """
    if not first or len(first) != len(final) or len(first) < 2 or samples < 1:
        return None
    diffs = [(b - a) / samples for a, b in zip(first, final, strict=True)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return (var / len(diffs)) ** 0.5


PER_PROBLEM = ("verdict_share", "line_verdict_matches_truth", "false_accept_given_wrong")
# success among completions that write verdict lines and among those that do not: does checking pay for this model?
STYLES = ("success_verifying", "success_plain")


def paired_change_ci(
    first: Sequence[Sequence[int]], final: Sequence[Sequence[int]], replicates: int = 2000, seed: int = 0
) -> dict[str, float] | None:
    """Change of a rate between two evaluations of the same problems, with a 95% paired bootstrap interval.

    ``first[i]`` / ``final[i]`` are problem i's ``(numerator, denominator)``; the rate is a ratio of sums, so a
    problem with many judged lines weighs more, as in the logged rate. Problems are resampled with the same draw for
    both evaluations (the pairing removes the problems' difficulty from the spread). numpy only: scipy's
    ``bootstrap`` resamples one statistic of independent samples, not a ratio of paired sums. None when the counts
    do not pair up or a side has no denominator.
    """
    import numpy as np

    if not first or len(first) != len(final):
        return None
    a, b = np.asarray(first, dtype=float), np.asarray(final, dtype=float)
    if a[:, 1].sum() == 0 or b[:, 1].sum() == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(a), size=(replicates, len(a)))
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = b[idx, 0].sum(1) / b[idx, 1].sum(1) - a[idx, 0].sum(1) / a[idx, 1].sum(1)
    reps = reps[np.isfinite(reps)]
    value = b[:, 0].sum() / b[:, 1].sum() - a[:, 0].sum() / a[:, 1].sum()
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return {"value": float(value), "lo": float(lo), "hi": float(hi)}


def rate_ci(counts: Sequence[Sequence[int]], replicates: int = 2000, seed: int = 0) -> dict[str, float] | None:
    """A ratio of sums over problems (``counts[i]`` = problem i's ``(numerator, denominator)``) with a 95% bootstrap
    interval resampling problems, and ``n`` (the denominator's total); None without a denominator."""
    import numpy as np

    a = np.asarray(counts, dtype=float).reshape(-1, 2)
    if a[:, 1].sum() == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(a), size=(replicates, len(a)))
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = a[idx, 0].sum(1) / a[idx, 1].sum(1)
    lo, hi = np.percentile(reps[np.isfinite(reps)], [2.5, 97.5])
    return {"value": float(a[:, 0].sum() / a[:, 1].sum()), "lo": float(lo), "hi": float(hi), "n": int(a[:, 1].sum())}


def success_by_style(metrics: dict[str, Any]) -> dict[str, dict[str, float] | None]:
    """Success of completions with and without verdict lines in one evaluation (:data:`STYLES`), each with its
    interval; empty for evaluations logged before the counts existed."""
    per = metrics.get("per_problem") or {}
    return {k: rate_ci(per[k]) for k in STYLES if k in per}


def _share(num: int, den: int) -> float:
    return num / den if den else 0.0


def score_completions(
    problems: Sequence[Problem], completions: Sequence[Sequence[str]], truncated: Sequence[Sequence[bool]] | None = None
) -> EvalMetrics:
    """Metrics for ``completions[i]`` (several samples) answering ``problems[i]``."""
    n = ok = fmt = 0
    reward = 0.0
    trunc = 0
    lines = verdict_lines = matches = false_acc = false_rej = follows = arith_ok = unparsed = 0
    wrong = right = 0
    solved = []
    counts: list[LineCounts] = []
    per: dict[str, list[tuple[int, int]]] = {k: [] for k in (*PER_PROBLEM, *STYLES)}
    for i, (p, samples) in enumerate(zip(problems, completions, strict=True)):
        solved.append(0)
        judged0, matches0, wrong0, false_acc0, texts0 = verdict_lines, matches, wrong, false_acc, len(counts)
        outcomes: list[int] = []
        for j, text in enumerate(samples):
            n += 1
            b = breakdown(text, p.numbers, p.target)
            reward += b.score
            ok += b.correct
            outcomes.append(int(b.correct))
            solved[-1] += b.correct
            fmt += b.has_answer
            if truncated is not None:
                trunc += bool(truncated[i][j])
            counts.append(count_lines(text, p.numbers, p.target))
            for a in parse_attempts(text, p.numbers, p.target):
                lines += 1
                if not a.parsed:
                    unparsed += 1
                    continue
                arith_ok += a.arithmetic_ok
                if a.verdict is None:
                    continue
                verdict_lines += 1
                accept = a.verdict == "this"
                matches += accept == a.correct
                follows += accept == a.stated_is_target
                if a.correct:
                    right += 1
                    false_rej += not accept
                else:
                    wrong += 1
                    false_acc += accept
        per["verdict_share"].append((sum(c.with_verdict for c in counts[texts0:]), len(samples)))
        styled = [(bool(c.with_verdict), solved_j) for c, solved_j in zip(counts[texts0:], outcomes, strict=True)]
        for key, verifying in zip(STYLES, (True, False), strict=True):
            rows = [ok_j for v, ok_j in styled if v == verifying]
            per[key].append((sum(rows), len(rows)))
        per["line_verdict_matches_truth"].append((matches - matches0, verdict_lines - judged0))
        per["false_accept_given_wrong"].append((false_acc - false_acc0, wrong - wrong0))
    deg = rates(counts)
    return EvalMetrics(
        verdict_share=deg["verdict_share"] or 0.0,
        verdict_line_share=deg["verdict_line_share"] or 0.0,
        repeated_lines=deg["repeated"] or 0.0,
        fabricated_equalities=deg["fabricated"] or 0.0,
        both_verdicts=deg["both_verdicts"] or 0.0,
        completions=n,
        success_rate=_share(ok, n),
        format_rate=_share(fmt, n),
        mean_reward=reward / n if n else 0.0,
        truncation_rate=_share(trunc, n),
        lines_per_completion=_share(lines, n),
        line_verdict_matches_truth=_share(matches, verdict_lines),
        line_false_accept=_share(false_acc, verdict_lines),
        line_false_reject=_share(false_rej, verdict_lines),
        false_accept_given_wrong=_share(false_acc, wrong),
        false_reject_given_right=_share(false_rej, right),
        line_verdict_follows_written=_share(follows, verdict_lines),
        line_arithmetic_ok=_share(arith_ok, lines - unparsed),
        unparsed_lines=_share(unparsed, lines),
        solved_per_problem=tuple(solved),
        per_problem={k: tuple(v) for k, v in per.items()},
    )


def rate_changes(first: dict[str, Any], final: dict[str, Any]) -> dict[str, dict[str, float] | None]:
    """First -> final change of success (from ``solved_per_problem``) and of each :data:`PER_PROBLEM` rate with its
    interval, from two eval.jsonl rows (None for a rate either row lacks per-problem counts for, e.g. rows logged
    before they existed)."""

    def counts(row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row.get("per_problem") or {})
        solved = row.get("solved_per_problem")
        if solved and row.get("completions", 0) % len(solved) == 0:
            out["success_rate"] = [(s, row["completions"] // len(solved)) for s in solved]
        return out

    a, b = counts(first), counts(final)
    return {k: paired_change_ci(a[k], b[k]) if k in a and k in b else None for k in ("success_rate", *PER_PROBLEM)}
