"""One teacher-forced forward pass per batch of rollouts, keeping the residual stream at the probed sites.

For every rollout, prompt + completion is tokenized with offsets, :mod:`analysis.positions` maps the parser's
spans to the "(", "=" and stated-value tokens, and :func:`analysis.hooks.record_residuals` keeps only those
positions from the embeddings and every decoder layer during a single forward pass (right padding; causal
attention makes the padding invisible to earlier positions).

Two sinks share that one pass: :func:`capture` fills preallocated in-memory arrays (small text sets, tests), and
:func:`capture_to_dir` streams each batch straight to one layer-major ``.npy`` file per position kind, shape
(layers + 1, sites, d_model), so host memory holds one batch, never the whole capture (a 3B model's capture of a
600-rollout set is gigabytes). Every site's row offset is known before the first pass (sites come from the
tokenizer alone), so a batch is written with ``os.pwrite`` at its final place: no memory map whose pages would
stay resident, no concatenation. :class:`analysis.capture_files.Capture` reads the files back one layer at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.capture_files import empty_npy
from analysis.hooks import decoder_layers, record_residuals
from analysis.positions import KINDS, LABELS, find_sites
from tasks import atomic

META = ("record", "problem", "greedy", "line", "paren_pos", *LABELS)


@dataclass
class _Plan:
    """Where every record's sites go: token ids, sites, the passes' order and each record's first output row."""

    ids: list[np.ndarray]  # each record's token ids up to its last probed token (int32; offsets are not kept)
    sites: list
    need: list[int]
    rep: dict[int, int]  # record -> the record whose pass it shares (itself when it runs its own)
    order: list[int]  # records that run a pass, shortest first
    start: dict[int, int]  # record -> its first site row (sites in record order)
    n_sites: int


def _plan(tokenizer: Any, records: Sequence[dict[str, Any]], chunk: int = 64) -> _Plan:
    """Tokenize ``chunk`` records at a time and keep only what the passes need: int32 ids up to the last probed
    token and the sites (the tokenizer's Python lists and offsets would otherwise be ~170 bytes per token for the
    whole text set, the one part of a streamed capture that grows with it)."""
    ids: list[np.ndarray] = []
    sites: list = []
    for s in range(0, len(records), chunk):
        part = records[s : s + chunk]
        enc = tokenizer(
            [r["prompt"] + r["completion"] for r in part], return_offsets_mapping=True, add_special_tokens=False
        )
        for j, r in enumerate(part):
            ss = find_sites(r["completion"], r["numbers"], r["target"], enc["offset_mapping"][j], len(r["prompt"]))
            n = 1 + max(getattr(x, k) for x in ss for k in KINDS) if ss else 0
            sites.append(ss)
            ids.append(np.asarray(enc["input_ids"][j][:n], dtype=np.int32))
    need = [len(x) for x in ids]
    # texts identical up to their last probed token (the two texts of a counterfactual pair) share one pass
    first: dict[tuple, int] = {}
    rep = {
        i: first.setdefault(
            (hashlib.blake2b(ids[i].tobytes()).digest(), tuple(getattr(x, k) for x in ss for k in KINDS)), i
        )
        for i, ss in enumerate(sites)
        if ss
    }
    order = sorted((i for i, r in rep.items() if r == i), key=lambda i: need[i])
    start, at = {}, 0
    for i in sorted(rep):
        start[i] = at
        at += len(sites[i])
    return _Plan(ids, sites, need, rep, order, start, at)


def _batches(plan: _Plan, batch_size: int, max_sites: int | None) -> Iterator[list[int]]:
    """Consecutive records of the pass order, ``batch_size`` at most and, when ``max_sites`` is set, no more probed
    sites than that (a record with more sites than the cap runs alone)."""
    batch: list[int] = []
    sites = 0
    for i in plan.order:
        n = len(plan.sites[i])
        if batch and (len(batch) == batch_size or (max_sites is not None and sites + n > max_sites)):
            yield batch
            batch, sites = [], 0
        batch.append(i)
        sites += n
    if batch:
        yield batch


