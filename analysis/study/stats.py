"""The statistics of a study's RL-minus-control table, as functions of arrays (one value per run).

Why runs are the unit: within one run, checkpoints and problems share the run's data order, initialisation noise
and sampling, so the evidence for "RL does X that a control does not" is the spread *between* runs. A study has
few runs per arm (3 by default), which rules out large-sample approximations:

* :func:`permutation_test` is exact: under the null that the RL runs' and the control runs' changes are
  exchangeable, every split of the pooled runs into arms of the observed sizes is equally likely, so the p-value
  is a count over all of them. It assumes nothing about the changes' distribution; its price is a floor: with
  ``n`` and ``m`` runs no p-value can be below :func:`smallest_p` (3 vs 3: 0.1, so nothing is significant at 0.05).
* :func:`holm` corrects the table's many rows (metrics x controls) for multiple testing: Holm's step-down
  procedure controls the family-wise error rate without assuming the rows are independent (they are not: the
  metrics come from the same runs).
* :func:`bootstrap_diff` is the descriptive interval beside the test: it resamples runs within each arm, so
  with 3 runs per arm it is narrow (it can only recombine 3 values) and is not used for any verdict.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

MAX_EXACT = 2_000_000  # splits enumerated at most (10 vs 10 runs: 184,756); beyond, a Monte Carlo estimate
DRAWS = 100_000  # random splits of that estimate
TOL = 1e-12  # a split "as extreme" as the observed one: |diff| >= |observed| - TOL (float ties count)


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p-value an exact permutation test can give with arms of ``n`` and ``m`` runs.

    Why: only the observed split (and, when ``n == m``, its mirror image with the arms swapped, which has the
    same |difference|) can be the most extreme, so p >= 1 / C(n+m, n) (2 / C(2n, n) for equal arms): 3 vs 3 gives
    2/20 = 0.1, 4 vs 4 2/70 = 0.029, 6 vs 6 2/924 = 0.0022."""
    if n < 1 or m < 1:
        return 1.0
    return (2 if n == m else 1) / math.comb(n + m, n)


def permutation_test(
    a: Sequence[float], b: Sequence[float], max_exact: int = MAX_EXACT, draws: int = DRAWS, seed: int = 0
) -> dict:
    """Exact two-sided permutation test of ``mean(a) - mean(b)``.

    Enumerates every way to pick which ``len(a)`` of the pooled ``len(a) + len(b)`` values form arm a (the
    observed split included) and returns ``p`` = the share of splits whose |mean difference| is at least the
    observed one. Also ``diff`` (observed), ``min_p`` (:func:`smallest_p` for these sizes), ``n_splits``,
    ``exact`` and the arm sizes. With more than ``max_exact`` splits, ``draws`` random splits estimate p as
    ``(1 + hits) / (1 + draws)`` (``exact`` false). ``p`` and ``diff`` are None when an arm is empty."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n, m = len(x), len(y)
    out = {"diff": None, "p": None, "min_p": smallest_p(n, m), "n_a": n, "n_b": m, "n_splits": 0, "exact": True}
    if n == 0 or m == 0:
        return out
    pooled = np.concatenate([x, y])
    total = pooled.sum()
    observed = float(x.mean() - y.mean())
    n_splits = math.comb(n + m, n)
    if n_splits <= max_exact:
        picks = np.array(list(itertools.combinations(range(n + m), n)), dtype=np.int64)
        sums = pooled[picks].sum(axis=1)
        diffs = sums / n - (total - sums) / m
        p = float(np.mean(np.abs(diffs) >= abs(observed) - TOL))
        return {**out, "diff": observed, "p": p, "n_splits": n_splits}
    rng = np.random.default_rng(seed)
    picks = np.argsort(rng.random((draws, n + m)), axis=1)[:, :n]
    sums = pooled[picks].sum(axis=1)
    hits = int(np.sum(np.abs(sums / n - (total - sums) / m) >= abs(observed) - TOL))
    return {**out, "diff": observed, "p": (1 + hits) / (1 + draws), "n_splits": n_splits, "exact": False}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input's order (None entries passed through, not counted).

    Why Holm: a table of K tests at 0.05 each finds something by chance; Holm's step-down procedure keeps the
    chance of *any* false finding at 5% whatever the dependence between the rows, and is uniformly more powerful
    than Bonferroni. The i-th smallest of the K p-values is multiplied by K - i (i from 0), made monotone (never
    smaller than an adjusted p before it) and capped at 1; a row is significant when its adjusted p <= 0.05."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    k = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda j: pvalues[j])):  # type: ignore[arg-type, return-value]
        running = max(running, min(1.0, (k - rank) * float(pvalues[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def bootstrap_diff(
    a: Sequence[float], b: Sequence[float], n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """Percentile interval of ``mean(a) - mean(b)``, resampling runs with replacement within each arm
    independently. Returns ``value``, ``lo``, ``hi``, ``n_a``, ``n_b``, ``n_boot``; lo and hi are None when an arm
    has fewer than two runs (nothing to resample), everything None when an arm is empty.

    Descriptive only: with few runs per arm the replicates recombine a handful of values, so the interval is
    too narrow for its nominal level; the verdicts use :func:`permutation_test` with :func:`holm`."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n, m = len(x), len(y)
    out = {"value": None, "lo": None, "hi": None, "n_a": n, "n_b": m, "n_boot": n_boot}
    if n == 0 or m == 0:
        return out
    out["value"] = float(x.mean() - y.mean())
    if n < 2 or m < 2:
        return out
    rng = np.random.default_rng(seed)
    reps = x[rng.integers(0, n, (n_boot, n))].mean(axis=1) - y[rng.integers(0, m, (n_boot, m))].mean(axis=1)
    lo, hi = (float(q) for q in np.quantile(reps, [alpha / 2, 1 - alpha / 2]))
    return {**out, "lo": lo, "hi": hi}
