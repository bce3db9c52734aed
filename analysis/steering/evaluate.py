"""Does adding the verdict direction change behaviour? A controlled flip test, and what free generation shares.

* **Flip test** (the clean number): take attempt lines the model itself rejected although wrong ("= 52 (not 46)"),
  cut the text right after that "(", and let the model continue with the direction added at that "(" only. A flip is
  a continuation that now says "this". Unsteered greedy says "not" on all of them by construction, so the rate is
  the effect. Controls at the same scale: a random unit direction, and the negative direction on right attempts
  the model accepted (a flip there is "not"). Swept over the configured scales.
* **Free generation** (analysis/steering/free_generation.py): generate from the prompts with the steering rule.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from analysis.hooks import MaskHolder, add_to_residual
from tasks.countdown.trace import parse_attempts


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


def batch_slices(n: int, size: int) -> list[slice]:
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
        for sl in batch_slices(len(prefixes), batch_size):
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
