"""The study's statistics (analysis/study/stats.py) on cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.study.stats import bootstrap_diff, holm, permutation_test, smallest_p


def test_permutation_p_is_exact_on_a_hand_computed_case() -> None:
    # 20 splits of {0,...,5} into 3 vs 3; only the observed one (diff +3) and its mirror (-3) reach |diff| >= 3
    out = permutation_test([3, 4, 5], [0, 1, 2])
    assert out["diff"] == pytest.approx(3.0)
    assert out["p"] == pytest.approx(2 / 20) and out["n_splits"] == 20 and out["exact"]
    assert out["min_p"] == pytest.approx(0.1)  # 3 vs 3: nothing can be significant at 0.05
    # one more: a=[0,2], b=[1,3] -> diff -1; splits of {0,1,2,3} in 2 vs 2 and their |diff|:
    # {0,1}:2 {0,2}:1 {0,3}:0 {1,2}:0 {1,3}:1 {2,3}:2 -> 4 of 6 reach 1
    assert permutation_test([0, 2], [1, 3])["p"] == pytest.approx(4 / 6)
    # ties are "as extreme": identical arms give p = 1
    assert permutation_test([1.0, 1.0], [1.0, 1.0])["p"] == pytest.approx(1.0)


def test_smallest_achievable_p() -> None:
    assert smallest_p(3, 3) == pytest.approx(0.1)
    assert smallest_p(4, 4) == pytest.approx(2 / 70)
    assert smallest_p(6, 6) == pytest.approx(2 / 924)
    assert smallest_p(1, 2) == pytest.approx(1 / 3)  # unequal arms: no mirror split
    # unequal arms reach it: a planted extreme value alone in arm a
    assert permutation_test([100.0], [0.0, 0.0])["p"] == pytest.approx(1 / 3)


def test_permutation_finds_a_planted_difference_and_passes_a_null() -> None:
    rng = np.random.default_rng(0)
    a, b = 1.0 + 0.1 * rng.standard_normal(6), 0.1 * rng.standard_normal(6)
    out = permutation_test(a, b)
    assert out["n_splits"] == math.comb(12, 6) == 924
    assert out["p"] == pytest.approx(2 / 924) and out["p"] < 0.05
    null = [permutation_test(rng.standard_normal(6), rng.standard_normal(6))["p"] for _ in range(40)]
    assert np.median(null) > 0.2 and min(null) > 2 / 924  # same distribution: p spread over (0, 1], none tiny
    assert permutation_test([], [1.0])["p"] is None


def test_permutation_monte_carlo_beyond_the_exact_limit() -> None:
    a, b = np.arange(8.0) + 100, np.arange(8.0)
    exact = permutation_test(a, b)
    approx = permutation_test(a, b, max_exact=100, draws=5000)
    assert exact["exact"] and not approx["exact"]
    assert approx["p"] == pytest.approx(1 / 5001)  # no random split is as extreme: the (1 + hits) / (1 + draws) floor


def test_holm_on_a_hand_computed_example() -> None:
    # sorted 0.01, 0.02, 0.03, 0.04 (K = 4): x4, x3, x2, x1 = 0.04, 0.06, 0.06, 0.04 -> monotone 0.04, 0.06, 0.06, 0.06
    adj = holm([0.03, None, 0.01, 0.04, 0.02])
    assert adj[1] is None
    assert adj == pytest.approx([0.06, None, 0.04, 0.06, 0.06])  # type: ignore[arg-type]
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == [] and holm([None]) == [None]


def test_bootstrap_interval_covers_the_planted_difference() -> None:
    rng = np.random.default_rng(1)
    a, b = 0.5 + 0.05 * rng.standard_normal(8), 0.1 + 0.05 * rng.standard_normal(8)
    out = bootstrap_diff(a, b, n_boot=4000, seed=0)
    assert out["lo"] < 0.4 < out["hi"] and out["lo"] > 0
    assert out["value"] == pytest.approx(a.mean() - b.mean())
    assert bootstrap_diff(a, b, n_boot=4000, seed=0) == out  # seeded
    one = bootstrap_diff([0.3], b)
    assert one["value"] is not None and one["lo"] is None  # one run: nothing to resample
    assert bootstrap_diff([], b)["value"] is None
