"""Token-conditional steering inside a KV-cached, batched generation loop.

Why by hand: ``model.generate`` has no notion of "add a vector at this token only", and the original study got it
by re-running the whole sequence for every new token (quadratic). Here each forward call feeds only the new
token, per-sequence counters (:mod:`analysis.steering.rules`, where the four rules are stated) decide whether that
token is steered, and :func:`analysis.hooks.add_to_residual` adds ``scale * unit(direction)`` to the chosen layers at
exactly those positions. ``every_kth`` steers the k-th, 2k-th, ... attempt-line "(" (a "(" after an "=" on the
same line); ``from_kth`` every token from the k-th such "(" on (this project's cumulative rule, not the released
code's); ``released`` is the released ``intervene.py`` and runs in :mod:`analysis.steering.released`.

``position`` says where an ``every_kth`` vector goes: on the "(" itself (``paren``: only the verdict word after it
can change), or on the token that *predicts* the "(" (``before_paren``: the stated value, the post's reading, so
the model may write "= 52! Yes, we got it!" instead of a "("). ``before_paren`` needs a lookahead: each step runs
unsteered; rows whose next token would be the steered "(" drop that position from the KV cache
(``Cache.crop(-1)``: negative = tokens to remove, in transformers 4.4x and 5.x alike) and re-run it with the vector,
then take the token the steered position predicts. The line keeps its ordinal even if no "(" follows, so in free
generation exactly the positions predicting the k-th, 2k-th, ... "(" are steered (the steered K/V stays cached).

With all vectors zero every rule reproduces unsteered greedy generation token for token.
"""

from __future__ import annotations

from typing import Any

import torch

from analysis.hooks import MaskHolder, add_to_residual
from analysis.steering.rules import ParenCounter, SteerRule, TriggerVocab, rule_positions, trigger_vocab

__all__ = [
    "ParenCounter",
    "SteerRule",
    "TriggerVocab",
    "naive_steered_generate",
    "rule_positions",
    "steered_generate",
    "trigger_vocab",
]


