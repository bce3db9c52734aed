"""Linear probes per layer and position kind, as functions of arrays (logistic regression).

Protocol: split by *problem* (every site of a problem is on one side, so no leakage through a shared prompt),
fit on standardized activations, then map the weights back to residual-stream units so the direction can be
steered with. Reported per probe: test accuracy, AUROC, the majority-class baseline, a shuffled-label control
(same pipeline, training labels permuted) and, for verdict and truth probes, accuracy on the test sites where the
verdict and the truth disagree (the sites that separate "what the model will say" from "what is true").

Directions: scikit-learn fits one weight vector ``w`` for two classes; the equivalent two-class softmax in its
symmetric form has ``W[1] = w / 2`` and ``W[0] = -w / 2`` (the original study's W[0]/W[1]), so W[1] is the
"accept" direction and W[1] - W[0] = w. The class-mean difference is kept as a second, probe-free direction.

Two solvers fit the same model (``probe.solver``): scikit-learn's L-BFGS, one probe at a time (the reference), and
:mod:`analysis.probes_torch`, Newton's method on many probes at once on the analysis device (a 3B checkpoint has
333 probes, each fitted twice). :func:`probe_kind` runs every label and layer of one position kind with either,
reading the activations one layer at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeResult:
    """Scores of one probe (position kind x label x layer)."""

    kind: str
    label: str
    layer: int
    fit: bool
    n_train: int
    n_test: int
    accuracy: float | None = None
    auroc: float | None = None
    majority: float | None = None
    shuffled: float | None = None
    disagree_accuracy: float | None = None
    disagree_n: int = 0
    reason: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> tuple[np.ndarray, float, object]:
    """Logistic regression (scikit-learn) on standardized ``x``; returns the weight and bias in raw units and the
    fitted model."""
    from sklearn.linear_model import LogisticRegression

    mu = x.mean(0)
    sd = x.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit((x - mu) / sd, y)
    w = clf.coef_[0] / sd
    b = float(clf.intercept_[0] - (mu / sd) @ clf.coef_[0])
    return w, b, clf


def fit_logistic_layers(
    x: np.ndarray, y: np.ndarray, c: float, max_iter: int, solver: str = "sklearn", device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Raw-unit weights (layers, d) and biases (layers,) of one logistic probe per layer of ``x`` (n, layers, d):
    :func:`fit_logistic` layer by layer, or every layer at once with the torch solver on ``device``."""
    if solver == "torch":
        from analysis.probes_torch import fit_layers

        return fit_layers(x, y, c, device)
    fits = [fit_logistic(x[:, layer].astype(np.float64), y, c, max_iter) for layer in range(x.shape[1])]
    return np.stack([f[0] for f in fits]), np.array([f[1] for f in fits])


def predict(w: np.ndarray, b: float, x: np.ndarray) -> np.ndarray:
    """Logit of class 1 for rows of ``x`` under a raw-unit probe ``(w, b)``."""
    return x.astype(np.float64) @ w + b


def _score(
    w: np.ndarray,
    b: float,
    ws: np.ndarray,
    bs: float,
    x: np.ndarray,
    y: np.ndarray,
    test: np.ndarray,
    other: np.ndarray | None,
    base: dict,
) -> ProbeResult:
    """Score a fitted probe ``(w, b)`` and its shuffled-label twin ``(ws, bs)`` on the ``test`` sites."""
    from sklearn.metrics import roc_auc_score

    te = test
    pred = predict(w, b, x[te]) > 0
    acc = float((pred == y[te]).mean())
    auroc = float(roc_auc_score(y[te], predict(w, b, x[te]))) if len(np.unique(y[te])) == 2 else None
    majority = float(max((y[te] == 1).mean(), (y[te] == 0).mean()))
    shuffled = float(((predict(ws, bs, x[te]) > 0) == y[te]).mean())
    dis_acc, dis_n = None, 0
    if other is not None:
        dis = te & (y != other)
        dis_n = int(dis.sum())
        if dis_n:
            dis_acc = float(((predict(w, b, x[dis]) > 0) == y[dis]).mean())
    return ProbeResult(
        fit=True,
        accuracy=acc,
        auroc=auroc,
        majority=majority,
        shuffled=shuffled,
        disagree_accuracy=dis_acc,
        disagree_n=dis_n,
        **base,
    )


def _refusal(y: np.ndarray, test: np.ndarray, min_per_class: int, base: dict) -> ProbeResult | None:
    """The not-fit result when the training classes or the test set are too small, else None."""
    counts = [int((y[~test] == k).sum()) for k in (0, 1)]
    if min(counts) < min_per_class or test.sum() == 0 or len(np.unique(y[test])) < 1:
        return ProbeResult(fit=False, reason=f"train class counts {counts}, test {int(test.sum())}", **base)
    return None


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    test: np.ndarray,
    *,
    other: np.ndarray | None = None,
    c: float = 1.0,
    max_iter: int = 2000,
    min_per_class: int = 5,
    seed: int = 0,
    kind: str = "",
    label: str = "",
    layer: int = 0,
) -> tuple[ProbeResult, np.ndarray | None, float]:
    """Fit (scikit-learn) and score one probe. ``other`` is the competing label (truth for a verdict probe and
    vice versa); sites where ``y != other`` give ``disagree_accuracy``. Returns the result, the raw-unit weight
    (or None) and the bias."""
    x = x.astype(np.float64)
    tr = ~test
    base = dict(kind=kind, label=label, layer=layer, n_train=int(tr.sum()), n_test=int(test.sum()))
    refused = _refusal(y, test, min_per_class, base)
    if refused is not None:
        return refused, None, 0.0
    w, b, _ = fit_logistic(x[tr], y[tr], c, max_iter)
    rng = np.random.default_rng(seed)
    ws, bs, _ = fit_logistic(x[tr], rng.permutation(y[tr]), c, max_iter)
    return _score(w, b, ws, bs, x, y, test, other, base), w, b


