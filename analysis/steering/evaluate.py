"""Does adding the verdict direction change behaviour? A controlled flip test and free generation.

* **Flip test** (the clean number): take attempt lines the model itself rejected although wrong ("= 52 (not 46)"),
  cut the text right after that "(", and let the model continue with the direction added at that "(" only. A flip is
  a continuation that now says "this". Unsteered greedy says "not" on all of them by construction, so the rate is
  the effect. Controls at the same scale: a random unit direction, and the negative direction on right attempts
  the model accepted (a flip there is "not"). Swept over the configured scales.
* **Free generation**: generate from the prompts with the steering rule (every k-th "(" or from the k-th on) at the
  chosen scale, against unsteered and random-direction generation: answer success, format, the share of wrong
  attempts accepted overall and at the steered "(" (accepted in any form: tasks.countdown.trace.accepted_attempts).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from analysis.hooks import MaskHolder, add_to_residual
from analysis.steering.loop import SteerRule, TriggerVocab, steered_generate
from tasks.countdown.generate import Problem
from tasks.countdown.prompts import make_prompt
from tasks.countdown.reward import breakdown
from tasks.countdown.trace import accepted_attempts, parse_attempts


def flip_cases(records: Sequence[dict[str, Any]], limit: int) -> dict[str, list[str]]:
    """Prefixes ending at the "(" of wrong-rejected (``wrong``) and right-accepted (``right``) attempt lines, and
    the problem index of each (``wrong_problem``, ``right_problem``: the bootstrap resamples problems)."""
    out: dict[str, list] = {"wrong": [], "right": [], "wrong_problem": [], "right_problem": []}
    seen: set[str] = set()
    for r in records:
        for a in parse_attempts(r["completion"], r["numbers"], r["target"]):
            if not a.parsed or a.paren_span is None or a.verdict not in ("not", "this"):
                continue
            key = (
                "wrong"
                if (not a.correct and a.verdict == "not")
                else "right"
                if (a.correct and a.verdict == "this")
                else None
            )
            if key is None or len(out[key]) >= limit:
                continue
            prefix = r["prompt"] + r["completion"][: a.paren_span[0] + 1]
            if prefix not in seen:
                seen.add(prefix)
                out[key].append(prefix)
                out[f"{key}_problem"].append(int(r["problem"]))
    return out


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def continue_prefixes(
    model: Any,
    tok: Any,
    prefixes: Sequence[str],
    conditions: Sequence[dict[int, torch.Tensor]],
    new_tokens: int,
    batch_size: int,
) -> list[list[str]]:
    """Greedy continuations of ``prefixes`` under each condition (vectors added at the prefix's last token only).

    The prefix minus its last token is the same under every condition, so it is prefilled once per batch and its
    KV cache copied for each condition: a sweep costs one prefill plus ``new_tokens`` cached steps per condition.
    Returns ``texts[condition][prefix]``.
    """
    device = next(model.parameters()).device
    side = tok.padding_side
    tok.padding_side = "left"
    texts: list[list[str]] = [[] for _ in conditions]
    holder = MaskHolder()
    try:
        for sl in _batches(len(prefixes), batch_size):
            enc = tok(list(prefixes[sl]), return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            ids, mask = enc.input_ids, enc.attention_mask.long()
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                pre = model(
                    input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True
                ).past_key_values
            for c, vectors in enumerate(conditions):
                cache = copy.deepcopy(pre)
                feed, feed_pos, m = ids[:, -1:], pos[:, -1:], mask
                out = []
                with torch.no_grad(), add_to_residual(model, vectors, holder):
                    for i in range(new_tokens):
                        holder.mask = torch.ones_like(feed, dtype=torch.float32) if i == 0 else None
                        res = model(
                            input_ids=feed,
                            attention_mask=m,
                            position_ids=feed_pos,
                            past_key_values=cache,
                            use_cache=True,
                        )
                        cache = res.past_key_values
                        feed = res.logits[:, -1].argmax(-1, keepdim=True)
                        out.append(feed)
                        feed_pos = feed_pos + 1
                        m = torch.cat([m, torch.ones_like(feed)], 1)
                texts[c] += tok.batch_decode(torch.cat(out, 1), skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return texts


def _rate(texts: Sequence[str], word: str) -> float | None:
    return float(np.mean([t.lstrip().startswith(word) for t in texts])) if texts else None


def scaled(units: dict[int, np.ndarray], scale: float, sign: float = 1.0) -> dict[int, torch.Tensor]:
    return {layer: torch.tensor(sign * scale * u, dtype=torch.float32) for layer, u in units.items()}


def random_units(units: dict[int, np.ndarray], seed: int, draws: int = 1) -> list[dict[int, np.ndarray]]:
    """``draws`` sets of random unit vectors, one per layer (same dimension as the probe directions), seeded."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        d = {}
        for layer, u in units.items():
            v = rng.standard_normal(u.shape[0])
            d[layer] = v / np.linalg.norm(v)
        out.append(d)
    return out


def flip_sweep(
    model: Any,
    tok: Any,
    cases: dict[str, list[str]],
    units: dict[int, np.ndarray],
    rands: Sequence[dict[int, np.ndarray]],
    scales: Sequence[float],
    new_tokens: int,
    batch_size: int,
    all_draws_at: float | None = None,
) -> list[dict[str, Any]]:
    """Per scale: flip rates of W on wrong-rejected lines, of random directions there (mean and spread over the
    draws), and of -W on right ones.

    Every draw in ``rands`` runs at ``all_draws_at`` (the run's one scale, whose numbers are reported); the other
    scales of the curve run the first draw only (None: every draw at every scale). Only cases whose *unsteered
    greedy* continuation keeps the original verdict count (a sampled rollout may have said "not" where greedy says
    "this"), so every rate is a change caused by the vector and is 0 at scale 0.
    """
    draws = {s: list(rands) if all_draws_at is None or s == all_draws_at else list(rands[:1]) for s in scales}
    conds: list[dict] = [{}]
    where: dict[float, tuple[int, list[int]]] = {}
    for s in scales:
        where[s] = (len(conds), list(range(len(conds) + 1, len(conds) + 1 + len(draws[s]))))
        conds += [scaled(units, s)] + [scaled(d, s) for d in draws[s]]
    wrong = continue_prefixes(model, tok, cases["wrong"], conds, new_tokens, batch_size)
    right = continue_prefixes(
        model, tok, cases["right"], [{}] + [scaled(units, s, -1.0) for s in scales], new_tokens, batch_size
    )
    keep_w = [i for i, t in enumerate(wrong[0]) if t.lstrip().startswith("not")]
    keep_r = [i for i, t in enumerate(right[0]) if t.lstrip().startswith("this")]
    rows = []
    groups = np.array([cases["wrong_problem"][i] for i in keep_w], dtype=np.int64) if "wrong_problem" in cases else None
    for k, s in enumerate(scales):
        (wi, ri), n = where[s], right[1 + k]
        w = wrong[wi]
        rand_rates = [_rate([wrong[j][i] for i in keep_w], "this") for j in ri]
        rand_rates = [x for x in rand_rates if x is not None]
        rows.append(
            {
                "scale": float(s),
                "n_wrong": len(keep_w),
                "n_right": len(keep_r),
                "random_draws": len(ri),
                "flip_direction": _rate([w[i] for i in keep_w], "this"),
                "flip_random": float(np.mean(rand_rates)) if rand_rates else None,
                "flip_random_max": float(np.max(rand_rates)) if rand_rates else None,
                "flip_negative_on_right": _rate([n[i] for i in keep_r], "not"),
                "example": (cases["wrong"][keep_w[0]][-120:], w[keep_w[0]][:60]) if keep_w else None,
            }
        )
        if groups is not None and keep_w:
            from analysis.stats import mean_ci

            own = np.array([w[i].lstrip().startswith("this") for i in keep_w], dtype=np.float64)
            rand = np.mean(
                [[wrong[j][i].lstrip().startswith("this") for i in keep_w] for j in ri] or [[0.0] * len(keep_w)],
                axis=0,
            )
            rows[-1]["flip_direction_ci"] = mean_ci(own, groups, n_boot=200)
            rows[-1]["flip_random_ci"] = mean_ci(rand, groups, n_boot=200)
    return rows


def _accepted_wrong(text: str, p: Problem, steered_at: set[int]) -> tuple[int, int, int, int]:
    """(wrong lines, accepted among them, steered wrong lines, accepted among those) of one completion.

    A wrong line counts when the model judged it in any form (:func:`tasks.countdown.trace.accepted_attempts`:
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
        for sl in _batches(len(problems), batch_size):
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
