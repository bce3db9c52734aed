"""The batched softmax probe on synthetic Gaussian activations with a planted direction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import softmax_probe as sp


def softmax_accuracy(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Accuracy per layer, shape (L,)."""
    return ((sp.softmax_predict(w, b, x) > 0) == np.asarray(y)[:, None]).mean(0)


def accept_direction(w: np.ndarray) -> np.ndarray:
    """``W[:, 1]``, the "accept" row of each layer's probe, shape (L, d)."""
    return w[:, 1]


SIGNAL = (0.25, 0.75, 2.0)  # per-layer mean shift along the planted direction: weak, medium, strong


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _data(n: int = 2000, d: int = 64, seed: int = 0, p1: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    y = (rng.random(n) < p1).astype(int)
    shift = np.asarray(SIGNAL)[None, :, None] * u
    x = rng.standard_normal((n, len(SIGNAL), d)) + (2 * y - 1)[:, None, None] * shift + 1.0  # offset: bias matters
    return x.astype(np.float32), y, u


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_accuracy_follows_signal_and_direction_matches_truth_and_sklearn() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y, u = _data()
    tr = np.arange(len(y)) < 1500
    w, b = sp.fit_softmax_probes(x[tr], y[tr])
    assert w.shape == (3, 2, 64) and b.shape == (3, 2)
    acc_tr = softmax_accuracy(w, b, x[tr], y[tr])
    acc_te = softmax_accuracy(w, b, x[~tr], y[~tr])
    assert np.all(np.diff(acc_tr) > 0) and np.all(np.diff(acc_te) > 0)
    assert acc_tr[2] > 0.95 and acc_te[2] > 0.95 and acc_te[0] < 0.65
    v = w[:, 1] - w[:, 0]
    assert _cos(v[2], u) > 0.9
    # symmetric softmax from the zero start: W[0] = -W[1], so the accept row is half the binary weight
    np.testing.assert_allclose(accept_direction(w), v / 2, atol=1e-6)
    coef = LogisticRegression(max_iter=2000).fit(x[tr, 2].astype(np.float64), y[tr]).coef_[0]
    assert _cos(v[2], coef) > 0.9


def test_predict_is_the_logit_difference() -> None:
    x, y, _ = _data(n=300)
    w, b = sp.fit_softmax_probes(x, y, epochs=2)
    logits = np.einsum("nld,lcd->nlc", x.astype(np.float64), w) + b
    np.testing.assert_allclose(sp.softmax_predict(w, b, x), logits[..., 1] - logits[..., 0], rtol=1e-6, atol=1e-6)


def test_batched_fit_equals_per_layer_fits() -> None:
    x, y, _ = _data(n=1000)
    w, b = sp.fit_softmax_probes(x, y, seed=3)
    for layer in range(x.shape[1]):
        wl, bl = sp.fit_softmax_probes(x[:, [layer]], y, seed=3)
        np.testing.assert_allclose(wl[0], w[layer], atol=1e-5)
        np.testing.assert_allclose(bl[0], b[layer], atol=1e-5)


def test_full_batch_converges_too() -> None:
    x, y, _ = _data(n=1000)
    w, b = sp.fit_softmax_probes(x, y, batch_size=None, epochs=200)
    assert softmax_accuracy(w, b, x, y)[2] > 0.95


def test_deterministic_by_seed() -> None:
    x, y, _ = _data(n=600)
    w1, b1 = sp.fit_softmax_probes(x, y, seed=7)
    w2, b2 = sp.fit_softmax_probes(x, y, seed=7)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(b1, b2)
    w3, _ = sp.fit_softmax_probes(x, y, seed=8)
    assert not np.array_equal(w1, w3)


def test_unequal_class_sizes() -> None:
    x, y, u = _data(n=2000, p1=0.15)
    assert 0.1 < y.mean() < 0.2
    w, b = sp.fit_softmax_probes(x, y)
    acc = softmax_accuracy(w, b, x, y)
    assert acc[2] > 0.95 and acc[2] > 1 - y.mean()
    assert _cos(w[2, 1] - w[2, 0], u) > 0.9


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        sp.fit_softmax_probes(np.zeros((10, 4)), np.zeros(10))


def test_released_init_is_randn_over_sqrt_d_without_bias() -> None:
    x, y, _ = _data(n=400, d=256)
    w, b, log = sp.fit_released_probes(x, y, max_epochs=0, seed=1)
    assert w.shape == (3, 2, 256) and b.shape == (3, 2) and not b.any() and log["epochs"] == 0
    assert abs(w.std() * np.sqrt(256) - 1) < 0.05 and abs(w.mean()) < 0.01
    w2, _, _ = sp.fit_released_probes(x, y, max_epochs=0, seed=1)
    np.testing.assert_array_equal(w, w2)


def test_released_optimiser_is_adamw_at_the_released_values(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    class Spy(torch.optim.AdamW):
        def __init__(self, params, **kw) -> None:  # noqa: ANN001, ANN003
            params = list(params)
            seen.update(kw, shapes=[tuple(p.shape) for p in params])
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    x, y, _ = _data(n=300)
    sp.fit_released_probes(x, y, max_epochs=1)
    assert seen == {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.01, "shapes": [(3, 64, 2)]}  # no bias


def test_released_early_stopping_keeps_the_best_validation_parameters() -> None:
    """Labels with no signal: the validation loss stops improving, training stops ``patience`` epochs after its
    minimum (all layers together, on their mean loss), and the parameters are those of that minimum."""
    x, _, _ = _data(n=600)
    y = np.random.default_rng(3).integers(0, 2, 600)
    w, _, log = sp.fit_released_probes(x, y, lr=1e-2, patience=3, max_epochs=200, seed=4)
    assert log["epochs"] == log["best_epoch"] + 3 < 200
    assert min(log["val_loss"]) == log["val_loss"][log["best_epoch"] - 1]
    again, _, _ = sp.fit_released_probes(x, y, lr=1e-2, patience=3, max_epochs=log["best_epoch"], seed=4)
    np.testing.assert_array_equal(w, again)


def test_released_recipe_learns_and_holds_out_whole_groups() -> None:
    x, y, u = _data(n=1500)
    groups = np.arange(1500) // 5
    w, b, log = sp.fit_released_probes(x, y, lr=1e-2, groups=groups, max_epochs=60)
    assert softmax_accuracy(w, b, x, y)[2] > 0.95 and _cos(w[2, 1] - w[2, 0], u) > 0.8
    gen = torch.Generator().manual_seed(0)
    val = sp._validation_rows(1500, 0.1, groups, gen)
    assert val.sum() == 150 and all(len(set(val[groups == g])) == 1 for g in range(300))