def steered_generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vectors: dict[int, torch.Tensor],
    vocab: TriggerVocab,
    rule: SteerRule,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    prompt_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate from left-padded prompts, adding ``vectors[layer]`` at steered positions.

    ``prompt_mask`` (batch, T), when given, overrides the rule inside the prompt (for example: steer only its last
    token). Returns the new tokens (batch, <= max_new_tokens; pad after EOS) and a bool mask of which new tokens
    carry the vector (with ``before_paren``: the token before the "(", whose prediction was re-run; a trigger on
    the prompt's last token is applied but not marked).
    """
    was_training = model.training
    model.eval()
    try:
        if rule.mode == "released":
            from analysis.steering.released import released_generate

            def pick(logits: torch.Tensor) -> torch.Tensor:
                return _pick(logits, temperature, generator)

            args = (input_ids, attention_mask, vectors, vocab, rule, max_new_tokens, eos_token_id, pad_token_id)
            return released_generate(model, *args, pick)
        sampling = (max_new_tokens, eos_token_id, pad_token_id, temperature, generator)
        return _decode(model, input_ids, attention_mask, vectors, vocab, rule, sampling, prompt_mask)
    finally:
        model.train(was_training)


def _decode(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vectors: dict[int, torch.Tensor],
    vocab: TriggerVocab,
    rule: SteerRule,
    sampling: tuple[int, int, int, float, torch.Generator | None],
    prompt_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`steered_generate`'s token loop (every mode but ``released``), with the model already in eval mode.

    ``sampling`` is ``(max_new_tokens, eos_token_id, pad_token_id, temperature, generator)``."""
    max_new_tokens, eos_token_id, pad_token_id, temperature, generator = sampling
    device = input_ids.device
    b = input_ids.shape[0]
    counter = ParenCounter(b, vocab, rule, device)
    lookahead = rule.position == "before_paren" and rule.mode == "every_kth"
    pmask = _prompt_steer_mask(counter, input_ids, attention_mask, rule, lookahead, prompt_mask)
    holder = MaskHolder()
    out = torch.full((b, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    steered = torch.zeros((b, max_new_tokens), dtype=torch.bool, device=device)
    rows = torch.arange(b, device=device)  # the original row of each row still generating
    done = torch.zeros(b, dtype=torch.bool, device=device)
    cache = None
    mask = attention_mask.long()
    feed, feed_mask, feed_pos = input_ids, pmask, (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    used = 0
    with torch.no_grad(), add_to_residual(model, vectors, holder):
        for i in range(max_new_tokens):
            holder.mask = feed_mask.float() if bool(feed_mask.any()) else None
            res = model(
                input_ids=feed, attention_mask=mask, position_ids=feed_pos, past_key_values=cache, use_cache=True
            )
            cache = res.past_key_values
            nxt = _pick(res.logits[:, -1, :], temperature, generator)
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
            live = ~done
            ahead = torch.zeros_like(done)
            if lookahead:
                ahead = counter.next_is_steered(nxt, live, rule.in_generation)
                if bool(ahead.any()):  # re-run this position with the vector on the rows about to write "("
                    res = _rerun_steered(model, holder, ahead, (feed, feed_mask, feed_pos, mask), cache, i)
                    cache = res.past_key_values
                    nxt = torch.where(ahead, _pick(res.logits[:, -1, :], temperature, generator), nxt)
                    if i > 0:
                        steered[rows, i - 1] |= ahead
            out[rows, i] = nxt
            wrote_paren = counter.is_paren(nxt)
            step_mask = counter.step(nxt, live, rule.in_generation) & (not lookahead)
            counter.count += (ahead & ~wrote_paren).long()  # a steered line keeps its ordinal without "("
            steered[rows, i] |= step_mask
            done |= nxt == eos_token_id
            used = i + 1
            if bool(done.all()):
                break
            feed, feed_mask, feed_pos = nxt[:, None], step_mask[:, None], feed_pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], dim=1)
            if int(done.sum()) * 8 >= done.numel():  # drop finished rows once they are an eighth of the batch
                keep = (~done).nonzero().flatten()
                cache.reorder_cache(keep)
                rows, done, feed, feed_mask, feed_pos, mask = (
                    t[keep] for t in (rows, done, feed, feed_mask, feed_pos, mask)
                )
                counter.select(keep)
                holder.rows = rows
    return out[:, :used], steered[:, :used]


def _prompt_steer_mask(
    counter: ParenCounter,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rule: SteerRule,
    lookahead: bool,
    prompt_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Which prompt tokens carry the vector (batch, T): the rule's "(" (or the token before each, with
    ``lookahead``) as the counter walks the prompt, unless ``prompt_mask`` overrides it."""
    b, t = input_ids.shape
    live = attention_mask.bool()
    pmask = torch.zeros((b, t), dtype=torch.bool, device=input_ids.device)
    for j in range(t):
        pmask[:, j] = counter.step(input_ids[:, j], live[:, j], rule.in_prompt)
    if lookahead:  # the token before each steered "(" of the prompt instead of the "(" itself
        pmask = torch.cat([pmask[:, 1:], torch.zeros_like(pmask[:, :1])], dim=1)
    return pmask if prompt_mask is None else prompt_mask.bool().to(input_ids.device)


def _rerun_steered(
    model: Any, holder: MaskHolder, ahead: torch.Tensor, fed: tuple[torch.Tensor, ...], cache: Any, i: int
) -> Any:
    """The last forward pass again, with the vector also on the rows in ``ahead`` (about to write a steered "("):
    the cache loses what that pass added first (or is rebuilt from the prompt at step 0)."""
    feed, feed_mask, feed_pos, mask = fed
    if i > 0:
        cache.crop(-feed.shape[1])
    rerun = feed_mask.clone()
    rerun[:, -1] |= ahead
    holder.mask = rerun.float()
    return model(
        input_ids=feed,
        attention_mask=mask,
        position_ids=feed_pos,
        past_key_values=None if i == 0 else cache,
        use_cache=True,
    )


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy (``temperature`` 0) or sampled next tokens from (batch, vocab) logits."""
    logits = logits.float()
    if temperature > 0:
        probs = torch.softmax(logits / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return logits.argmax(-1)


def naive_steered_generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vectors: dict[int, torch.Tensor],
    vocab: TriggerVocab,
    rule: SteerRule,
    max_new_tokens: int,
) -> torch.Tensor:
    """The original protocol, kept as the benchmark baseline: re-run the full sequence for every new token (no
    cache), recomputing the steering mask over the whole sequence each time. Greedy; no EOS handling. (``released``
    steers the last position only: :func:`analysis.steering.released.naive_released_generate`.)"""
    if rule.mode == "released":
        raise ValueError("naive_steered_generate: mode released has its own reference, naive_released_generate")
    seq, mask = input_ids, attention_mask.long()
    holder = MaskHolder()
    with torch.no_grad(), add_to_residual(model, vectors, holder):
        for _ in range(max_new_tokens):
            counter = ParenCounter(seq.shape[0], vocab, rule, seq.device)
            full = torch.stack([counter.step(seq[:, j], mask[:, j].bool(), True) for j in range(seq.shape[1])], 1)
            holder.mask = full.float()
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=seq, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1)
            logits = out.logits[:, -1]
            nxt = logits.float().argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return seq[:, input_ids.shape[1] :]
