"""Which attention heads and MLP blocks write the verification direction, and do they matter causally.

Why by hand: attribution over RL checkpoints of arbitrary HF Qwen2 models is not something TransformerLens or any
library does for us. For Qwen2 the attention output is ``o_proj(concat(heads))`` with no bias, so head ``h`` of
layer ``l`` writes ``W_O[:, h] @ z_h`` into the residual stream; its *direct attribution* onto a unit direction
``u`` is ``z_h . (W_O[:, h]^T u)``, and an MLP block's is ``mlp_out . u``. At each attempt line's "(" we project
every component onto the final-layer verdict probe direction and onto the probe direction of its own layer, and
score it by the difference of its mean projection between "this" and "not" sites.

Causal checks, all teacher-forced on the checkpoint's greedy rollouts (one batched forward pass per condition):
the model's verdict at each "(" (the larger logit of the "this" vs "not" tokens) with the top-k heads, k random
heads (several draws), or the top MLP blocks ablated (zero or mean), scored as the verdict-error rate (wrong lines
accepted + right lines rejected) and its change from the unablated model; and activation patching (the top heads'
outputs at a "this" site copied into "not" sites: how many flip). Free generation with the top-3 and 3 random
heads ablated checks the same on whole completions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from analysis.hooks import MaskHolder, ablate, attention_out_proj, record_component_means, record_components
from analysis.positions import find_sites


def _device(model: Any) -> torch.device:
    """Where the model's weights are: every input a stage builds goes there (the model may be on a GPU)."""
    return next(model.parameters()).device


def verdict_token_ids(tok: Any) -> tuple[list[int], list[int]]:
    """Token ids that start the word "not" / "this" after "(": the tokens whose text is the word (with or without
    a leading space) plus the first token of the word as the tokenizer splits it (small vocabularies split it)."""
    texts = [tok.decode([i]).strip() for i in range(len(tok))]

    def ids(word: str) -> list[int]:
        found = {i for i, t in enumerate(texts) if t == word}
        for variant in (word, " " + word):
            first = tok(variant, add_special_tokens=False).input_ids[:1]
            found.update(i for i in first if texts[i] and word.startswith(texts[i]))
        return sorted(found)

    return ids("not"), ids("this")


