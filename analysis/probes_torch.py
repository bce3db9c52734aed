"""Many L2-regularised logistic regressions fitted at once with Newton's method in PyTorch (``probe.solver: torch``).

Why: a checkpoint's probes are independent small problems (layers x labels x real/shuffled labels), and fitting
them one by one with scikit-learn on the CPU is the analysis's slowest stage at 3B scale. Here each target's
features are standardized exactly as :func:`analysis.probes.fit_logistic` does, an unpenalised intercept column is
appended, and all targets of a chunk take Newton steps together (one batched Hessian solve per step, backtracking
on the objective per target), on the analysis device, in float64. The objective is scikit-learn's:
``sum_i logloss_i + ||w||^2 / (2 C)``, so both solvers approach the same unique optimum; scikit-learn stops at
its L-BFGS tolerance, Newton closer to the optimum (tests/analysis/test_probes_batched.py checks they agree).
"""

from __future__ import annotations

import numpy as np
import torch

STEPS = 2.0 ** -torch.arange(12, dtype=torch.float64)  # backtracking step sizes 1, 1/2, ..., 1/2048


def _objective(z: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Sum of logistic losses of logits ``z`` (..., T, n) plus the ridge term, per target."""
    return torch.nn.functional.softplus(z).sum(-1) - (y * z).sum(-1) + 0.5 * (reg * theta * theta).sum(-1)


def newton_logistic(
    x: torch.Tensor, y: torch.Tensor, c: float, max_iter: int = 100, tol: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``T`` logistic regressions on standardized features ``x`` (T, n, d) with labels ``y`` (T, n) in {0, 1};
    returns weights (T, d) and intercepts (T,). Stops per target when its largest gradient entry, divided by n, is
    below ``tol``."""
    t, n, d = x.shape
    xa = torch.cat([x, torch.ones(t, n, 1, dtype=x.dtype, device=x.device)], dim=2)
    reg = torch.full((d + 1,), 1.0 / c, dtype=x.dtype, device=x.device)
    reg[-1] = 0.0  # the intercept is not penalised (scikit-learn's convention)
    eye = torch.diag(reg) + 1e-10 * torch.eye(d + 1, dtype=x.dtype, device=x.device)
    theta = torch.zeros(t, d + 1, dtype=x.dtype, device=x.device)
    z = torch.zeros(t, n, dtype=x.dtype, device=x.device)
    f = _objective(z, y, theta, reg)
    steps = STEPS.to(device=x.device, dtype=x.dtype)
    xt = xa.transpose(1, 2)
    for _ in range(max_iter):
        p = torch.sigmoid(z)
        g = (xt @ (p - y)[..., None]).squeeze(-1) + reg * theta
        active = g.abs().amax(1) / n > tol
        if not bool(active.any()):
            break
        h = xt @ ((p * (1 - p))[..., None] * xa) + eye
        step = torch.linalg.solve(h, g)
        dz = (xa @ step[..., None]).squeeze(-1)
        decrement = (g * step).sum(1)
        cand = _objective(
            z[None] - steps[:, None, None] * dz[None], y[None], theta[None] - steps[:, None, None] * step[None], reg
        )  # (steps, T)
        ok = cand <= f[None] - 1e-4 * steps[:, None] * decrement[None]
        first = torch.where(ok.any(0), ok.to(torch.int64).argmax(0), cand.argmin(0))
        size = torch.where(active, steps[first], torch.zeros_like(f))
        theta = theta - size[:, None] * step
        z = z - size[:, None] * dz
        f = torch.where(active, cand[first, torch.arange(t, device=x.device)], f)
    return theta[:, :d], theta[:, d]


def fit_logistic_batch(
    xs: list[np.ndarray], ys: list[np.ndarray], c: float, device: str = "cpu", max_iter: int = 100
) -> list[tuple[np.ndarray, float]]:
    """Raw-unit ``(w, b)`` for each pair ``(xs[i], ys[i])``; every ``xs[i]`` has the same shape (n, d). Features
    are standardized per target (mean, population std + 1e-6, as :func:`analysis.probes.fit_logistic`)."""
    if not xs:
        return []
    x = torch.stack([torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in xs]).to(device)
    y = torch.stack([torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in ys]).to(device)
    mu = x.mean(1, keepdim=True)
    sd = x.std(1, unbiased=False, keepdim=True) + 1e-6
    w, b = newton_logistic((x - mu) / sd, y, c, max_iter)
    w_raw = w / sd[:, 0]
    b_raw = b - ((mu[:, 0] / sd[:, 0]) * w).sum(1)
    w_np, b_np = w_raw.cpu().numpy(), b_raw.cpu().numpy()
    return [(w_np[i], float(b_np[i])) for i in range(len(xs))]


def fit_layers(
    x: np.ndarray, y: np.ndarray, c: float, device: str = "cpu", chunk_bytes: int = 1 << 30
) -> tuple[np.ndarray, np.ndarray]:
    """One probe per layer of ``x`` (n, layers, d) for labels ``y``: raw-unit weights (layers, d) and biases
    (layers,), in chunks of layers whose float64 features (with temporaries) fit ``chunk_bytes``."""
    n, n_layers, d = x.shape
    per = max(1, chunk_bytes // max(1, n * (d + 1) * 8 * 4))
    w, b = np.zeros((n_layers, d)), np.zeros(n_layers)
    for s in range(0, n_layers, per):
        chunk = range(s, min(s + per, n_layers))
        got = fit_logistic_batch([x[:, i] for i in chunk], [y] * len(chunk), c, device)
        for j, (wj, bj) in enumerate(got):
            w[s + j], b[s + j] = wj, bj
    return w, b
