"""The checkpoint's own verdict on the fixed text's counterfactual lines: what it accepts, by line category and by
position, how much the line's content and its position move that, and whether the pairs leak.

The counterfactual lines (:mod:`tasks.countdown.counterfactual`) set verdict, stated == target and truth
independently; every tested line of a problem is written at every position 0..max_prior (after nested earlier
rejected lines), and at one position per problem twice (a this/not pair identical up to "("). The checkpoint's own
verdict at "(" is its output margin ``log P("this") - log P("not")`` (the lens at the last layer); it accepts when
the margin is above 0. A line is one (problem, category, position): the twins of a pair are averaged first (their
margin at "(" is the same), so a pair does not count twice. Both effects are *paired*: the content effect compares
right and wrong lines of the same problem at the same position, the position effect the same line of the same
problem after max_prior rejected lines and after none; differences are taken per problem and the interval is a
bootstrap over problems. Every number is on report problems. ``subset`` indices are those of
:data:`analysis.fixed_text.per_checkpoint.SUBSETS`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis import stats
from analysis.splits import role_mask
from tasks.countdown.counterfactual import CATEGORIES

COUNTERFACTUAL = 1  # index of "counterfactual" in analysis.fixed_text.per_checkpoint.SUBSETS


def _lines(cap: dict[str, np.ndarray], roles: np.ndarray, margin: np.ndarray) -> dict[str, np.ndarray]:
    """One row per counterfactual line of the report problems, sorted by (problem, category, position), with the
    twins of a pair averaged: ``key`` (n, 3), ``accept`` and ``margin`` (output), ``stated`` and ``truth``."""
    cf = (cap["subset"] == COUNTERFACTUAL) & role_mask(cap["problem"], roles, "report")
    idx = np.flatnonzero(cf)
    keys = np.stack([cap[k][idx].astype(np.int64) for k in ("problem", "category", "position")], 1).reshape(-1, 3)
    key, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    out_margin = margin[idx, -1].astype(np.float64)

    def mean(x: np.ndarray) -> np.ndarray:
        return np.bincount(inverse, weights=np.asarray(x, dtype=np.float64), minlength=len(key)) / counts

    out = {"key": key, "accept": mean(out_margin > 0), "margin": mean(out_margin)}
    for label in ("stated", "truth"):
        out[label] = mean(cap[label][idx]) if label in cap else np.full(len(key), np.nan)
    return out


def accept_table(cap: dict[str, np.ndarray], roles: np.ndarray, margin: np.ndarray) -> dict[str, np.ndarray]:
    """Per counterfactual line of the report problems: ``key`` (problem, category index, position), its ``accept``
    (0/1; twins averaged) and output ``margin``, sorted by key.

    Why: the fixed texts are identical at every checkpoint, so these rows align across checkpoints and the run
    level can take paired step-vs-step changes (the same line at two steps) instead of comparing two shares."""
    lines = _lines(cap, roles, margin)
    return {k: lines[k] for k in ("key", "accept", "margin")}


def _grid(lines: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accept as a dense (problem, category, position) array (nan where a line is missing), with the problem ids
    and the positions its axes stand for."""
    key = lines["key"]
    problems, pi = np.unique(key[:, 0], return_inverse=True)
    positions, ki = np.unique(key[:, 2], return_inverse=True)
    grid = np.full((len(problems), len(CATEGORIES), len(positions)), np.nan)
    grid[pi.ravel(), key[:, 1], ki.ravel()] = lines["accept"]
    return grid, problems, positions


def _paired(a: np.ndarray, b: np.ndarray, problems: np.ndarray, n_boot: int) -> dict[str, Any]:
    """Mean over problems of (a - b), where ``a`` and ``b`` are (problems, matched cells) with nan where a cell is
    missing: per problem the mean over the cells present in both, then :func:`stats.paired_diff_ci` over problems
    (one row per problem). ``value_a`` / ``value_b`` are the two means over the same problems."""
    ok = np.isfinite(a) & np.isfinite(b)
    keep = ok.any(1)
    n = ok[keep].sum(1)
    ma = np.where(ok, a, 0.0)[keep].sum(1) / n
    mb = np.where(ok, b, 0.0)[keep].sum(1) / n
    res = stats.paired_diff_ci(ma, mb, problems[keep], n_boot=n_boot)
    any_ = bool(keep.any())
    return {**res, "value_a": float(ma.mean()) if any_ else None, "value_b": float(mb.mean()) if any_ else None}


