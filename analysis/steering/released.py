"""The released ``intervene.py`` steering rule, with a KV cache, and its naive full-recompute original.

The released loop (greedy): each step runs the whole sequence unsteered and counts the " (" tokens it *predicts*
(the exact " (" token, anywhere in the completion, never in the prompt: the count only looks at new tokens). From
the step whose prediction is the k-th " (" on, it runs the whole sequence again with forward hooks on the steered
decoder blocks that add ``scale * unit(W[1])`` at the *last position only*, and the steered argmax replaces the
token. So every step from then on is steered, the step predicting the k-th " (" included (that " (" may change),
and every earlier position is unsteered in what later steps attend to: the hook never touched them in the rerun.

Here (:func:`released_generate`) each step feeds only the new token with the cache. Rows already past the k-th
" (" are steered at once; the others run unsteered, and rows whose prediction is the k-th " (" re-run that step
steered (``Cache.crop``, as the ``before_paren`` lookahead does). After a steered step the steered position's
K/V is dropped from the cache and the next step feeds it again, unsteered, beside the new token: two positions per
forward, the cache holds only clean K/V, exactly the released context. :func:`naive_released_generate` is the
released loop itself (no cache, one row at a time as it effectively ran), the equality test's reference.
"""

from __future__ import annotations

from typing import Any

import torch

from analysis.hooks import MaskHolder, add_to_residual
from analysis.steering.rules import SteerRule, TriggerVocab


def _forward(model: Any, feed: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> Any:
    return model(input_ids=feed, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)


def released_generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vectors: dict[int, torch.Tensor],
    vocab: TriggerVocab,
    rule: SteerRule,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    pick: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`analysis.steering.loop.steered_generate` for ``mode: released`` (same arguments and returns; the
    steered mask marks the new token whose position carried the vector, as ``before_paren`` does; a vector on the
    prompt's last token is applied, not marked). ``pick`` turns last-position logits into tokens."""
    device = input_ids.device
    b = input_ids.shape[0]
    opener = vocab.opener().to(device)
    k = rule.every
    count = torch.zeros(b, dtype=torch.long, device=device)
    holder = MaskHolder()
    mask = attention_mask.long()
    feed, feed_pos = input_ids, (mask.cumsum(-1) - 1).clamp(min=0)
    out = torch.full((b, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    steered = torch.zeros((b, max_new_tokens), dtype=torch.bool, device=device)
    rows = torch.arange(b, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    cache, used = None, 0
    allowed = rule.in_generation
    with torch.no_grad(), add_to_residual(model, vectors, holder):
        for i in range(max_new_tokens):
            live = ~done
            on = (count >= k) & live & allowed  # rows steered at this step whatever they predict
            last = torch.zeros_like(feed, dtype=torch.bool)
            last[:, -1] = on
            holder.mask = last.float() if bool(on.any()) else None
            res = _forward(model, feed, mask, feed_pos, cache)
            cache = res.past_key_values
            nxt = pick(res.logits[:, -1, :])
            hit = opener[nxt.clamp(0, len(opener) - 1)] & live & ~on
            count += hit.long()
            enter = hit & (count == k) & allowed  # this step predicts the k-th " (": re-run it steered
            if bool(enter.any()):
                if i > 0:
                    cache.crop(-feed.shape[1])
                last[:, -1] = on | enter
                holder.mask = last.float()
                res = _forward(model, feed, mask, feed_pos, None if i == 0 else cache)
                cache = res.past_key_values
                nxt = torch.where(enter, pick(res.logits[:, -1, :]), nxt)
                on = on | enter
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
            out[rows, i] = nxt
            if i > 0:
                steered[rows, i - 1] |= on
            done |= nxt == eos_token_id
            used = i + 1
            if bool(done.all()):
                break
            if bool(on.any()):  # drop the steered K/V; the next step re-feeds that position clean
                cache.crop(-1)
                feed, feed_pos = (
                    torch.cat([feed[:, -1:], nxt[:, None]], 1),
                    feed_pos[:, -1:] + torch.arange(2, device=device),
                )
            else:
                feed, feed_pos = nxt[:, None], feed_pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], dim=1)
            if int(done.sum()) * 8 >= done.numel():  # drop finished rows once they are an eighth of the batch
                keep = (~done).nonzero().flatten()
                cache.reorder_cache(keep)
                rows, done, feed, feed_pos, mask, count = (t[keep] for t in (rows, done, feed, feed_pos, mask, count))
                holder.rows = rows
    return out[:, :used], steered[:, :used]


def naive_released_generate(
    model: Any,
    input_ids: torch.Tensor,
    vectors: dict[int, torch.Tensor],
    vocab: TriggerVocab,
    rule: SteerRule,
    max_new_tokens: int,
) -> torch.Tensor:
    """The released loop for one unpadded prompt (1, T): per step an unsteered full forward, count the predicted
    " ("; from the k-th on, a second full forward with the vector at the last position, whose argmax replaces the
    token. No cache, no EOS handling. Returns the new tokens (1, max_new_tokens)."""
    seq, count = input_ids, 0
    holder = MaskHolder()
    opener = vocab.opener()
    with torch.no_grad(), add_to_residual(model, vectors, holder):
        for _ in range(max_new_tokens):
            holder.mask = None
            nxt = int(model(input_ids=seq, use_cache=False).logits[0, -1].float().argmax())
            count += int(bool(opener[min(nxt, len(opener) - 1)]))
            if count >= rule.every and rule.in_generation:
                last = torch.zeros(seq.shape, dtype=torch.float32)
                last[:, -1] = 1.0
                holder.mask = last
                nxt = int(model(input_ids=seq, use_cache=False).logits[0, -1].float().argmax())
            seq = torch.cat([seq, torch.tensor([[nxt]], dtype=seq.dtype)], 1)
    return seq[:, input_ids.shape[1] :]