class Sites:
    """Greedy rollouts tokenized once, cut after their last probed "(", with the "(" positions and labels.

    Sequences are sorted by length so that batches carry little padding (about 1.5x faster on the tiny run).
    """

    def __init__(self, tok: Any, records: list[dict[str, Any]], limit: int) -> None:
        rows = []
        for r in records:
            if r["kind"] != "greedy" or len(rows) >= limit:
                continue
            enc = tok(r["prompt"] + r["completion"], return_offsets_mapping=True, add_special_tokens=False)
            sites = find_sites(r["completion"], r["numbers"], r["target"], enc.offset_mapping, len(r["prompt"]))
            if sites:
                rows.append((enc.input_ids[: max(s.paren for s in sites) + 1], sites))
        rows.sort(key=lambda row: len(row[0]))
        self.seqs: list[list[int]] = [ids for ids, _ in rows]
        self.pos: list[list[int]] = [[s.paren for s in sites] for _, sites in rows]
        self.verdict: list[int] = [s.verdict for _, sites in rows for s in sites]
        self.truth: list[int] = [s.truth for _, sites in rows for s in sites]
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def batches(
        self, size: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(ids, mask, rows, cols) per batch on ``device`` (the model's), right-padded; rows/cols index the batch's
        "(" sites."""
        for s in range(0, len(self.seqs), size):
            seqs, pos = self.seqs[s : s + size], self.pos[s : s + size]
            width = max(len(x) for x in seqs)
            ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, x in enumerate(seqs):
                ids[b, : len(x)], mask[b, : len(x)] = torch.tensor(x), 1
            rows = torch.tensor([b for b, p in enumerate(pos) for _ in p])
            cols = torch.tensor([c for p in pos for c in p])
            yield ids.to(device), mask.to(device), rows.to(device), cols.to(device)


def collect(model: Any, sites: Sites, batch: int) -> dict[str, Any]:
    """Head concats and MLP outputs at every site (on the host), dataset means of both (on the model's device,
    where ablations use them), and the unablated verdict logits."""
    heads: dict[int, list] = {}
    mlps: dict[int, list] = {}
    holder = MaskHolder()
    with torch.no_grad(), record_component_means(model, holder) as acc:
        for ids, mask, rows, cols in sites.batches(batch, _device(model)):
            holder.mask = mask
            with record_components(model, rows, cols) as out:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            for layer, x in out["heads"].items():
                heads.setdefault(layer, []).append(x.float().cpu())
            for layer, x in out["mlp"].items():
                mlps.setdefault(layer, []).append(x.float().cpu())
    return {
        "heads": {k: torch.cat(v) for k, v in heads.items()},
        "mlp": {k: torch.cat(v) for k, v in mlps.items()},
        "head_means": {k: s / max(n, 1.0) for k, (s, n) in acc["heads"].items()},
        "mlp_means": {k: s / max(n, 1.0) for k, (s, n) in acc["mlp"].items()},
    }


def attribution(
    model: Any, comp: dict[str, Any], verdict: np.ndarray, w: np.ndarray, n_heads: int
) -> list[dict[str, Any]]:
    """Per component: the "this" minus "not" mean projection onto the final-layer and its own layer's direction."""
    y = torch.tensor(verdict)
    final = torch.tensor(w[-1] / (np.linalg.norm(w[-1]) or 1.0), dtype=torch.float32)
    rows = []

    def sep(proj: torch.Tensor) -> float:
        if not (y == 1).any() or not (y == 0).any():
            return 0.0
        return float(proj[y == 1].mean() - proj[y == 0].mean())

    for layer, z in comp["heads"].items():
        own = torch.tensor(w[layer] / (np.linalg.norm(w[layer]) or 1.0), dtype=torch.float32)
        wo = attention_out_proj(model, layer).weight.detach().float().cpu()  # (d, heads * head_dim)
        hd = wo.shape[1] // n_heads
        for h in range(n_heads):
            sl = slice(h * hd, (h + 1) * hd)
            zs = z[:, sl]
            rows.append(
                {"component": f"L{layer}H{h}", "layer": layer, "head": h,
                 "score_final": sep(zs @ (wo[:, sl].T @ final)), "score_layer": sep(zs @ (wo[:, sl].T @ own))}
            )  # fmt: skip
        out = comp["mlp"][layer]
        rows.append(
            {"component": f"L{layer}MLP", "layer": layer, "head": None,
             "score_final": sep(out @ final), "score_layer": sep(out @ own)}
        )  # fmt: skip
    rows.sort(key=lambda r: -abs(r["score_final"]))
    return rows


def decisions(
    model: Any, sites: Sites, batch: int, ids_not: list[int], ids_this: list[int], ctx: Any = None
) -> np.ndarray:
    """1 where the model's verdict at a site is "this" (teacher-forced), under the context manager ``ctx``."""
    out = []
    with torch.no_grad(), ctx if ctx is not None else nullcontext():
        for ids, mask, rows, cols in sites.batches(batch, _device(model)):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[rows, cols].float()
            out.append((logits[:, ids_this].max(-1).values > logits[:, ids_not].max(-1).values).cpu().numpy())
    return np.concatenate(out).astype(int) if out else np.zeros(0, dtype=int)


def error_rate(dec: np.ndarray, truth: np.ndarray) -> float:
    """Share of sites whose verdict is wrong: a wrong line accepted or a right line rejected."""
    return float((dec != truth).mean()) if len(dec) else 0.0


def patch_flips(
    model: Any,
    sites: Sites,
    comp: dict[str, Any],
    heads: dict[int, list[int]],
    head_dim: int,
    ids_not: list[int],
    ids_this: list[int],
    seed: int,
    batch: int = 32,
) -> float | None:
    """Share of "not" sites that say "this" once ``heads``' outputs there are replaced by a "this" site's.

    Every "not" site is its own row (its sequence cut right after the "(", right-padded), with its own donor drawn
    from the "this" sites, so one batched forward pass patches many sites at once.
    """
    v = np.asarray(sites.verdict)
    this_idx = np.flatnonzero(v == 1)
    rows = [(seq, c) for seq, cols in enumerate(sites.pos) for c in cols]  # site order = sites.verdict order
    targets = [rows[i] for i in np.flatnonzero(v == 0)]
    if not len(this_idx) or not targets:
        return None
    donors = np.random.default_rng(seed).choice(this_idx, len(targets))
    dev = _device(model)
    flips = 0
    with torch.no_grad():
        for s in range(0, len(targets), batch):
            chunk, don = targets[s : s + batch], torch.as_tensor(donors[s : s + batch])
            width = max(c for _, c in chunk) + 1
            ids = torch.full((len(chunk), width), sites.pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, (seq, c) in enumerate(chunk):
                ids[b, : c + 1], mask[b, : c + 1] = torch.tensor(sites.seqs[seq][: c + 1]), 1
            ids, mask, pos = ids.to(dev), mask.to(dev), torch.tensor([c for _, c in chunk], device=dev)
            patch = {layer: comp["heads"][layer][don].to(dev) for layer in heads}
            with ablate(model, heads, [], head_dim, patch=patch, positions=pos):
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            at = logits[torch.arange(len(chunk), device=dev), pos].float()
            flips += int((at[:, ids_this].max(-1).values > at[:, ids_not].max(-1).values).sum())
    return flips / len(targets)
