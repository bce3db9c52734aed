"""The checkpoint's own verdict on counterfactual lines, on synthetic captures with planted effects: the content
and position effects are paired within problem (and position / line), twins are averaged, rows align."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from analysis.fixed_text.verdict import COUNTERFACTUAL, _pair_diff, accept_table, own_verdict
from tasks.countdown.counterfactual import CATEGORIES

MAX_PRIOR = 5
N_BOOT = 300
Accept = Callable[[int, int, int, np.random.Generator], float]  # (problem, category, position, rng) -> margin


def _cap(accept: Accept, n_problems: int = 40, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A capture of counterfactual sites as :func:`analysis.fixed_text.per_checkpoint.annotate` leaves it: every
    category at every position, twins (same margin) at position problem % (MAX_PRIOR + 1), plus a rollout site and an
    earlier (untested) line. Every fourth problem is a train problem. Returns (cap, roles, margin (n, 3))."""
    rng = np.random.default_rng(seed)
    rows, out = [], []
    for p in range(n_problems):
        for c in range(len(CATEGORIES)):
            for k in range(MAX_PRIOR + 1):
                m = accept(p, c, k, rng)
                for _ in range(2 if k == p % (MAX_PRIOR + 1) else 1):
                    rows.append((COUNTERFACTUAL, p, c, k, c in (0, 2), c in (0, 3)))
                    out.append(m)
    rows += [(0, 0, -1, -1, True, True), (-1, 1, -1, 2, False, False)]
    out += [5.0, 5.0]
    cols = np.array(rows, dtype=np.int64)
    cap = {k: cols[:, i] for i, k in enumerate(("subset", "problem", "category", "position", "stated", "truth"))}
    margin = np.stack([rng.normal(size=len(out)), rng.normal(size=len(out)), np.array(out)], 1)
    roles = np.array(["train" if p % 4 == 0 else "report" for p in range(n_problems)])
    return cap, roles, margin