def _effects(lines: dict[str, np.ndarray], n_boot: int) -> dict[str, Any]:
    """Content effects (right - wrong, right - slip: same problem, same position) and the position effect (position
    max_prior - position 0: same problem, same line; overall and per category)."""
    grid, problems, positions = _grid(lines)
    r, w, s = (CATEGORIES.index(c) for c in ("right", "wrong", "slip"))
    out: dict[str, Any] = {
        "content_effect": _paired(grid[:, r], grid[:, w], problems, n_boot),
        "content_effect_slip": _paired(grid[:, r], grid[:, s], problems, n_boot),
    }
    if len(positions) > 1:
        lo, hi = [int(positions[0]), int(positions[-1])]
        out["position_effect"] = {"positions": [lo, hi], **_paired(grid[:, :, -1], grid[:, :, 0], problems, n_boot)}
        out["position_effect_by_category"] = {
            cat: {"positions": [lo, hi], **_paired(grid[:, c, -1:], grid[:, c, :1], problems, n_boot)}
            for c, cat in enumerate(CATEGORIES)
        }
    return out


def _shares(lines: dict[str, np.ndarray], n_boot: int) -> dict[str, Any]:
    """Accept shares (mean_ci over problems) by category, by position and by (category, position)."""
    key, accept = lines["key"], lines["accept"]
    groups, cat, pos = key[:, 0], key[:, 1], key[:, 2]
    positions = sorted(set(pos.tolist()))

    def share(m: np.ndarray) -> dict[str, Any]:
        return stats.mean_ci(accept[m], groups[m], n_boot=n_boot)

    return {
        "by_category": {c: share(cat == ci) for ci, c in enumerate(CATEGORIES)},
        "by_position": {str(p): share(pos == p) for p in positions},
        "by_category_position": {
            c: {str(p): share((cat == ci) & (pos == p)) for p in positions} for ci, c in enumerate(CATEGORIES)
        },
    }


def own_verdict(
    cap: dict[str, np.ndarray], acts: Any, roles: np.ndarray, margin: np.ndarray, n_boot: int
) -> dict[str, Any]:
    """The checkpoint's own verdict on the counterfactual lines (report problems): the share it accepts (output
    margin > 0) per category, per position and per (category, position); the paired content effects
    (``content_effect``: right - wrong, ``content_effect_slip``: right - slip) and position effects
    (``position_effect`` with its ``positions``, ``position_effect_by_category``); how well the margin separates
    stated == target and truth (AUROC); and the largest activation difference at "(" within a this/not pair
    (``pair_max_diff``, 0: no leakage)."""
    lines = _lines(cap, roles, margin)
    res: dict[str, Any] = {**_shares(lines, n_boot), **_effects(lines, n_boot)}
    groups = lines["key"][:, 0]
    for label in ("stated", "truth"):
        y = lines[label] > 0.5
        ok = np.isfinite(lines[label]).all() and len(np.unique(y)) == 2
        res[f"auroc_{label}"] = stats.auroc_ci(lines["margin"], y, groups, n_boot=n_boot) if ok else None
    res["pair_max_diff"] = _pair_diff(cap, acts)
    return res


def slip_p_not(arrays: dict[str, np.ndarray], roles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slip-line site of the report problems (stated == target, arithmetic wrong; every position, both texts
    of the pair where there is one): the checkpoint's own ``P("not" | "this" or "not")`` at "(" from its output
    margin, and the line's problem. The texts are the same at every checkpoint, so the rows align across steps."""
    cf = (arrays["subset"] == COUNTERFACTUAL) & role_mask(arrays["problem"], roles, "report")
    m = cf & (arrays["category"] == CATEGORIES.index("slip"))
    p_not = 1.0 / (1.0 + np.exp(arrays["margin"][m, -1].astype(np.float64)))
    return p_not, arrays["problem"][m].astype(np.int64)


def _pair_diff(cap: dict[str, np.ndarray], acts: Any) -> float | None:
    """Max |activation difference| at "(" between the two texts of each counterfactual pair, i.e. two sites with
    the same (problem, category, position) (they differ only after "(", so anything above float noise means the
    written verdict leaked into the '(' position). None without pairs' activations."""
    cf = np.flatnonzero(cap["subset"] == COUNTERFACTUAL)
    if acts is None or len(cf) < 2:
        return None
    key = zip(cap["problem"][cf].tolist(), cap["category"][cf].tolist(), cap["position"][cf].tolist(), strict=True)
    first: dict[tuple[int, int, int], int] = {}
    pairs = []
    for i, k in enumerate(key):
        if k in first:
            pairs.append((i, first[k]))
        else:
            first[k] = i
    if not pairs:
        return 0.0
    a, b = (np.array(x) for x in zip(*pairs, strict=True))
    worst = 0.0
    for layer in range(acts.n_layers):
        x = acts.layer("paren", layer)[cf].astype(np.float32)
        worst = max(worst, float(np.abs(x[a] - x[b]).max()))
    return worst
