"""Steering on fixed text: does a verdict direction make a checkpoint accept a wrong line it rejects?

Cases are the counterfactual ``wrong`` lines (a wrong expression stated as its true value) of one problem role,
cut at the steered position:

* ``before_paren``: right after the stated value, i.e. at the position that predicts " (" (the original study
  added its vector there, so the model may accept without a "(" at all: "= 52! Yes, we got it!");
* ``paren``: right after the "(" (only the verdict word can change).

The vector is added at the last token of the cut text only, the model continues greedily, and the line
(the cut text's line + the continuation up to the newline) is judged by :attr:`tasks.countdown.trace.Attempt.accepted`
(acceptance in any form). Only cases the unsteered model does not accept count, so every rate is caused by the vector.
Controls at the same scale: random directions of the same norm. Rates carry bootstrap CIs over problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis import stats
from analysis.splits import role_mask
from analysis.steering.evaluate import continue_prefixes, scaled
from tasks.countdown.trace import parse_attempts, parse_line

POSITIONS = ("before_paren", "paren")


@dataclass(frozen=True)
class Case:
    """A text cut at the steered position; ``line_start`` is where its last (tested) line begins."""

    prefix: str
    line_start: int
    numbers: tuple[int, ...]
    target: int
    problem: int


def wrong_line_cases(
    records: Sequence[dict[str, Any]], roles: np.ndarray, role: str, position: str, limit: int
) -> list[Case]:
    """Cases from the counterfactual ``wrong`` lines (the "(not" text of each pair) of problems with ``role``."""
    out = []
    for r in records:
        if r.get("category") != "wrong" or r.get("written") != "not":
            continue
        if not role_mask(np.array([r["problem"]]), roles, role)[0]:
            continue
        a = parse_attempts(r["completion"], r["numbers"], r["target"])[-1]
        if not a.parsed or a.paren_span is None or a.stated_span is None:
            continue
        cut = a.paren_span[0] + 1 if position == "paren" else a.stated_span[1]
        start = len(r["prompt"]) + a.line_span[0]
        out.append(Case(r["prompt"] + r["completion"][:cut], start, tuple(r["numbers"]), r["target"], r["problem"]))
        if len(out) >= limit:
            break
    return out


def accepted(case: Case, continuation: str) -> bool:
    """Whether the tested line, completed by ``continuation``, is accepted in any form."""
    line = case.prefix[case.line_start :] + continuation.split("\n")[0]
    return parse_line(line, 0, len(line), case.numbers, case.target).accepted is True


def flip_rates(
    model: Any,
    tok: Any,
    cases: Sequence[Case],
    directions: dict[str, dict[int, np.ndarray]],
    randoms: Sequence[dict[int, np.ndarray]],
    scale: float,
    new_tokens: int,
    batch_size: int,
    n_boot: int,
) -> dict[str, Any]:
    """Flip rate of each named direction (unit vectors per layer, scaled by ``scale``) and of the random ones."""
    names = list(directions)
    conds = [{}] + [scaled(directions[n], scale) for n in names] + [scaled(r, scale) for r in randoms]
    texts = continue_prefixes(model, tok, [c.prefix for c in cases], conds, new_tokens, batch_size)
    keep = [i for i, c in enumerate(cases) if not accepted(c, texts[0][i])]
    groups = np.array([cases[i].problem for i in keep], dtype=np.int64)
    out: dict[str, Any] = {"scale": float(scale), "cases": len(cases), "n": len(keep)}
    flips = {}
    for k, n in enumerate(names):
        flips[n] = np.array([accepted(cases[i], texts[1 + k][i]) for i in keep], dtype=np.float64)
        out[n] = stats.mean_ci(flips[n], groups, n_boot=n_boot)
    if randoms:
        base = 1 + len(names)
        per = np.array(
            [[accepted(cases[i], texts[base + j][i]) for i in keep] for j in range(len(randoms))], dtype=np.float64
        ).reshape(len(randoms), len(keep))
        rand = per.mean(0)
        out["random"] = stats.mean_ci(rand, groups, n_boot=n_boot)
        out["random_max"] = float(per.mean(1).max()) if len(keep) else None
        for n in names:
            out[f"{n}_minus_random"] = stats.paired_diff_ci(flips[n], rand, groups, n_boot=n_boot)
    if keep:
        i = keep[0]
        out["example"] = {
            "line": cases[i].prefix[cases[i].line_start :],
            "unsteered": texts[0][i][:60],
            **{n: texts[1 + k][i][:60] for k, n in enumerate(names)},
        }
    return out


def choose_scale(sweep: Sequence[dict[str, Any]], name: str, target: float) -> float:
    """The smallest positive scale whose ``name`` flip rate reaches ``target``; else the smallest positive scale with
    the best rate; the largest swept scale when nothing flips at all (the most generous test of a null)."""

    def rate(row: dict[str, Any]) -> float:
        v = (row.get(name) or {}).get("value")
        return v if v is not None else 0.0

    positive = [r for r in sweep if r["scale"] > 0]
    if not positive:
        return 0.0
    hit = [r["scale"] for r in positive if rate(r) >= target]
    if hit:
        return min(hit)
    best = max(rate(r) for r in positive)
    if best == 0:
        return max(r["scale"] for r in positive)
    return min(r["scale"] for r in positive if rate(r) == best)
