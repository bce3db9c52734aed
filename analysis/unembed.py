"""What a residual direction means in token space, as functions of arrays.

A direction ``v`` added to the last residual changes the logits by ``W_U (g * v)`` (``g``: the final RMSNorm gain,
ignoring the norm's rescaling), so the tokens with the largest entries are the ones it promotes. The same product
with the input embedding (when it is not tied to the unembedding) lists the tokens whose embeddings point along
``v``. Both are reported for W[1] (accept) and W[0] (reject).

:func:`describe_layers` scores every layer's direction in one product per space, on the model's device and in its
dtype: a hub model's unembedding (151,936 x 2048 for Qwen2.5-3B) is never copied, let alone to float64 per layer.
The NumPy functions below are the same maths on plain arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def token_scores(direction: np.ndarray, matrix: np.ndarray, gain: np.ndarray | None = None) -> np.ndarray:
    """``matrix @ (gain * direction)``: one score per vocabulary row."""
    v = direction.astype(np.float64) * (gain.astype(np.float64) if gain is not None else 1.0)
    return matrix.astype(np.float64) @ v


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` highest-scoring ids with their scores, best first."""
    k = min(k, len(scores))
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx])]
    return [(int(i), float(scores[i])) for i in idx]


def model_matrices(model: Any) -> dict[str, Any]:
    """The unembedding (always), the input embedding (only when untied) and the final norm gain of an HF LM."""
    out = model.get_output_embeddings().weight.detach().float().cpu().numpy()
    inp = model.get_input_embeddings().weight.detach().float().cpu().numpy()
    norm = getattr(getattr(model, "model", None), "norm", None)
    gain = norm.weight.detach().float().cpu().numpy() if norm is not None and hasattr(norm, "weight") else None
    tied = out.shape == inp.shape and np.shares_memory(out, inp) or np.array_equal(out, inp)
    return {"unembed": out, "embed": None if tied else inp, "gain": gain}


def describe_layers(
    directions: np.ndarray, model: Any, tokenizer: Any, k: int, gain: bool = True
) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """:func:`describe` for each row of ``directions`` (layers, d), keyed by layer number (as text): top-``k``
    tokens per side in the unembedding (with the final norm's gain when ``gain``) and, when untied, the input
    embedding. One (vocab, d) x (d, layers) product per space, in the model's dtype on its device."""
    import torch

    out_w = model.get_output_embeddings().weight
    in_w = model.get_input_embeddings().weight
    tied = out_w.data_ptr() == in_w.data_ptr() or (out_w.shape == in_w.shape and bool(torch.equal(out_w, in_w)))
    norm = getattr(getattr(model, "model", None), "norm", None)
    g = norm.weight if gain and norm is not None and hasattr(norm, "weight") else None
    d = torch.as_tensor(np.asarray(directions, dtype=np.float32)).to(device=out_w.device, dtype=out_w.dtype)
    spaces = {"unembed": (out_w, g)} if tied else {"unembed": (out_w, g), "embed": (in_w, None)}
    scores = {}
    with torch.no_grad():
        for space, (m, gn) in spaces.items():
            v = d * gn.to(d.dtype) if gn is not None else d
            scores[space] = (m @ v.T).float().cpu().numpy()  # (vocab, layers)
    result: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for layer in range(d.shape[0]):
        row: dict[str, list[tuple[str, float]]] = {}
        for space, s in scores.items():
            col = s[:, layer].astype(np.float64)
            for side, sc in (("W1", col), ("W0", -col)):
                row[f"{space}_{side}"] = [(tokenizer.decode([i]), round(v, 4)) for i, v in top_k(sc, k)]
        result[str(layer)] = row
    return result


def describe(direction: np.ndarray, mats: dict[str, Any], tokenizer: Any, k: int) -> dict[str, list[tuple[str, float]]]:
    """Top-``k`` tokens for ``direction`` (accept side) and ``-direction`` (reject side) in each available space."""
    out: dict[str, list[tuple[str, float]]] = {}
    for space in ("unembed", "embed"):
        m = mats.get(space)
        if m is None:
            continue
        gain = mats.get("gain") if space == "unembed" else None
        s = token_scores(direction, m, gain)
        for side, sc in (("W1", s), ("W0", -s)):
            out[f"{space}_{side}"] = [(tokenizer.decode([i]), round(v, 4)) for i, v in top_k(sc, k)]
    return out
