"""Cluster-bootstrap intervals on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import stats as st


def _width(d: dict) -> float:
    return d["hi"] - d["lo"]


def test_iid_bernoulli_interval_has_the_normal_width_and_covers_the_truth() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random(200) < 0.3).astype(float)
    ci = st.mean_ci(x, np.arange(200), n_boot=2000)
    assert ci["lo"] <= 0.3 <= ci["hi"] and ci["lo"] <= ci["value"] <= ci["hi"]
    expected = 2 * 1.96 * np.sqrt(0.21 / 200)
    assert abs(_width(ci) - expected) / expected < 0.3
    assert ci["n"] == 200 and ci["groups"] == 200 and ci["n_boot"] == 2000


def test_copies_within_a_group_do_not_narrow_the_interval() -> None:
    rng = np.random.default_rng(1)
    per_group = rng.random(100)
    groups = np.repeat(np.arange(100), 5)
    one = st.mean_ci(per_group, np.arange(100), seed=3)
    copies = st.mean_ci(np.repeat(per_group, 5), groups, seed=3)
    assert copies["n"] == 500 and copies["groups"] == 100
    np.testing.assert_allclose([copies["lo"], copies["hi"]], [one["lo"], one["hi"]])
    naive = st.mean_ci(np.repeat(per_group, 5), np.arange(500), seed=3)  # rows as if independent
    assert _width(naive) < 0.6 * _width(copies)


def test_groups_of_unequal_size_resample_whole_groups() -> None:
    # group g has g + 1 rows all equal to g: every replicate's rows come in whole groups
    groups = np.repeat(np.arange(6), np.arange(1, 7))
    seen = []

    def stat(idx: np.ndarray) -> float:
        counts = np.bincount(groups[idx], minlength=6)
        assert np.all(counts % np.arange(1, 7) == 0)
        seen.append(len(idx))
        return float(len(idx))

    st.bootstrap(stat, groups, n_boot=50)
    assert len(set(seen)) > 1


def test_deterministic_by_seed() -> None:
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal(300), rng.integers(0, 40, 300)
    assert st.mean_ci(x, g, seed=5) == st.mean_ci(x, g, seed=5)
    assert st.mean_ci(x, g, seed=5)["lo"] != st.mean_ci(x, g, seed=6)["lo"]


def test_empty_input() -> None:
    ci = st.mean_ci(np.array([]), np.array([], dtype=int))
    assert ci["value"] is None and ci["lo"] is None and ci["hi"] is None and ci["n"] == 0 and ci["groups"] == 0
    assert st.fmt_ci(ci) == "n/a"
    d = st.diff_ci(np.array([]), np.array([]), np.ones(3), np.arange(3))
    assert d["value"] is None and d["lo"] is None


def test_auroc_and_accuracy() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    groups = np.repeat(np.arange(50), 4)
    ci = st.auroc_ci(y + 0.1 * rng.random(200), y, groups, n_boot=200)
    assert ci["value"] == 1.0 and np.isclose(ci["lo"], 1.0) and np.isclose(ci["hi"], 1.0)
    assert st.auroc_ci(rng.random(10), np.zeros(10), np.arange(10))["value"] is None  # one class only
    acc = st.accuracy_ci(y, y, groups)
    assert acc["value"] == acc["lo"] == acc["hi"] == 1.0


def test_auroc_skips_single_class_replicates() -> None:
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    calls = st.auroc_ci(np.arange(8.0), y, np.arange(8), n_boot=200)
    assert calls["value"] == 0.0 and calls["lo"] is not None  # replicates without the positive are dropped


def test_diff_ci() -> None:
    rng = np.random.default_rng(4)
    a = (rng.random(300) < 0.4).astype(float)
    g = np.repeat(np.arange(100), 3)
    same = st.diff_ci(a, g, a.copy(), g.copy())
    assert same["value"] == 0.0 and same["lo"] < 0 < same["hi"]
    assert same["value_a"] == same["value_b"] and same["n"] == 600 and same["groups"] == 200
    b = (rng.random(300) < 0.1).astype(float)
    d = st.diff_ci(a, g, b, g)
    assert d["lo"] > 0 and abs(d["value"] - (a.mean() - b.mean())) < 1e-12


def test_paired_diff_is_narrower_than_independent_when_rows_are_correlated() -> None:
    rng = np.random.default_rng(5)
    base = rng.standard_normal(200)
    a, b = base + 0.5 + 0.1 * rng.standard_normal(200), base + 0.1 * rng.standard_normal(200)
    g = np.arange(200)
    paired, indep = st.paired_diff_ci(a, b, g), st.diff_ci(a, g, b, g)
    assert abs(paired["value"] - indep["value"]) < 1e-12
    assert paired["lo"] > 0.4 and _width(paired) < 0.3 * _width(indep)


def test_fmt_ci() -> None:
    d = {"value": 0.8312, "lo": 0.781, "hi": 0.8849}
    assert st.fmt_ci(d) == "0.83 [0.78, 0.88]"
    assert st.fmt_ci(d, pct=True) == "83% [78, 88]"
    assert st.fmt_ci(d, digits=3) == "0.831 [0.781, 0.885]"
    assert st.fmt_ci({"value": 0.5, "lo": None, "hi": None}) == "0.50"
    assert st.fmt_ci({"value": 0.5, "lo": None, "hi": None}, pct=True) == "50%"
    assert st.fmt_ci({"value": None}) == "n/a"


def test_rank_auroc_equals_scikit_learn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.4
    scores = np.round(rng.normal(size=300) + y, 1)  # rounded: many ties
    assert abs(st.rank_auroc(scores, y) - roc_auc_score(y, scores)) < 1e-12
    assert st.rank_auroc(scores, np.zeros(300, dtype=bool)) is None


def _balanced(pred: np.ndarray, y: np.ndarray) -> float | None:
    """Balanced accuracy of one replicate the slow way (None with one class)."""
    return None if y.all() or not y.any() else float(0.5 * (pred[y].mean() + (~pred[~y]).mean()))


@pytest.mark.parametrize(("n", "n_groups", "decimals"), [(900, 60, 1), (50, 7, 0), (300, 300, 2), (12, 3, 0)])
def test_all_replicates_at_once_equal_one_at_a_time(n: int, n_groups: int, decimals: int) -> None:
    """mean_ci, auroc_ci and balanced_accuracy_ci compute every replicate in one array pass; they must give exactly
    the replicates of the generic one-replicate-at-a-time bootstrap (same random stream, ties and single-class
    replicates)."""
    rng = np.random.default_rng(n)
    g = rng.integers(0, n_groups, n)
    y = rng.random(n) < 0.3
    s = np.round(rng.normal(size=n) + y, decimals)  # coarse rounding: many ties
    for fast, stat in (
        (st.auroc_ci(s, y, g, n_boot=300, seed=4), lambda i: st.rank_auroc(s[i], y[i])),
        (st.mean_ci(s > 0, g, n_boot=300, seed=4), lambda i: float((s > 0)[i].mean())),
        (st.balanced_accuracy_ci(s > 0.5, y, g, n_boot=300, seed=4), lambda i: _balanced(s[i] > 0.5, y[i])),
    ):
        slow = st.bootstrap(stat, g, n_boot=300, seed=4)
        for k in ("value", "lo", "hi", "n", "groups"):
            assert fast[k] == pytest.approx(slow[k], rel=1e-12, abs=1e-12), k


def _paired_data(shift: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scores of one probe at two checkpoints on the same 400 sites (80 problems): ``shift`` more signal at the
    second, the site-level noise shared (the same texts)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(80), 5)
    y = rng.random(400) < 0.5
    shared = rng.normal(0, 1, 400)
    a = y * 1.0 + shared + rng.normal(0, 0.3, 400)
    b = y * (1.0 + shift) + shared + rng.normal(0, 0.3, 400)
    return a, b, y, groups


def test_paired_auroc_change_finds_a_planted_change_and_passes_a_null() -> None:
    from analysis.stats import auroc_ci, paired_auroc_diff_ci

    a, b, y, g = _paired_data(0.25, 0)
    change = paired_auroc_diff_ci(b, a, y, g, n_boot=400)
    assert change["lo"] > 0  # found by the paired test ...
    ma, mb = auroc_ci(a, y, g, n_boot=400), auroc_ci(b, y, g, n_boot=400)
    assert mb["lo"] < ma["hi"]  # ... where the marginal intervals overlap (the old test would say "no change")
    nulls = [
        paired_auroc_diff_ci(*_paired_data(0.0, s)[1::-1], *_paired_data(0.0, s)[2:], n_boot=200) for s in range(20)
    ]
    covered = sum(n["lo"] <= 0 <= n["hi"] for n in nulls)
    assert covered >= 17  # ~95% coverage under the null (20 independent draws)


def test_auroc_contrast_is_the_signed_sum_and_balanced_accuracy_ignores_the_majority() -> None:
    from analysis.stats import auroc_contrast_ci, balanced_accuracy_ci, rank_auroc

    a, b, y, g = _paired_data(0.5, 1)
    c = auroc_contrast_ci([b, a, a, b], [1.0, -1.0, -1.0, 1.0], y, g, n_boot=100)
    assert c["value"] == pytest.approx(2 * (rank_auroc(b, y) - rank_auroc(a, y)))
    y_skewed = np.r_[np.ones(90, bool), np.zeros(10, bool)]
    always = np.ones(100, bool)
    assert balanced_accuracy_ci(always, y_skewed, np.arange(100), n_boot=50)["value"] == pytest.approx(0.5)
