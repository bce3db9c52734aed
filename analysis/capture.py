"""Stage 2: one teacher-forced forward pass per batch of rollouts, keeping the residual stream at the probed sites.

For every rollout, prompt + completion is tokenized with offsets, :mod:`analysis.positions` maps the parser's
spans to the "(", "=" and stated-value tokens, and :func:`analysis.hooks.record_residuals` keeps only those
positions from the embeddings and every decoder layer during a single forward pass (right padding; causal
attention makes the padding invisible to earlier positions). Memory is O(sites x layers x d_model), never
O(tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from analysis.hooks import decoder_layers, record_residuals
from analysis.positions import KINDS, LABELS, find_sites


def capture(
    model: Any,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    batch_size: int = 32,
    dtype: str = "float16",
    progress: Any = None,
) -> dict[str, np.ndarray]:
    """Activations ``act_<kind>`` of shape (sites, layers + 1, d_model) and per-site metadata arrays, sites in
    record order.

    Metadata: ``record`` (index into ``records``), ``problem``, ``greedy`` (1 for greedy rollouts), ``line``,
    the labels ``verdict``/``truth``/``stated``, and ``paren_pos`` (token index of the "(").

    Each text is fed only up to its last probed token (causal attention: later tokens cannot change it) and texts
    are batched by that length, so little of a batch is padding; texts identical up to that token (the two texts
    of a counterfactual pair) share one pass; only the last position's logits are computed (a hub model's
    vocabulary would otherwise cost batch x length x 151,936 floats per pass).
    """
    device = next(model.parameters()).device
    n_layers = len(decoder_layers(model))
    d = model.config.hidden_size
    acts: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    meta: dict[str, list[int]] = {k: [] for k in ("record", "problem", "greedy", "line", "paren_pos", *LABELS)}
    store = np.float16 if dtype == "float16" else np.float32
    texts = [r["prompt"] + r["completion"] for r in records]
    enc = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=False) if texts else {}
    sites = [
        find_sites(r["completion"], r["numbers"], r["target"], enc["offset_mapping"][i], len(r["prompt"]))
        for i, r in enumerate(records)
    ]
    need = [1 + max(getattr(s, k) for s in ss for k in KINDS) if ss else 0 for ss in sites]
    # texts identical up to their last probed token (the two texts of a counterfactual pair) share one pass
    first: dict[tuple, int] = {}
    rep = {
        i: first.setdefault((tuple(enc["input_ids"][i][: need[i]]), tuple(getattr(s, k) for s in ss for k in KINDS)), i)
        for i, ss in enumerate(sites)
        if ss
    }
    order = sorted((i for i, r in rep.items() if r == i), key=lambda i: need[i])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if progress is not None:
        progress.update(len(records) - len(order))  # records without a probed site, or sharing a pass, need none
    got: dict[int, np.ndarray] = {}  # record -> (its sites, kinds, layers + 1, d)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(need[i] for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, i in enumerate(batch):
                x = enc["input_ids"][i][: need[i]]
                ids[b, : len(x)] = torch.tensor(x)
                mask[b, : len(x)] = 1
            rows = [b for b, i in enumerate(batch) for s in sites[i] for _ in KINDS]
            cols = [getattr(s, k) for i in batch for s in sites[i] for k in KINDS]
            with (
                torch.no_grad(),
                record_residuals(model, torch.tensor(rows, device=device), torch.tensor(cols, device=device)) as out,
            ):
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False, logits_to_keep=1)
            stacked = torch.stack([out[layer] for layer in range(n_layers + 1)], dim=1).float().cpu().numpy()
            stacked = stacked.reshape(-1, len(KINDS), n_layers + 1, d).astype(store)
            at = 0
            for i in batch:
                got[i] = stacked[at : at + len(sites[i])]
                at += len(sites[i])
            if progress is not None:
                progress.update(len(batch))
    finally:
        model.train(was_training)
    for i in sorted(rep):  # record order; a record sharing a pass takes its twin's activations, keeps its labels
        a = got[rep[i]]
        for ki, k in enumerate(KINDS):
            acts[k].append(a[:, ki])
        r = records[i]
        for s in sites[i]:
            meta["record"].append(i)
            meta["problem"].append(int(r["problem"]))
            meta["greedy"].append(int(r["kind"] == "greedy"))
            meta["line"].append(s.line)
            meta["paren_pos"].append(s.paren)
            for lab in LABELS:
                meta[lab].append(getattr(s, lab))
    result = {
        f"act_{k}": np.concatenate(v) if v else np.zeros((0, n_layers + 1, d), dtype=store) for k, v in acts.items()
    }
    result.update({k: np.asarray(v, dtype=np.int64) for k, v in meta.items()})
    return result