def two_class_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W[0], W[1]) of the symmetric two-class softmax equivalent to the binary weight ``w``."""
    return -w / 2, w / 2


def mean_difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean of class 1 minus mean of class 0 (zeros if a class is empty)."""
    if not (y == 1).any() or not (y == 0).any():
        return np.zeros(x.shape[1])
    return x[y == 1].astype(np.float64).mean(0) - x[y == 0].astype(np.float64).mean(0)


def unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None:
        return None
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else None


# Bytes of float64 features one torch chunk may hold (a layer's targets are never split across chunks).
CHUNK_BYTES = 1 << 30


def probe_kind(
    layer_x: Callable[[int], np.ndarray],
    n_layers: int,
    labels: dict[str, tuple[np.ndarray, np.ndarray | None]],
    test: np.ndarray,
    *,
    c: float = 1.0,
    max_iter: int = 2000,
    min_per_class: int = 5,
    seed: int = 0,
    kind: str = "",
    solver: str = "sklearn",
    device: str = "cpu",
) -> dict[str, tuple[list[ProbeResult], np.ndarray, np.ndarray, np.ndarray]]:
    """Every label's probe at every layer of one position kind. ``layer_x(layer)`` returns that layer's activations
    (sites, d) (read one layer at a time); ``labels[label] = (y, other)``. Returns, per label, the results by layer
    and the stacked raw-unit weights (layers, d), biases (layers,) and class-mean differences (layers, d).

    ``solver``: ``sklearn`` fits each probe (and its shuffled-label control) with :func:`fit_probe`; ``torch`` fits
    all targets of a chunk of layers at once (:mod:`analysis.probes_torch`) on ``device`` and scores them the same
    way. The shuffled labels are the same permutation in both (``seed``, drawn per probe)."""
    tr = ~test
    out: dict[str, tuple[list[ProbeResult], np.ndarray, np.ndarray, np.ndarray]] = {}
    fits: dict[tuple[str, int], tuple[np.ndarray, float, np.ndarray, float]] = {}
    results: dict[tuple[str, int], ProbeResult] = {}
    layers = list(range(n_layers))
    chunks = [layers[i : i + 1] for i in layers] if solver == "sklearn" else []
    if solver == "torch" and n_layers:
        # targets x train rows x (d + 1) float64, times ~4 for the standardized copy, the Hessian step, temporaries
        per_layer = 2 * len(labels) * int(tr.sum()) * (layer_x(0).shape[1] + 1) * 8 * 4
        for layer in layers:
            if not chunks or (len(chunks[-1]) + 1) * per_layer > CHUNK_BYTES:
                chunks.append([])
            chunks[-1].append(layer)
    md: dict[str, np.ndarray] = {}
    for chunk in chunks:
        xs = {layer: layer_x(layer).astype(np.float64) for layer in chunk}
        jobs = []  # (label, layer, real y, shuffled y) for torch
        for layer, x in xs.items():
            d = x.shape[1]
            for label, (y, other) in labels.items():
                md.setdefault(label, np.zeros((n_layers, d), dtype=np.float32))[layer] = mean_difference(x[tr], y[tr])
                base = dict(kind=kind, label=label, layer=layer, n_train=int(tr.sum()), n_test=int(test.sum()))
                if solver == "sklearn":
                    results[(label, layer)], w, b = fit_probe(
                        x, y, test, other=other, c=c, max_iter=max_iter, min_per_class=min_per_class, seed=seed,
                        kind=kind, label=label, layer=layer,
                    )  # fmt: skip
                    if w is not None:
                        fits[(label, layer)] = (w, b, w, b)  # scored already; only (w, b) is read
                    continue
                refused = _refusal(y, test, min_per_class, base)
                if refused is not None:
                    results[(label, layer)] = refused
                    continue
                jobs.append((label, layer, y[tr], np.random.default_rng(seed).permutation(y[tr])))
        if jobs:
            from analysis.probes_torch import fit_logistic_batch

            xtr = [xs[layer][tr] for _, layer, _, _ in jobs]
            got = fit_logistic_batch([*xtr, *xtr], [j[2] for j in jobs] + [j[3] for j in jobs], c, device)
            for i, (label, layer, _, _) in enumerate(jobs):
                (w, b), (ws, bs) = got[i], got[len(jobs) + i]
                fits[(label, layer)] = (w, b, ws, bs)
                y, other = labels[label]
                base = dict(kind=kind, label=label, layer=layer, n_train=int(tr.sum()), n_test=int(test.sum()))
                results[(label, layer)] = _score(w, b, ws, bs, xs[layer], y, test, other, base)
    for label in labels:
        d = md[label].shape[1] if label in md else 0
        w_stack = np.zeros((n_layers, d), dtype=np.float32)
        b_stack = np.zeros(n_layers, dtype=np.float32)
        for layer in layers:
            if (label, layer) in fits:
                w_stack[layer], b_stack[layer] = fits[(label, layer)][0], fits[(label, layer)][1]
        out[label] = ([results[(label, layer)] for layer in layers], w_stack, b_stack, md[label])
    return out