def _passes(
    model: Any, tokenizer: Any, plan: _Plan, batch_size: int, store: Any, progress: Any, max_bytes: int | None = None
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield (records of the batch, their activations (sites, kinds, layers + 1, d) in ``store`` dtype).

    ``max_bytes`` bounds a batch's float32 activations (sites x 3 kinds x (layers + 1) x d_model x 4 bytes; the pass
    holds about twice that on the host, plus the stored copy): without it a batch of records with many attempt lines
    holds more, which is what a long text set's peak host memory would otherwise grow with."""
    device = next(model.parameters()).device
    n_layers = len(decoder_layers(model))
    d = model.config.hidden_size
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    per_site = len(KINDS) * (n_layers + 1) * d * 4
    max_sites = None if max_bytes is None else max(1, max_bytes // per_site)
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(plan, batch_size, max_sites):
            width = max(plan.need[i] for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, i in enumerate(batch):
                x = plan.ids[i]
                ids[b, : len(x)] = torch.from_numpy(x)
                mask[b, : len(x)] = 1
            rows = [b for b, i in enumerate(batch) for s in plan.sites[i] for _ in KINDS]
            cols = [getattr(s, k) for i in batch for s in plan.sites[i] for k in KINDS]
            with (
                torch.no_grad(),
                record_residuals(model, torch.tensor(rows, device=device), torch.tensor(cols, device=device)) as out,
            ):
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False, logits_to_keep=1)
            stacked = torch.stack([out[layer] for layer in range(n_layers + 1)], dim=1).float().cpu().numpy()
            out.clear()
            yield batch, stacked.reshape(-1, len(KINDS), n_layers + 1, d).astype(store)
            if progress is not None:
                progress.update(len(batch))
    finally:
        model.train(was_training)


def _twins(plan: _Plan) -> dict[int, list[int]]:
    """Pass-running record -> every record (itself included) that takes its activations."""
    out: dict[int, list[int]] = {}
    for i in sorted(plan.rep):
        out.setdefault(plan.rep[i], []).append(i)
    return out


def _meta(records: Sequence[dict[str, Any]], plan: _Plan) -> dict[str, np.ndarray]:
    meta: dict[str, list[int]] = {k: [] for k in META}
    for i in sorted(plan.rep):  # record order; a record sharing a pass keeps its own labels
        r = records[i]
        for s in plan.sites[i]:
            meta["record"].append(i)
            meta["problem"].append(int(r["problem"]))
            meta["greedy"].append(int(r["kind"] == "greedy"))
            meta["line"].append(s.line)
            meta["paren_pos"].append(s.paren)
            for lab in LABELS:
                meta[lab].append(getattr(s, lab))
    return {k: np.asarray(v, dtype=np.int64) for k, v in meta.items()}


def _store(dtype: str) -> Any:
    return np.float16 if dtype == "float16" else np.float32


def capture(
    model: Any,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    batch_size: int = 32,
    dtype: str = "float16",
    progress: Any = None,
    max_batch_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """In memory: activations ``act_<kind>`` of shape (sites, layers + 1, d_model) and per-site metadata arrays,
    sites in record order.

    Metadata: ``record`` (index into ``records``), ``problem``, ``greedy`` (1 for greedy rollouts), ``line``,
    the labels ``verdict``/``truth``/``stated``, and ``paren_pos`` (token index of the "(").

    Each text is fed only up to its last probed token (causal attention: later tokens cannot change it) and texts
    are batched by that length, so little of a batch is padding; texts identical up to that token (the two texts
    of a counterfactual pair) share one pass; only the last position's logits are computed (a hub model's
    vocabulary would otherwise cost batch x length x 151,936 floats per pass).
    """
    plan, store = _plan(tokenizer, records), _store(dtype)
    n_layers, d = len(decoder_layers(model)), model.config.hidden_size
    acts = {k: np.zeros((plan.n_sites, n_layers + 1, d), dtype=store) for k in KINDS}
    if progress is not None:
        progress.update(len(records) - len(plan.order))  # records without a probed site, or sharing a pass
    twins = _twins(plan)
    for batch, stacked in _passes(model, tokenizer, plan, batch_size, store, progress, max_batch_bytes):
        at = 0
        for i in batch:
            n = len(plan.sites[i])
            for j in twins[i]:
                for ki, k in enumerate(KINDS):
                    acts[k][plan.start[j] : plan.start[j] + n] = stacked[at : at + n, ki]
            at += n
    return {**{f"act_{k}": v for k, v in acts.items()}, **_meta(records, plan)}


def capture_to_dir(
    model: Any,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    directory: Path,
    batch_size: int = 32,
    dtype: str = "float16",
    progress: Any = None,
    max_batch_bytes: int | None = None,
) -> None:
    """Stream the capture of :func:`capture` to ``directory``: ``act_<kind>.npy`` (layers + 1, sites, d_model)
    written batch by batch at each site's final row, and ``meta.npz``. Each file is written under a temporary name
    and renamed when complete (:mod:`tasks.atomic`); the caller marks the directory valid only after this returns."""
    plan, store = _plan(tokenizer, records), _store(dtype)
    n_layers, d = len(decoder_layers(model)), model.config.hidden_size
    directory.mkdir(parents=True, exist_ok=True)
    shape = (n_layers + 1, plan.n_sites, d)
    row_bytes = d * np.dtype(store).itemsize
    if progress is not None:
        progress.update(len(records) - len(plan.order))
    twins = _twins(plan)
    with (
        atomic.atomic_path(directory / f"act_{KINDS[0]}.npy") as t0,
        atomic.atomic_path(directory / f"act_{KINDS[1]}.npy") as t1,
        atomic.atomic_path(directory / f"act_{KINDS[2]}.npy") as t2,
    ):
        tmps = dict(zip(KINDS, (t0, t1, t2), strict=True))
        offsets = {k: empty_npy(p, store, shape) for k, p in tmps.items()}
        fds = {k: os.open(p, os.O_WRONLY) for k, p in tmps.items()}
        try:
            for batch, stacked in _passes(model, tokenizer, plan, batch_size, store, progress, max_batch_bytes):
                at = 0
                for i in batch:
                    n = len(plan.sites[i])
                    for ki, k in enumerate(KINDS):
                        for layer in range(n_layers + 1):
                            block = np.ascontiguousarray(stacked[at : at + n, ki, layer]).tobytes()
                            for j in twins[i]:
                                pos = offsets[k] + (layer * plan.n_sites + plan.start[j]) * row_bytes
                                os.pwrite(fds[k], block, pos)
                    at += n
        finally:
            for fd in fds.values():
                os.close(fd)
    with atomic.atomic_path(directory / "meta.npz", suffix=".npz") as tmp:
        np.savez(tmp, **_meta(records, plan))
