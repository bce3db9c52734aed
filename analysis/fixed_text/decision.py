"""The fixed-text stage's steering directions for one checkpoint: its own decision direction and the controls.

Split from :mod:`analysis.fixed_text.per_checkpoint` (which reads the texts and fits the label probes) because
these are the directions the run-level stage steers with; every fit reuses that module's chunked probe fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.fixed_text.probe_fit import fit_chunked
from analysis.splits import role_mask


def own_direction(
    cap: dict[str, np.ndarray],
    acts: Any,
    roles: np.ndarray,
    margin: np.ndarray,
    c: float,
    max_iter: int,
    method: str,
    *how: str,
    recipe: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The checkpoint's own decision direction at "(": a probe per layer for its own verdict (output margin > 0)
    on every fixed-text site of the train problems. This is the steering direction of the fixed-text stage.

    Why not the written-verdict probe: the fixed texts carry two checkpoints' verdicts (first and last), so that
    probe reads "what was written", not "what this model decides". On the tiny float32 run the written-verdict
    direction flipped none of the final checkpoint's rejected wrong lines even at scale 96, while this one flipped
    about a fifth at scale 32 (docs/experiments.md). ``own`` (labels) and ``w_paren_own`` / ``b_paren_own``."""
    own = (margin[:, -1] > 0).astype(np.int64)
    fit = _train_sites(cap, roles)
    w, b = _paren_probe(acts, fit, own, method, c, max_iter, *how, recipe=recipe)
    return {"own": own, "w_paren_own": w, "b_paren_own": b}


def _train_sites(cap: dict[str, np.ndarray], roles: np.ndarray) -> np.ndarray:
    """The tested fixed-text sites of the train problems: what every direction here is fitted on."""
    return role_mask(cap["problem"], roles, "train") & (cap["subset"] >= 0)


def _paren_probe(
    acts: Any, fit: np.ndarray, y: np.ndarray, method: str, c: float, max_iter: int, *how: str,
    recipe: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A "(" probe per layer for labels ``y`` on the sites ``fit`` (how: solver, device); zeros when either class
    has fewer than 5 sites."""
    w = np.zeros((acts.n_layers, acts.d), dtype=np.float32)
    b = np.zeros(acts.n_layers, dtype=np.float32)
    if min(int((y[fit] == 0).sum()), int((y[fit] == 1).sum())) >= 5:
        ((w, b),) = fit_chunked(acts, "paren", fit, (y[fit],), method, c, max_iter, *how, recipe=recipe)
    return w.astype(np.float32), b.astype(np.float32)


def control_directions(
    model: Any,
    ids: tuple[int, int],
    cap: dict[str, np.ndarray],
    acts: Any,
    roles: np.ndarray,
    own: np.ndarray,
    c: float,
    max_iter: int,
    method: str,
    *how: str,
    recipe: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Steering controls that can fail, at "(" of this checkpoint (analysis/directions.py says why each exists):

    * ``d_logit`` (d,): the unembedding difference of the verdict tokens through the final norm's gain, the
      direction that moves the output margin most per unit norm; a probe direction that only re-finds the readout
      steers no better than it;
    * ``d_meandiff`` (layers, d): the checkpoint's own-accept minus own-reject class means (no fitting);
    * ``d_parity`` / ``db_parity`` (layers, d) / (layers,): a probe of an unrelated label, the parity of the
      attempt line's index, fitted like the own-decision probe;
    * ``resid_norm`` (layers,): the mean residual norm at "(" sites, the unit of a relative steering scale.

    All on the train problems' tested sites."""
    from analysis.directions import logit_direction, mean_difference, residual_norm

    fit = _train_sites(cap, roles)
    w, b = _paren_probe(acts, fit, (cap["line"] % 2).astype(np.int64), method, c, max_iter, *how, recipe=recipe)
    meandiff = np.zeros((acts.n_layers, acts.d), dtype=np.float32)
    norms = np.zeros(acts.n_layers, dtype=np.float32)
    both = 0 < int(own[fit].sum()) < int(fit.sum())
    for layer in range(acts.n_layers):
        x = acts.layer("paren", layer).astype(np.float32)
        norms[layer] = residual_norm(x) if len(x) else 0.0
        if both:
            meandiff[layer] = mean_difference(x[fit], own[fit].astype(bool))
    return {
        "d_logit": logit_direction(model, ids).astype(np.float32),
        "d_meandiff": meandiff,
        "d_parity": w.astype(np.float32),
        "db_parity": b.astype(np.float32),
        "resid_norm": norms,
    }
