"""Free generation under steering: generate from the prompts with the steering rule (every k-th "(" or from the k-th
on) at the chosen scale, against unsteered and random-direction generation, and score answer success, format, the
share of wrong attempts accepted overall and at the steered "(" (accepted in any form:
tasks.countdown.accepted.accepted_attempts), with intervals over problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from analysis.steering.evaluate import batch_slices
from analysis.steering.loop import SteerRule, TriggerVocab, steered_generate
from tasks.countdown.accepted import accepted_attempts
from tasks.countdown.generate import Problem
from tasks.countdown.prompts import make_prompt
from tasks.countdown.reward import breakdown


def _accepted_wrong(text: str, p: Problem, steered_at: set[int]) -> tuple[int, int, int, int]:
    """(wrong lines, accepted among them, steered wrong lines, accepted among those) of one completion.

    A wrong line counts when the model judged it in any form (:func:`tasks.countdown.accepted.accepted_attempts`:
    "(this works)", "= 52! Yes, we got it!", or the answer right after it); accepted means that judgement was
    acceptance. A line is steered when one of the character offsets ``steered_at`` (where a steered token
    starts) falls inside it, so a steered line counts whether or not it kept its "(".
    """
    wrong = acc = s_wrong = s_acc = 0
    for a, judged in accepted_attempts(text, p.numbers, p.target):
        if not a.parsed or a.correct or judged is None:
            continue
        wrong += 1
        acc += judged
        lo, hi = a.line_span
        if any(lo <= o < hi for o in steered_at):
            s_wrong += 1
            s_acc += judged
    return wrong, acc, s_wrong, s_acc


def generate_steered(
    model: Any,
    tok: Any,
    problems: Sequence[Problem],
    vectors: dict[int, torch.Tensor],
    vocab: TriggerVocab,
    rule: SteerRule,
    max_new_tokens: int,
    batch_size: int,
    template: str = "base",
) -> tuple[list[str], list[set[int]]]:
    """Greedy completions of ``problems`` under the steering rule, and per completion the character offsets at
    which steered tokens start. A vector may be (d_model,) for every problem or (len(problems), d_model)."""
    device = next(model.parameters()).device
    side = tok.padding_side
    tok.padding_side = "left"
    texts: list[str] = []
    offsets: list[set[int]] = []
    try:
        for sl in batch_slices(len(problems), batch_size):
            prompts = [make_prompt(p.numbers, p.target, template) for p in problems[sl]]
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out, steered = steered_generate(
                model,
                enc.input_ids,
                enc.attention_mask,
                {layer: v[sl] if v.ndim == 2 else v for layer, v in vectors.items()},
                vocab,
                rule,
                max_new_tokens,
                tok.eos_token_id,
                tok.pad_token_id,
            )
            texts += tok.batch_decode(out, skip_special_tokens=True)
            for b in range(out.shape[0]):
                starts = _token_starts(tok, out[b].tolist())
                offsets.append({starts[j] for j in steered[b].nonzero().flatten().tolist()})
    finally:
        tok.padding_side = side
    return texts, offsets


def _token_starts(tok: Any, ids: Sequence[int]) -> list[int]:
    """Character offset at which each token's text starts in ``tok.decode(ids)``: one decode per token, checked
    against the whole text; prefix decodes (quadratic) only where pieces do not concatenate (split UTF-8)."""
    pieces = [tok.decode([i], skip_special_tokens=True) for i in ids]
    if "".join(pieces) == tok.decode(ids, skip_special_tokens=True):
        return np.concatenate([[0], np.cumsum([len(p) for p in pieces])[:-1]]).astype(int).tolist() if ids else []
    return [len(tok.decode(ids[:j], skip_special_tokens=True)) for j in range(len(ids))]


def score_free(texts: Sequence[str], offsets: Sequence[set[int]], problems: Sequence[Problem]) -> np.ndarray:
    """Per completion: (success, has answer, wrong lines, accepted wrong, steered wrong, accepted steered wrong)."""
    rows = np.zeros((len(texts), 6))
    for i, (p, t, ss) in enumerate(zip(problems, texts, offsets, strict=True)):
        b = breakdown(t, p.numbers, p.target)
        rows[i] = (b.correct, b.has_answer, *_accepted_wrong(t, p, ss))
    return rows


def summarise_free(rows: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Rates of :func:`score_free` rows with bootstrap CIs resampling ``groups`` (problems; several rows of one
    problem, e.g. several random directions, move together)."""
    from analysis.stats import bootstrap

    def mean_of(col: int) -> Any:
        return lambda idx: float(rows[idx, col].mean())

    def ratio(num: int, den: int) -> Any:
        return lambda idx: float(rows[idx, num].sum() / rows[idx, den].sum()) if rows[idx, den].sum() else None

    n = len(rows)
    tot = rows.sum(axis=0) if n else np.zeros(6)
    out: dict[str, Any] = {
        "completions": n,
        "success": float(tot[0] / n) if n else None,
        "format": float(tot[1] / n) if n else None,
        "wrong_lines": int(tot[2]),
        "wrong_accepted": float(tot[3] / tot[2]) if tot[2] else None,
        "steered_wrong_lines": int(tot[4]),
        "steered_wrong_accepted": float(tot[5] / tot[4]) if tot[4] else None,
    }
    for key, fn, ok in (
        ("success", mean_of(0), n > 0),
        ("format", mean_of(1), n > 0),
        ("wrong_accepted", ratio(3, 2), tot[2] > 0),
        ("steered_wrong_accepted", ratio(5, 4), tot[4] > 0),
    ):
        out[f"{key}_ci"] = bootstrap(fn, groups, n_boot=200) if ok else None
    return out


def evaluate_free_generation(
    model: Any,
    tok: Any,
    problems: Sequence[Problem],
    vectors: dict[int, torch.Tensor],
    vocab: TriggerVocab,
    rule: SteerRule,
    max_new_tokens: int,
    batch_size: int,
    template: str = "base",
) -> tuple[dict[str, Any], list[str]]:
    """Greedy generation on ``problems`` with the steering rule; metrics (with CIs over problems) and the
    completions."""
    texts, offsets = generate_steered(model, tok, problems, vectors, vocab, rule, max_new_tokens, batch_size, template)
    rows = score_free(texts, offsets, problems)
    return summarise_free(rows, np.arange(len(texts))), texts
