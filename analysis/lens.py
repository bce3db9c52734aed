"""The logit lens at the verdict "(": what each layer's residual stream already says about the next word.

At an attempt line's "(", the checkpoint's own verdict is its next-token preference ``log P("this") - log P("not")``.
Applying the final norm and the unembedding to the residual of an earlier layer gives the same quantity as that
layer "would" say it (the logit lens). Only two rows of the unembedding matter, and the softmax normaliser cancels
in the difference, so the margin is ``norm(h) . (U["this"] - U["not"])``: no vocabulary-sized product per site.

It is the baseline every probe curve is drawn against: at the last layer the margin *is* the model's output, so a
probe for a greedy verdict label is right there by construction, and what a probe adds is only what the lens
cannot read at earlier layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def lens_margin(model: Any, acts: np.ndarray, ids: tuple[int, int], batch: int = 4096) -> np.ndarray:
    """``(sites, layers)`` margin ``log P(ids[0]) - log P(ids[1])`` through the final norm and unembedding, for
    residual activations ``acts`` of shape (sites, layers, d_model)."""
    norm = model.model.norm
    u = model.get_output_embeddings().weight
    param = next(model.parameters())
    diff = (u[ids[0]] - u[ids[1]]).detach().to(torch.float32)
    n, layers, d = acts.shape
    out = np.zeros((n, layers), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, n, batch):
            h = torch.from_numpy(np.ascontiguousarray(acts[s : s + batch])).to(param.device, param.dtype)
            out[s : s + batch] = (norm(h).to(torch.float32) @ diff.to(param.device)).cpu().numpy()
    bias = getattr(model.get_output_embeddings(), "bias", None)
    if bias is not None:
        out += float(bias[ids[0]] - bias[ids[1]])
    return out
