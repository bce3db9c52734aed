"""Confidence intervals by a cluster bootstrap over problems, as functions of arrays.

Why clusters: the sites and completions of one problem share a prompt (and often a verdict), so they are not
independent draws; resampling rows would treat, say, 8 completions of one problem as 8 pieces of evidence and
give intervals that are too narrow. Here the unit of resampling is the *group* (problem): each replicate draws
the distinct groups with replacement and takes every row of each drawn group (a group drawn twice contributes
its rows twice). The interval is the percentile interval of the replicates.

A statistic is a function ``stat(idx)`` of an index array into the data (with repeats), returning a float or
None (e.g. an AUROC with one class only); replicates that give None or nan are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Stat = Callable[[np.ndarray], float | None]


def _group_rows(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by group, and each distinct group's start and size in that order."""
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, starts, counts


def _draw(rows: tuple[np.ndarray, np.ndarray, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Row indices of one replicate: as many groups as there are, drawn with replacement, all rows of each."""
    order, starts, counts = rows
    g = rng.integers(0, len(counts), len(counts))
    lens = counts[g]
    # position j of the output belongs to drawn group k; its row is starts[g[k]] + (j - first output of k)
    first = np.cumsum(lens) - lens
    pos = np.repeat(starts[g] - first, lens) + np.arange(lens.sum())
    return order[pos]


def _value(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _summary(value: float | None, reps: list[float], alpha: float, n: int, n_groups: int, n_boot: int) -> dict:
    lo = hi = None
    if value is not None and reps:
        lo, hi = (float(q) for q in np.quantile(reps, [alpha / 2, 1 - alpha / 2]))
    return {"value": value, "lo": lo, "hi": hi, "n": n, "groups": n_groups, "n_boot": n_boot}


def bootstrap(stat: Stat, groups: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Cluster-bootstrap ``stat`` over ``groups`` (one label per row). Returns ``value`` (stat on all rows),
    ``lo``/``hi`` (the ``1 - alpha`` percentile interval), ``n`` (rows), ``groups`` (distinct groups) and
    ``n_boot``; value, lo and hi are None when there are no rows (lo/hi also when no replicate is usable)."""
    groups = np.asarray(groups)
    n = len(groups)
    if n == 0:
        return _summary(None, [], alpha, 0, 0, n_boot)
    rows = _group_rows(groups)
    rng = np.random.default_rng(seed)
    reps = [r for _ in range(n_boot) if (r := _value(stat(_draw(rows, rng)))) is not None]
    return _summary(_value(stat(np.arange(n))), reps, alpha, n, len(rows[2]), n_boot)


def _group_weights(groups: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every replicate at once: how often each distinct group is drawn (n_boot, groups), from the same random
    stream :func:`bootstrap` draws one replicate at a time, and each row's group index (rows,)."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(inverse.max()) + 1
    drawn = np.random.default_rng(seed).integers(0, n_groups, (n_boot, n_groups))
    counts = np.zeros((n_boot, n_groups), dtype=np.float64)
    np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1.0)
    return counts, inverse.ravel()


def mean_ci(values: np.ndarray, groups: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Mean of ``values`` with a cluster-bootstrap interval (every replicate at once: a replicate's mean is its
    groups' sums weighted by how often each was drawn, over their sizes weighted the same way; the same
    replicates as :func:`bootstrap`, tested)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return _summary(None, [], alpha, 0, 0, n_boot)
    counts, group = _group_weights(groups, n_boot, seed)
    sums = np.bincount(group, weights=values, minlength=counts.shape[1])
    sizes = np.bincount(group, minlength=counts.shape[1]).astype(np.float64)
    reps = [r for r in ((counts @ sums) / (counts @ sizes)).tolist() if np.isfinite(r)]
    return _summary(_value(float(values.mean())), reps, alpha, len(values), counts.shape[1], n_boot)


def accuracy_ci(pred: np.ndarray, y: np.ndarray, groups: np.ndarray, **kw) -> dict:
    """Fraction of rows where ``pred == y``."""
    return mean_ci(np.asarray(pred) == np.asarray(y), groups, **kw)


def rank_auroc(scores: np.ndarray, y: np.ndarray) -> float | None:
    """AUROC of ``scores`` for boolean ``y`` from average ranks (ties count one half); None with one class."""
    from scipy.stats import rankdata

    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    r = rankdata(scores)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _auroc_reps(scores: np.ndarray, y: np.ndarray, counts: np.ndarray, group: np.ndarray) -> np.ndarray:
    """AUROC of every bootstrap replicate at once (nan where a replicate has one class only): a replicate repeats
    rows, so it is the weighted Mann-Whitney statistic with each row weighted by how often its group was drawn; over
    the distinct score levels (ties count one half) that is one cumulative sum per replicate."""
    n_boot = counts.shape[0]
    levels, level = np.unique(scores, return_inverse=True)
    level = level.ravel()
    weight = counts[:, group]  # (n_boot, rows)
    pos = np.zeros((n_boot, len(levels)))
    neg = np.zeros((n_boot, len(levels)))
    np.add.at(pos.T, level[y], weight[:, y].T)
    np.add.at(neg.T, level[~y], weight[:, ~y].T)
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each level
    n1, n0 = pos.sum(1), neg.sum(1)
    u = (pos * (below + 0.5 * neg)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), u / (n1 * n0), np.nan)


def auroc_ci(
    scores: np.ndarray, y: np.ndarray, groups: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict:
    """AUROC of ``scores`` for the binary labels ``y``; replicates with one class only are skipped.

    The Mann-Whitney statistic (equal to scikit-learn's ``roc_auc_score``, tested), every replicate at once
    (:func:`_auroc_reps`), because the analysis draws hundreds of thousands. The same replicates as
    :func:`bootstrap` with :func:`rank_auroc`."""
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y).astype(bool)
    if len(scores) == 0:
        return _summary(None, [], alpha, 0, 0, n_boot)
    counts, group = _group_weights(groups, n_boot, seed)
    reps = _auroc_reps(scores, y, counts, group)
    reps = reps[np.isfinite(reps)].tolist()
    return _summary(_value(rank_auroc(scores, y)), reps, alpha, len(scores), counts.shape[1], n_boot)


def auroc_contrast_ci(
    scores: Sequence[np.ndarray],
    signs: Sequence[float],
    y: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """``sum(sign_i * AUROC(scores_i))`` over score arrays on the *same* rows and labels, every replicate drawing
    the same problems for all of them: a probe minus the logit lens at one layer (signs +1, -1), a probe at step t
    minus step 0 on identical texts, or the change of the probe's margin over the lens (+1, -1, -1, +1). Pairing
    removes the between-problem variance the AUROCs share, so a change is judged by its own interval, never by
    whether two marginal intervals overlap (a much stricter test, biased toward "no change"). ``values`` are the
    AUROCs."""
    arrays = [np.asarray(a, dtype=np.float64) for a in scores]
    y = np.asarray(y).astype(bool)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return {**_summary(None, [], alpha, len(y), 0, n_boot), "values": None}
    counts, group = _group_weights(groups, n_boot, seed)
    reps = sum(w * _auroc_reps(a, y, counts, group) for w, a in zip(signs, arrays, strict=True))
    values = [rank_auroc(a, y) for a in arrays]
    value = float(sum(w * v for w, v in zip(signs, values, strict=True)))
    out = _summary(_value(value), reps[np.isfinite(reps)].tolist(), alpha, len(y), counts.shape[1], n_boot)
    return {**out, "values": values}


def paired_auroc_diff_ci(scores_a: np.ndarray, scores_b: np.ndarray, y: np.ndarray, groups: np.ndarray, **kw) -> dict:
    """AUROC of ``scores_a`` minus AUROC of ``scores_b`` on the same rows (:func:`auroc_contrast_ci`)."""
    return auroc_contrast_ci([scores_a, scores_b], [1.0, -1.0], y, groups, **kw)


def balanced_accuracy_ci(
    pred: np.ndarray, y: np.ndarray, groups: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict:
    """Mean of the two classes' recalls (0.5 for any constant prediction, unlike accuracy, whose chance level is the
    majority share), with a cluster-bootstrap interval; replicates with one class only are skipped. Every replicate
    at once, as :func:`mean_ci`: per group the counts of true positives, positives, true negatives and negatives,
    weighted by how often the replicate drew the group (the same replicates as :func:`bootstrap`, tested)."""
    pred, y = np.asarray(pred).astype(bool), np.asarray(y).astype(bool)
    if len(y) == 0:
        return _summary(None, [], alpha, 0, 0, n_boot)
    counts, group = _group_weights(groups, n_boot, seed)

    def per_group(m: np.ndarray) -> np.ndarray:
        return counts @ np.bincount(group, weights=m.astype(np.float64), minlength=counts.shape[1])

    with np.errstate(invalid="ignore", divide="ignore"):
        reps = 0.5 * (per_group(pred & y) / per_group(y) + per_group(~pred & ~y) / per_group(~y))
    value = None if y.all() or not y.any() else float(0.5 * (pred[y].mean() + (~pred[~y]).mean()))
    return _summary(value, reps[np.isfinite(reps)].tolist(), alpha, len(y), counts.shape[1], n_boot)


def diff_ci(
    values_a: np.ndarray,
    groups_a: np.ndarray,
    values_b: np.ndarray,
    groups_b: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Mean of ``values_a`` minus mean of ``values_b`` (e.g. steered flip rate minus the random-direction
    rate), the two samples cluster-resampled independently. ``n`` and ``groups`` are summed over both samples;
    ``value_a``/``value_b`` are the two means. All None if either sample is empty."""
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    ga, gb = np.asarray(groups_a), np.asarray(groups_b)
    if len(a) == 0 or len(b) == 0:
        return {**_summary(None, [], alpha, len(a) + len(b), 0, n_boot), "value_a": None, "value_b": None}
    rows_a, rows_b = _group_rows(ga), _group_rows(gb)
    rng = np.random.default_rng(seed)
    reps = [float(a[_draw(rows_a, rng)].mean() - b[_draw(rows_b, rng)].mean()) for _ in range(n_boot)]
    out = _summary(float(a.mean() - b.mean()), reps, alpha, len(a) + len(b), len(rows_a[2]) + len(rows_b[2]), n_boot)
    return {**out, "value_a": float(a.mean()), "value_b": float(b.mean())}


def paired_diff_ci(a: np.ndarray, b: np.ndarray, groups: np.ndarray, **kw) -> dict:
    """Mean of ``a - b`` over the same rows (e.g. one site before and after an intervention)."""
    return mean_ci(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), groups, **kw)


def fmt_ci(d: dict, pct: bool = False, digits: int = 2) -> str:
    """``"0.83 [0.78, 0.88]"``, or with ``pct`` ``"83% [78, 88]"``; ``"n/a"`` without a value, and the bare
    value without an interval."""
    if d.get("value") is None:
        return "n/a"
    if pct:
        value, lo, hi = (None if d.get(k) is None else f"{100 * d[k]:.0f}" for k in ("value", "lo", "hi"))
        return f"{value}%" if lo is None or hi is None else f"{value}% [{lo}, {hi}]"
    value, lo, hi = (None if d.get(k) is None else f"{d[k]:.{digits}f}" for k in ("value", "lo", "hi"))
    return value if lo is None or hi is None else f"{value} [{lo}, {hi}]"
