"""Two-class softmax linear probes on raw residual activations, in two recipes.

* :func:`fit_softmax_probes`, this project's: logits ``W @ x + b`` with ``W`` (2, d) and ``b`` (2,), zero
  initialisation, AdamW (lr 1e-2) for a fixed number of epochs. Zero init keeps the softmax symmetric
  (``W[0] = -W[1]``, so ``W[1] - W[0] = 2 W[1]`` is the binary logistic weight, as in
  ``analysis.probes.two_class_weights``); the problem is convex, so the optimum does not depend on it.
* :func:`fit_released_probes`, the released ``probe.py``'s: randn/sqrt(d) init, no bias, AdamW lr 1e-4, betas
  (0.9, 0.99), wd 0.01, early stopping on a held-out loss (``probe.method: released``). Its ``W[1]`` is what the
  released ``intervene.py`` steered with; not symmetric, so ``W[1]`` is not half of ``W[1] - W[0]``.

``W[1]`` is the "accept" direction in both. Why hand-written: every layer is fitted at once as one batched model,
``x`` of shape (n, layers, d) giving logits (n, layers, 2) by one einsum, so a 37-layer x 2048-dim model is one fit
rather than 37 (scikit-learn has no batched multi-problem logistic fit). Adam(W) is elementwise and the loss a sum
(or mean) over layers of each layer's mean cross-entropy, so each layer follows the trajectory it would follow
alone (up to Adam's epsilon under the mean). Minibatch order comes from a ``torch.Generator`` seeded with ``seed``.

:func:`fit_softmax_probes`' defaults (``lr=1e-2``, ``weight_decay=0.01``, ``epochs=20``, ``batch_size=256``) suit
features of roughly standard-normal scale: 2000 x 64 separable data reaches > 95 % accuracy in a fraction of a
second on CPU. The released recipe's lr 1e-4 needs hundreds of epochs there; raw residual norms of a 3B model are
far larger, which is what it was set for.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def fit_softmax_probes(
    x: np.ndarray,
    y: np.ndarray,
    *,
    lr: float = 1e-2,
    weight_decay: float = 0.01,
    epochs: int = 20,
    batch_size: int | None = 256,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Fit one two-class softmax probe per layer on raw ``x`` (n, L, d) with labels ``y`` (n,) in {0, 1}.
    ``batch_size=None`` (or >= n) trains full-batch, one step per epoch. Returns ``W`` (L, 2, d) and ``b``
    (L, 2) as float32 arrays."""
    import torch

    if x.ndim != 3 or len(x) != len(y):
        raise ValueError(f"x must be (n, layers, d) with n = len(y); got {x.shape} and {len(y)} labels")
    n, n_layers, d = x.shape
    xt = torch.as_tensor(np.ascontiguousarray(x), device=device)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long, device=device)
    w = torch.zeros(n_layers, 2, d, device=device, requires_grad=True)
    b = torch.zeros(n_layers, 2, device=device, requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    bs = n if batch_size is None or batch_size >= n else batch_size
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device) if bs < n else torch.arange(n, device=device)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            xb = xt[idx].to(torch.float32)
            logits = torch.einsum("nld,lcd->nlc", xb, w) + b
            target = yt[idx, None].expand(-1, n_layers)
            # mean over rows, summed over layers: each layer's gradient is its own
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), target.reshape(-1)) * n_layers
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return w.detach().cpu().numpy(), b.detach().cpu().numpy()