def _take(cap: dict[str, np.ndarray], margin: np.ndarray, idx: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    return {k: v[idx] for k, v in cap.items()}, margin[idx]


def _coin(p: float, rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < p else -1.0


def _above(ci: dict) -> bool:
    return ci["lo"] > 0


def _covers_zero(ci: dict) -> bool:
    return ci["lo"] <= 0 <= ci["hi"]


def test_a_planted_position_effect_is_found_and_the_content_effect_is_null() -> None:
    cap, roles, margin = _cap(lambda p, c, k, rng: _coin(0.1 + 0.15 * k, rng))
    res = own_verdict(cap, None, roles, margin, N_BOOT)
    pe = res["position_effect"]
    assert pe["positions"] == [0, MAX_PRIOR] and _above(pe) and abs(pe["value"] - 0.75) < 0.15
    assert abs(pe["value"] - (pe["value_a"] - pe["value_b"])) < 1e-12
    assert _covers_zero(res["content_effect"]) and abs(res["content_effect"]["value"]) < 0.1
    assert abs(res["content_effect_slip"]["value"]) < 0.1
    assert set(res["position_effect_by_category"]) == set(CATEGORIES)
    assert all(_above(d) for d in res["position_effect_by_category"].values())
    assert res["by_position"]["5"]["value"] > res["by_position"]["0"]["value"] + 0.5
    assert res["position_effect"]["groups"] == 30  # paired: one row per report problem


def test_a_planted_content_effect_is_found_and_the_position_effect_is_null() -> None:
    right_like = (CATEGORIES.index("right"), CATEGORIES.index("misstated"))
    cap, roles, margin = _cap(lambda p, c, k, rng: _coin(0.8 if c in right_like else 0.2, rng))
    res = own_verdict(cap, None, roles, margin, N_BOOT)
    assert _above(res["content_effect"]) and abs(res["content_effect"]["value"] - 0.6) < 0.15
    assert _above(res["content_effect_slip"])
    assert _covers_zero(res["position_effect"]) and abs(res["position_effect"]["value"]) < 0.15
    assert res["by_category"]["right"]["value"] > res["by_category"]["wrong"]["value"] + 0.4
    assert res["auroc_truth"]["value"] > 0.7 and abs(res["auroc_stated"]["value"] - 0.5) < 0.1


def test_a_null_has_every_effect_interval_around_zero() -> None:
    cap, roles, margin = _cap(lambda p, c, k, rng: float(rng.normal()), seed=3)
    res = own_verdict(cap, None, roles, margin, N_BOOT)
    for key in ("content_effect", "content_effect_slip", "position_effect"):
        assert _covers_zero(res[key]), key
    grid = res["by_category_position"]
    assert set(grid) == set(CATEGORIES) and all(set(v) == {str(k) for k in range(MAX_PRIOR + 1)} for v in grid.values())


def test_twins_are_averaged_so_duplicating_or_dropping_them_changes_nothing() -> None:
    cap, roles, margin = _cap(lambda p, c, k, rng: _coin(0.2 + 0.1 * k + 0.1 * (c == 0), rng))
    base = own_verdict(cap, None, roles, margin, N_BOOT)
    twice = np.concatenate([np.arange(len(margin))] * 2)
    doubled, m2 = _take(cap, margin, twice)
    assert own_verdict(doubled, None, roles, m2, N_BOOT) == base
    keys = list(
        zip(
            cap["subset"].tolist(),
            cap["problem"].tolist(),
            cap["category"].tolist(),
            cap["position"].tolist(),
            strict=True,
        )
    )
    single = np.array([i for i, k in enumerate(keys) if k not in keys[:i]])
    assert len(single) < len(keys)
    one, m1 = _take(cap, margin, single)
    assert own_verdict(one, None, roles, m1, N_BOOT) == base


def test_accept_table_rows_align_when_the_sites_are_shuffled() -> None:
    cap, roles, margin = _cap(lambda p, c, k, rng: float(rng.normal()))
    table = accept_table(cap, roles, margin)
    n_lines = 30 * len(CATEGORIES) * (MAX_PRIOR + 1)  # report problems x categories x positions, twins merged
    assert table["key"].shape == (n_lines, 3) and table["accept"].shape == table["margin"].shape == (n_lines,)
    assert set(np.unique(table["key"][:, 0]).tolist()) == {p for p in range(40) if p % 4}
    order = np.lexsort(table["key"].T[::-1])
    assert np.array_equal(order, np.arange(n_lines))  # sorted by (problem, category, position)
    perm = np.random.default_rng(1).permutation(len(margin))
    moved, m2 = _take(cap, margin, perm)
    shuffled = accept_table(moved, roles, m2)
    for k in table:
        assert np.array_equal(table[k], shuffled[k]), k
    assert np.array_equal(table["accept"], (table["margin"] > 0).astype(float))


class _Acts:
    """Stand-in for the streamed capture: ``n_layers`` and ``layer(kind, i)``."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.n_layers = x, x.shape[1]

    def layer(self, kind: str, i: int) -> np.ndarray:
        return self.x[:, i]


def test_pair_diff_compares_twins_only() -> None:
    cap, _, margin = _cap(lambda p, c, k, rng: 1.0, n_problems=4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(margin), 2, 3)).astype(np.float32)  # every line different
    keys = list(zip(cap["problem"].tolist(), cap["category"].tolist(), cap["position"].tolist(), strict=True))
    for i, k in enumerate(keys):
        x[i] = x[keys.index(k)]  # twins identical, whatever the position
    assert _pair_diff(cap, _Acts(x)) == 0.0
    twin = next(i for i, k in enumerate(keys) if cap["subset"][i] == COUNTERFACTUAL and keys.index(k) != i)
    x[twin, 1, 0] += 0.5
    assert abs(_pair_diff(cap, _Acts(x)) - 0.5) < 1e-6
    assert _pair_diff(cap, None) is None


def test_no_counterfactual_lines_on_report_problems_gives_empty_numbers() -> None:
    cap, roles, margin = _cap(lambda p, c, k, rng: 1.0, n_problems=4)
    res = own_verdict(cap, None, np.array(["train"] * 4), margin, 50)
    assert res["content_effect"]["value"] is None and "position_effect" not in res
    assert res["auroc_stated"] is None and accept_table(cap, np.array(["train"] * 4), margin)["key"].shape == (0, 3)
