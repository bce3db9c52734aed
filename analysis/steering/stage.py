"""The steering stage for one checkpoint: the scale sweep, the chosen scale, free generation and text samples.

Kept apart from :mod:`analysis.steering.evaluate` (the measurements) so that the choices made here (which cases, which
scale, which samples to show) are easy to read in one place.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from analysis.config import AnalysisConfig
from analysis.hooks import record_residual_norms
from analysis.steering.evaluate import flip_cases, flip_sweep, random_units, scaled
from analysis.steering.free_generation import generate_steered, score_free, summarise_free
from analysis.steering.loop import SteerRule, trigger_vocab
from tasks.countdown.generate import Problem


def residual_norms(model: Any, tok: Any, texts: Sequence[str], layers: Sequence[int]) -> dict[int, float]:
    """Mean L2 norm of the residual stream at each layer over ``texts`` (to put absolute scales in context)."""
    device = next(model.parameters()).device
    with record_residual_norms(model, layers) as norms, torch.no_grad():
        for t in texts:
            model(**tok(t, return_tensors="pt", add_special_tokens=False).to(device))
    return {layer: float(np.mean(v)) if v else 0.0 for layer, v in norms.items()}


def run_steering(
    model: Any,
    tok: Any,
    records: Sequence[dict[str, Any]],
    problems: Sequence[Problem],
    units: dict[int, np.ndarray],
    cfg: AnalysisConfig,
    template: str,
    scale: float,
    slow_parts: bool = True,
) -> dict[str, Any]:
    """Flip sweep over ``steering.scales`` (only the run's one ``scale`` without ``slow_parts``), then free
    generation at ``scale`` against the controls.

    ``records`` and ``problems`` are the report problems' only (the scale was chosen on calibration problems).
    """
    s = cfg.steering
    torch.manual_seed(s.random_seed)
    vocab = trigger_vocab(tok, model.get_input_embeddings().weight.shape[0])
    # random directions of the same norm as ``units`` per layer (unit vectors, or residual-norm long ones when the
    # run's scale is relative: analysis/checkpoint_stages.py)
    rands = [
        {x: r[x] * float(np.linalg.norm(units[x])) for x in r}
        for r in random_units(units, s.random_seed, s.random_draws)
    ]
    if any(not np.any(u) for u in units.values()):
        return {"error": "no verdict probe direction at a steered layer (too few 'not'/'this' examples)"}
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    cases = flip_cases(records, s.max_flip_cases)
    scales = sorted({*s.scales, scale}) if slow_parts else [scale]
    sweep = flip_sweep(model, tok, cases, units, rands, scales, s.flip_new_tokens, s.batch_size, all_draws_at=scale)
    seconds["flip_sweep"] = time.perf_counter() - t0
    chosen = scale
    rule = SteerRule(every=s.every, mode=s.mode, position=s.position)
    probs = list(problems)[: s.problems]
    runs: dict[str, Any] = {}
    texts: dict[str, list[str]] = {}
    one = np.arange(len(probs))
    # every condition in one batched generation (a vector per row): unsteered, W, and each random draw
    conds = [scaled(units, 0.0), scaled(units, chosen), *(scaled(r, chosen) for r in rands)]
    stacked = {layer: torch.stack([c[layer] for c in conds for _ in probs]) for layer in units}
    all_texts, all_offsets = generate_steered(
        model, tok, probs * len(conds), stacked, vocab, rule, s.max_new_tokens, s.free_batch_size, template
    )
    n = len(probs)
    part = [(all_texts[i * n : (i + 1) * n], all_offsets[i * n : (i + 1) * n]) for i in range(len(conds))]
    for name, (t, o) in zip(("unsteered", "direction"), part[:2], strict=True):
        texts[name] = t
        runs[name] = summarise_free(score_free(t, o, probs), one)
    pooled = [score_free(t, o, probs) for t, o in part[2:]]
    per_draw = [summarise_free(rows, one) for rows in pooled]
    texts["random"] = part[2][0]
    seconds["free_generation"] = time.perf_counter() - t0 - sum(seconds.values())
    runs["random"] = summarise_free(np.concatenate(pooled), np.tile(one, len(rands)))
    runs["random"]["draws"] = len(rands)
    runs["random"]["per_draw_wrong_accepted"] = [d["wrong_accepted"] for d in per_draw]
    runs["random"]["per_draw_success"] = [d["success"] for d in per_draw]
    differ = [i for i in range(len(probs)) if texts["unsteered"][i] != texts["direction"][i]]
    samples = [
        {
            "numbers": list(probs[i].numbers),
            "target": probs[i].target,
            "original": texts["unsteered"][i],
            "steered": texts["direction"][i],
        }
        for i in differ[: cfg.report.text_samples]
    ]
    norms = residual_norms(model, tok, [r["prompt"] + r["completion"] for r in records[:16]], list(units))
    return {
        "layers": list(units),
        "rule": {"every": s.every, "mode": s.mode, "position": s.position},
        "residual_norm": {str(k): v for k, v in norms.items()},
        "sweep": sweep,
        "chosen_scale": chosen,
        "at_chosen": next((r for r in sweep if r["scale"] == chosen), None),
        "free": runs,
        "samples": samples,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