def fit_released_probes(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.01,
    val_fraction: float = 0.1,
    patience: int = 10,
    max_epochs: int = 500,  # 0: the initial parameters
    batch_size: int = 128,
    groups: np.ndarray | None = None,
    accumulate_grad: bool = False,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The released ``probe.py`` recipe on raw ``x`` (n, L, d), labels ``y`` in {0, 1}: returns ``W`` (L, 2, d),
    ``b`` zeros (L, 2) (there is no bias; zeros let callers treat both recipes alike) and a log.

    As released: parameters of shape (L, d, 2) drawn ``randn / sqrt(d)`` (here from a ``torch.Generator`` seeded
    with ``seed``), no bias, AdamW with lr 1e-4, betas (0.9, 0.99), weight decay 0.01; the loss is the mean over
    layers of each layer's mean cross-entropy. Early stopping: one validation loss, the mean over *all layers*,
    with ``patience`` evaluations without a new minimum; the parameters kept are those of the lowest one. The
    released script stops all layers together this way (its validation loss is a single scalar averaged over
    layers, and it saves the whole probe tensor at each new minimum), so a layer that still improves stops with the
    others: reproduced, not fixed.

    What cannot be copied: the released script streamed fresh greedy generations, one pass over the training
    prompts in batches of 128 prompts (all the sites they held), evaluating every 50 batches on a held-out set of
    256 prompts. Here sites are captured once, so training runs epochs over minibatches of ``batch_size`` sites
    (shuffled by ``seed``) and evaluates once per epoch, up to ``max_epochs``; the validation rows are a
    ``val_fraction`` of the ``groups`` (problems) when given, else of the rows. The released loop also called
    ``optimiser.zero_grad()`` once, before its loop, so each step's gradient was the sum of every gradient so
    far; ``accumulate_grad=True`` reproduces that, the default zeroes per step (the recipe as intended).
    """
    import torch

    if x.ndim != 3 or len(x) != len(y):
        raise ValueError(f"x must be (n, layers, d) with n = len(y); got {x.shape} and {len(y)} labels")
    n, n_layers, d = x.shape
    gen = torch.Generator().manual_seed(seed)
    val = _validation_rows(n, val_fraction, groups, gen)
    xt = torch.as_tensor(np.ascontiguousarray(x), device=device)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long, device=device)
    tr_idx, va_idx = (~val).nonzero()[0], val.nonzero()[0]
    w = (torch.randn(n_layers, d, 2, generator=gen) / np.sqrt(d)).to(device).requires_grad_(True)
    opt = torch.optim.AdamW([w], lr=lr, betas=betas, weight_decay=weight_decay)

    def loss_of(idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("nld,ldc->nlc", xt[idx].to(torch.float32), w)
        target = yt[idx, None].expand(-1, n_layers)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 2), target.reshape(-1))  # mean over layers

    best, best_w, waited, history = float("inf"), w.detach().clone(), 0, []
    for _ in range(max_epochs):
        perm = torch.as_tensor(tr_idx)[torch.randperm(len(tr_idx), generator=gen)]
        for start in range(0, len(perm), batch_size):
            if not accumulate_grad:
                opt.zero_grad(set_to_none=True)
            loss_of(perm[start : start + batch_size]).backward()
            opt.step()
        with torch.no_grad():
            v = float(loss_of(va_idx))
        history.append(v)
        if v < best:
            best, best_w, waited = v, w.detach().clone(), 0
        else:
            waited += 1
            if waited >= patience:
                break
    log = {"epochs": len(history), "best_epoch": int(np.argmin(history)) + 1 if history else 0, "val_loss": history}
    out = best_w.permute(0, 2, 1).contiguous().cpu().numpy()
    return out, np.zeros((n_layers, 2), dtype=np.float32), log


def _validation_rows(n: int, fraction: float, groups: np.ndarray | None, gen: Any) -> np.ndarray:
    """A held-out mask: ``fraction`` of the groups (whole problems) when given, else of the rows; never empty and
    never everything."""
    import torch

    keys = np.arange(n) if groups is None else np.asarray(groups)
    uniq = np.unique(keys)
    if len(uniq) < 2:
        raise ValueError(f"the released probe needs at least 2 groups to hold one out for validation, got {len(uniq)}")
    k = min(max(1, round(fraction * len(uniq))), len(uniq) - 1)
    chosen = uniq[torch.randperm(len(uniq), generator=gen)[:k].numpy()]
    return np.isin(keys, chosen)


def softmax_predict(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``logit(class 1) - logit(class 0)`` per row and layer, shape (n, L), for probes ``W`` (L, 2, d),
    ``b`` (L, 2) and raw ``x`` (n, L, d); positive means "accept"."""
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    return np.einsum("nld,ld->nl", x.astype(np.float64), w64[:, 1] - w64[:, 0]) + (b64[:, 1] - b64[:, 0])
