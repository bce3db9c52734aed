"""Steering on fixed text: does a verdict direction make a checkpoint accept a wrong line?

Cases are the counterfactual ``wrong`` lines (a wrong expression stated as its true value) of one problem role,
cut at the steered position:

* ``before_paren``: right after the stated value, i.e. at the position that predicts " (" (the original study
  added its vector there, so the model may accept without a "(" at all: "= 52! Yes, we got it!");
* ``paren``: right after the "(" (only the verdict word can change).

The vector is added at the last token of the cut text only, the model continues greedily, and the line (the cut
text's line + the continuation up to the newline) is judged by :attr:`tasks.countdown.trace.Attempt.accepted`
(acceptance in any form). Every outcome is kept per line (:func:`flip_outcomes`) and rates are taken on line sets
fixed before analysis (:func:`rates_on`): the wrong lines the *first* checkpoint rejects unsteered, and all wrong
lines; so every checkpoint is scored on the same lines, never on "what this checkpoint happens to reject".
Controls at the same scale and norm: random directions, the logit direction, the class-mean difference and an
unrelated label's probe. Rates carry bootstrap CIs over problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis import stats
from analysis.splits import role_mask
from analysis.steering.evaluate import continue_prefixes
from tasks.countdown.trace import parse_attempts, parse_line

POSITIONS = ("before_paren", "paren")
PROBES = ("own", "final")  # the probe directions; every other named direction is a control
CONTROLS = ("logit", "meandiff", "parity")


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
    """Up to ``limit`` cases from the counterfactual ``wrong`` lines of problems with ``role``, one text per
    (problem, line position). Ordered so that the first cases take one position per problem, cycling the position
    with the problem (then a second position each, ...): every position is represented, and no problem dominates."""
    found: dict[tuple[int, int], Case] = {}
    for r in records:
        key = (int(r["problem"]), int(r.get("position", 0)))
        if r.get("category") != "wrong" or key in found:
            continue
        if not role_mask(np.array([r["problem"]]), roles, role)[0]:
            continue
        a = parse_attempts(r["completion"], r["numbers"], r["target"])[-1]
        if not a.parsed or a.paren_span is None or a.stated_span is None:
            continue
        cut = a.paren_span[0] + 1 if position == "paren" else a.stated_span[1]
        start = len(r["prompt"]) + a.line_span[0]
        found[key] = Case(r["prompt"] + r["completion"][:cut], start, tuple(r["numbers"]), r["target"], r["problem"])
    span = max((k[1] for k in found), default=0) + 1
    order = sorted(found, key=lambda k: ((k[1] - k[0]) % span, k[0]))
    return [found[k] for k in order[:limit]]


def accepted(case: Case, continuation: str) -> bool:
    """Whether the tested line, completed by ``continuation``, is accepted in any form."""
    line = case.prefix[case.line_start :] + continuation.split("\n")[0]
    return parse_line(line, 0, len(line), case.numbers, case.target).accepted is True


def flip_outcomes(
    model: Any,
    tok: Any,
    cases: Sequence[Case],
    directions: dict[str, dict[int, np.ndarray]],
    randoms: Sequence[dict[int, np.ndarray]],
    new_tokens: int,
    batch_size: int,
) -> dict[str, Any]:
    """Whether each case's line is accepted unsteered, under each named direction and under each random one.
    Directions are per-layer vectors already scaled (:func:`scaled_vectors`). Raw 0/1 lists, so that rates can be
    taken on any line set fixed in advance (:func:`rates_on`), the same set at every checkpoint."""
    names = list(directions)
    conds = [{}] + [_tensors(directions[n]) for n in names] + [_tensors(r) for r in randoms]
    texts = continue_prefixes(model, tok, [c.prefix for c in cases], conds, new_tokens, batch_size)

    def judged(k: int) -> list[int]:
        return [int(accepted(c, texts[k][i])) for i, c in enumerate(cases)]

    out: dict[str, Any] = {
        "problems": [c.problem for c in cases],
        "unsteered": judged(0),
        "accept": {n: judged(1 + k) for k, n in enumerate(names)},
        "random": [judged(1 + len(names) + j) for j in range(len(randoms))],
    }
    rejected = [i for i, a in enumerate(out["unsteered"]) if not a]
    if rejected:
        i = rejected[0]
        out["example"] = {
            "line": cases[i].prefix[cases[i].line_start :],
            "unsteered": texts[0][i][:60],
            **{n: texts[1 + k][i][:60] for k, n in enumerate(names)},
        }
    return out


def _tensors(vectors: dict[int, np.ndarray]) -> dict[int, Any]:
    import torch

    return {layer: torch.tensor(v, dtype=torch.float32) for layer, v in vectors.items()}


def scaled_vectors(units: dict[int, np.ndarray], scale: float, norms: dict[int, float] | None) -> dict[int, np.ndarray]:
    """``scale`` times each layer's unit vector, times that layer's residual norm when the scale is relative
    (``norms`` given), so one relative value means the same push at every layer and checkpoint."""
    return {layer: u * scale * (norms[layer] if norms is not None else 1.0) for layer, u in units.items()}


def rates_on(outcomes: dict[str, Any], mask: np.ndarray, n_boot: int) -> dict[str, Any]:
    """Acceptance rates on the cases ``mask`` selects (a line set fixed before analysis), each with a bootstrap CI
    over problems: unsteered, each direction, the random directions' mean, and each direction minus random (paired
    per line). A direction that is a control (logit, class means, unrelated probe) is one more name."""
    mask = np.asarray(mask, dtype=bool)
    groups = np.asarray(outcomes["problems"], dtype=np.int64)[mask]
    out: dict[str, Any] = {"n": int(mask.sum()), "cases": len(mask)}
    out["unsteered"] = stats.mean_ci(np.asarray(outcomes["unsteered"], float)[mask], groups, n_boot=n_boot)
    rand = None
    if outcomes["random"]:
        per = np.asarray(outcomes["random"], dtype=np.float64)[:, mask]
        rand = per.mean(0)
        out["random"] = stats.mean_ci(rand, groups, n_boot=n_boot)
        out["random_max"] = float(per.mean(1).max()) if mask.any() else None
    acc = {name: np.asarray(v, dtype=np.float64)[mask] for name, v in outcomes["accept"].items()}
    for name, a in acc.items():
        out[name] = stats.mean_ci(a, groups, n_boot=n_boot)
        if rand is not None:
            out[f"{name}_minus_random"] = stats.paired_diff_ci(a, rand, groups, n_boot=n_boot)
        if name in PROBES and "logit" in acc:
            out[f"{name}_minus_logit"] = stats.paired_diff_ci(a, acc["logit"], groups, n_boot=n_boot)
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
