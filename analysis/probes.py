"""Stage 3: linear probes per layer and position kind, as functions of arrays (scikit-learn logistic regression).

Protocol: split by *problem* (every site of a problem is on one side, so no leakage through a shared prompt),
fit on standardized activations, then map the weights back to residual-stream units so the direction can be
steered with. Reported per probe: test accuracy, AUROC, the majority-class baseline, a shuffled-label control
(same pipeline, training labels permuted) and, for verdict and truth probes, accuracy on the test sites where the
verdict and the truth disagree (the sites that separate "what the model will say" from "what is true").

Directions: scikit-learn fits one weight vector ``w`` for two classes; the equivalent two-class softmax in its
symmetric form has ``W[1] = w / 2`` and ``W[0] = -w / 2`` (the original study's W[0]/W[1]), so W[1] is the
"accept" direction and W[1] - W[0] = w. The class-mean difference is kept as a second, probe-free direction.
"""

from __future__ import annotations

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


def predict(w: np.ndarray, b: float, x: np.ndarray) -> np.ndarray:
    """Logit of class 1 for rows of ``x`` under a raw-unit probe ``(w, b)``."""
    return x.astype(np.float64) @ w + b


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
    """Fit and score one probe. ``other`` is the competing label (truth for a verdict probe and vice versa);
    sites where ``y != other`` give ``disagree_accuracy``. Returns the result, the raw-unit weight (or None)
    and the bias."""
    from sklearn.metrics import roc_auc_score

    x = x.astype(np.float64)
    tr, te = ~test, test
    counts = [int((y[tr] == k).sum()) for k in (0, 1)]
    base = dict(kind=kind, label=label, layer=layer, n_train=int(tr.sum()), n_test=int(te.sum()))
    if min(counts) < min_per_class or te.sum() == 0 or len(np.unique(y[te])) < 1:
        return ProbeResult(fit=False, reason=f"train class counts {counts}, test {int(te.sum())}", **base), None, 0.0
    w, b, _ = fit_logistic(x[tr], y[tr], c, max_iter)
    pred = predict(w, b, x[te]) > 0
    acc = float((pred == y[te]).mean())
    auroc = float(roc_auc_score(y[te], predict(w, b, x[te]))) if len(np.unique(y[te])) == 2 else None
    majority = float(max((y[te] == 1).mean(), (y[te] == 0).mean()))
    rng = np.random.default_rng(seed)
    ws, bs, _ = fit_logistic(x[tr], rng.permutation(y[tr]), c, max_iter)
    shuffled = float(((predict(ws, bs, x[te]) > 0) == y[te]).mean())
    dis_acc, dis_n = None, 0
    if other is not None:
        dis = te & (y != other)
        dis_n = int(dis.sum())
        if dis_n:
            dis_acc = float(((predict(w, b, x[dis]) > 0) == y[dis]).mean())
    result = ProbeResult(
        fit=True,
        accuracy=acc,
        auroc=auroc,
        majority=majority,
        shuffled=shuffled,
        disagree_accuracy=dis_acc,
        disagree_n=dis_n,
        **base,
    )
    return result, w, b


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
