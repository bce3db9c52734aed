"""Probe maths and unembedding on synthetic arrays with known answers."""

from __future__ import annotations

import numpy as np

from analysis import probes as pr
from analysis.splits import problem_roles, role_mask
from analysis.unembed import token_scores, top_k


def _data(n: int = 600, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, d)) + np.outer(2 * y - 1, direction) * 2.5 + 5.0  # offset: raw-unit bias matters
    groups = np.repeat(np.arange(n // 3), 3)
    return x, y, groups, direction


def _split(groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """Report-role mask over sites, as the pipeline splits them (analysis/splits.py)."""
    return role_mask(groups, problem_roles(int(groups.max()) + 1, 0.2, 0.3, seed), "report")


def test_problem_roles_keep_problems_whole() -> None:
    _, _, groups, _ = _data()
    roles = problem_roles(int(groups.max()) + 1, 0.2, 0.3, seed=1)
    masks = [role_mask(groups, roles, r) for r in ("calibration", "train", "report")]
    for i in range(3):
        for j in range(i + 1, 3):
            assert set(groups[masks[i]]).isdisjoint(set(groups[masks[j]]))
    assert 0.25 < masks[2].mean() < 0.35 and 0.15 < masks[0].mean() < 0.25


def test_probe_finds_the_planted_direction_and_beats_controls() -> None:
    x, y, groups, direction = _data()
    test = _split(groups)
    res, w, b = pr.fit_probe(x, y, test, other=1 - y, kind="paren", label="verdict", layer=2)
    assert res.fit and res.accuracy > 0.9 and res.auroc > 0.95
    assert abs(res.shuffled - 0.5) < 0.15 and res.majority < 0.6
    assert res.disagree_n == res.n_test and res.disagree_accuracy == res.accuracy
    assert pr.cosine(w, direction) > 0.8
    # raw-unit weights reproduce the fitted classifier's decisions on raw activations
    assert ((pr.predict(w, b, x[test]) > 0) == y[test]).mean() == res.accuracy
    w0, w1 = pr.two_class_weights(w)
    np.testing.assert_allclose(w1 - w0, w)
    assert pr.cosine(pr.mean_difference(x, y), direction) > 0.8


def test_probe_refuses_too_few_examples() -> None:
    x, y, groups, _ = _data(60)
    y = np.zeros_like(y)
    y[:2] = 1
    res, w, _ = pr.fit_probe(x, y, _split(groups))
    assert not res.fit and w is None and "class counts" in res.reason


def test_unembedding_top_tokens() -> None:
    m = np.eye(5)[:, :3] * np.array([1.0, 2.0, 3.0])  # token i's unembedding row
    s = token_scores(np.array([0.0, 1.0, 0.1]), m)
    assert [i for i, _ in top_k(s, 2)] == [1, 2]
    assert top_k(-s, 1)[0][0] in (0, 3, 4)  # ties at 0 among the rows the direction ignores
    gained = token_scores(np.array([0.0, 1.0, 1.0]), m, gain=np.array([1.0, 0.0, 1.0]))
    assert top_k(gained, 1)[0][0] == 2
