"""One binary probe per layer on the fixed-text capture, by the preset's method (logistic, softmax, or the released
probe.py's recipe), fitted layer chunk by layer chunk so that host memory stays within ``CHUNK_BYTES``.

Why a module of its own: the per-checkpoint probes (per_checkpoint.py) and the steering directions (decision.py)
fit with it, and decision.py is called from per_checkpoint.py; kept there, the two imported each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis import probes as pr

CHUNK_BYTES = 1 << 28  # most activation bytes a probe fit or the lens holds at once (layers are read in chunks)


def fit_chunked(
    acts: Any, kind: str, rows: np.ndarray, targets: Sequence[np.ndarray], method: str, c: float, max_iter: int,
    *how: str, recipe: dict[str, Any] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """:func:`fit_layers` for each label vector in ``targets`` on the sites ``rows``, layer chunk by layer chunk
    (every target fitted on a chunk before the next is read); one (weights (layers, d), biases (layers,)) per target."""
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in targets]
    for _, x in acts.chunks(kind, rows, CHUNK_BYTES):
        for part, y in zip(parts, targets, strict=True):
            part.append(fit_layers(x, y, method, c, max_iter, *how, recipe=recipe))
    return [(np.concatenate([w for w, _ in p]), np.concatenate([b for _, b in p])) for p in parts]


def released_recipe(probe: Any) -> dict[str, Any]:
    """The released probe.py fit's options from ``probe`` (ProbeSettings): seed, early stopping, gradients."""
    keys = ("seed", "val_fraction", "patience", "max_epochs", "accumulate_grad")
    return {k: getattr(probe, k) for k in keys}


def fit_layers(
    x: np.ndarray, y: np.ndarray, method: str, c: float, max_iter: int, *how: str, recipe: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw-unit binary weights (layers, d) and biases (layers,) of one probe per layer of ``x`` (n, layers, d).
    ``recipe``: the released fit's options (:func:`released_recipe`)."""
    if method == "softmax":
        from analysis.softmax_probe import fit_softmax_probes

        w2, b2 = fit_softmax_probes(x, y)
        return w2[:, 1] - w2[:, 0], b2[:, 1] - b2[:, 0]
    if method == "released":  # the released probe.py recipe at its own values; no bias (b zeros)
        from analysis.softmax_probe import fit_released_probes

        device = how[1] if len(how) > 1 else "cpu"  # how: solver, device
        w2, b2, _ = fit_released_probes(x, y, device=device, **(recipe or {}))
        return w2[:, 1] - w2[:, 0], b2[:, 1] - b2[:, 0]
    return pr.fit_logistic_layers(x, y, c, max_iter, *how)
