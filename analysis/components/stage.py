"""The component stage for one checkpoint: attribution ranking, ablation vs random heads, patching, and the study's
open questions with controls (is W just the verdict tokens' unembedding? could a prompt do the same?).

The measurements live in :mod:`analysis.components.measure` and :mod:`analysis.steering.evaluate`; this module picks the
conditions and collects the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis.components import measure as cm
from analysis.config import AnalysisConfig
from analysis.hooks import ablate
from analysis.steering.evaluate import continue_prefixes, flip_cases, scaled
from analysis.steering.free_generation import evaluate_free_generation
from analysis.steering.loop import SteerRule, trigger_vocab
from analysis.unembed import model_matrices, token_scores, top_k
from tasks.countdown.generate import Problem
from tasks.countdown.trace import parse_attempts


def _verdict_errors(texts: Sequence[str], problems: Sequence[Problem]) -> dict[str, Any]:
    """Share of generated attempt lines whose verdict is wrong, and how many lines there were (an ablation can
    break the format so that no line is left to judge: error None, lines 0)."""
    bad = n = 0
    for t, p in zip(texts, problems, strict=True):
        for a in parse_attempts(t, p.numbers, p.target):
            if a.parsed and a.verdict in ("not", "this"):
                n += 1
                bad += (a.verdict == "this") != a.correct
    return {"error": bad / n if n else None, "lines": n}


def head_sel(rows: Sequence[dict[str, Any]]) -> dict[int, list[int]]:
    """Ranking rows of heads -> ``{layer: [head, ...]}`` as :func:`analysis.hooks.ablate` takes them."""
    sel: dict[int, list[int]] = {}
    for r in rows:
        sel.setdefault(r["layer"], []).append(r["head"])
    return sel


def span_cosine(w: np.ndarray, vectors: Sequence[np.ndarray]) -> float:
    """Norm of unit(w)'s projection onto span(vectors): 1 = w lies in their span, ~0 = orthogonal to it."""
    q, _ = np.linalg.qr(np.stack(vectors, 1))
    u = w / (np.linalg.norm(w) or 1.0)
    return float(np.linalg.norm(q.T @ u))


STEP_KS = (1, 3, 5)  # top-k ablations drawn against step in the report (analysis/components/section.py)
RANDOM_K = 3  # the random-heads control drawn against step, and the one the finding compares with


def run_components(
    model: Any,
    tok: Any,
    records: Sequence[dict[str, Any]],
    problems: Sequence[Problem],
    dirs: dict[str, np.ndarray],
    steering: dict[str, Any],
    cfg: AnalysisConfig,
    template: str,
    slow_parts: bool = True,
) -> dict[str, Any]:
    """Attribution ranking, head/MLP ablation vs random heads and patching; with ``slow_parts`` also free generation
    with the top-3 / random-3 heads ablated and the token-vector and prompting controls."""
    c = cfg.components
    conf = model.config
    n_heads = conf.num_attention_heads
    head_dim = conf.hidden_size // n_heads
    ids_not, ids_this = cm.verdict_token_ids(tok)
    sites = cm.Sites(tok, list(records), c.max_sequences)
    if not ids_not or not ids_this or len(set(sites.verdict)) < 2:
        return {"error": "too few 'not' / 'this' verdicts (or tokens) at this checkpoint for attribution"}
    comp = cm.collect(model, sites, c.batch_size)
    w = dirs["w_paren_verdict"]
    ranking = cm.attribution(model, comp, np.asarray(sites.verdict), w, n_heads)
    heads = [r for r in ranking if r["head"] is not None]
    mlps = [r["layer"] for r in ranking if r["head"] is None]
    truth = np.asarray(sites.truth)
    means = (comp["head_means"], comp["mlp_means"]) if c.mode == "mean" else (None, None)

    def run(hs: list[dict[str, Any]], ml: list[int]) -> tuple[float, float]:
        ctx = ablate(model, head_sel(hs), ml, head_dim, head_means=means[0], mlp_means=means[1])
        dec = cm.decisions(model, sites, c.batch_size, ids_not, ids_this, ctx)
        return cm.error_rate(dec, truth), float((dec != base_dec).mean())

    base_dec = cm.decisions(model, sites, c.batch_size, ids_not, ids_this)
    base_err = cm.error_rate(base_dec, truth)
    rng = np.random.default_rng(c.seed)
    by_k = _head_curve(run, heads, base_err, rng, c, slow_parts)
    mlp_rows = [
        {"k": k, **dict(zip(("error", "flipped"), run([], mlps[:k]), strict=True))}
        for k in range(1, min(c.mlp_top, len(mlps)) + 1)
    ]

    k3 = min(3, len(heads) // 2)
    rand3 = [heads[k3:][i] for i in rng.choice(len(heads) - k3, k3, replace=False)]
    patch = {
        "top": cm.patch_flips(model, sites, comp, head_sel(heads[:k3]), head_dim, ids_not, ids_this, c.seed),
        "random": cm.patch_flips(model, sites, comp, head_sel(rand3), head_dim, ids_not, ids_this, c.seed),
    }
    sels = {"none": {}, "top3": head_sel(heads[:k3]), "random3": head_sel(rand3)}
    free = _ablated_generation(model, tok, problems, sels, head_dim, means[0], c, template) if slow_parts else None
    return {
        "mode": c.mode,
        "n_sites": len(sites.verdict),
        "ranking": ranking,
        "baseline_error": base_err,
        "ablate_heads": by_k,
        "ablate_mlp": mlp_rows,
        "patching_flips": patch,
        "free_generation_verdict_error": free,
        "controls": controls(model, tok, records, w, steering, cfg) if slow_parts else None,
    }


def _head_curve(
    run: Any, heads: list[dict[str, Any]], base_err: float, rng: np.random.Generator, c: Any, slow_parts: bool
) -> list[dict[str, Any]]:
    """Error and flips with the top-k heads ablated against k random other heads: the whole k curve (random heads
    at every k) where the slow parts run; elsewhere only the k the step curves read. ``run(heads, mlps)`` ablates."""
    by_k = []
    k_all = range(1, min(c.k_max, len(heads) // 2) + 1)
    for k in k_all if slow_parts else [k for k in STEP_KS if k in k_all]:
        top_err, top_flip = run(heads[:k], [])
        rest = heads[k:]
        draws = c.random_draws if slow_parts or k == RANDOM_K else 0
        rand = [run([rest[i] for i in rng.choice(len(rest), k, replace=False)], []) for _ in range(draws)]
        by_k.append(
            {"k": k, "top_error": top_err, "top_change": abs(top_err - base_err), "top_flipped": top_flip,
             "random_change_mean": float(np.mean([abs(e - base_err) for e, _ in rand])) if rand else None,
             "random_change_std": float(np.std([abs(e - base_err) for e, _ in rand])) if rand else None,
             "random_flipped_mean": float(np.mean([f for _, f in rand])) if rand else None}
        )  # fmt: skip
    return by_k


def _ablated_generation(
    model: Any,
    tok: Any,
    problems: Sequence[Problem],
    sels: dict[str, Any],
    head_dim: int,
    head_means: Any,
    c: Any,
    template: str,
) -> dict[str, Any]:
    """Verdict errors of free generation with each selection of heads ablated (``sels``: name -> head selection)."""
    free = {}
    probs = list(problems)[: c.free_problems]
    vocab = trigger_vocab(tok, model.get_input_embeddings().weight.shape[0])
    for name, sel in sels.items():
        with ablate(model, sel, [], head_dim, head_means=head_means):
            _, texts = evaluate_free_generation(
                model, tok, probs, {}, vocab, SteerRule(every=1), c.free_max_new_tokens, 64, template
            )
        free[name] = _verdict_errors(texts, probs)
    return free


def controls(
    model: Any,
    tok: Any,
    records: Sequence[dict[str, Any]],
    w: np.ndarray,
    steering: dict[str, Any],
    cfg: AnalysisConfig,
) -> dict[str, Any]:
    """Is W a mix of verdict-token directions? Steering with the tokens' own vectors at equal norm, cosine of W with
    their span per layer, and a prompting baseline (the accepting words inserted before the "(")."""
    c = cfg.components
    mats = model_matrices(model)
    vocab_ids = {t: tok(" " + t, add_special_tokens=False).input_ids[-1:] for t in c.control_tokens}
    vecs = {f"unembed '{t}'": mats["unembed"][ids[0]] for t, ids in vocab_ids.items() if ids}
    if mats["embed"] is not None:
        vecs.update({f"embed '{t}'": mats["embed"][ids[0]] for t, ids in vocab_ids.items() if ids})
    nb = [i for i, _ in top_k(token_scores(w[-1], mats["unembed"], mats["gain"]), c.neighbours)]
    span = list(vecs.values()) + [mats["unembed"][i] for i in nb]
    out: dict[str, Any] = {
        "neighbours": [tok.decode([i]) for i in nb],
        "span_cosine_by_layer": [span_cosine(w[layer], span) if np.any(w[layer]) else None for layer in range(len(w))],
    }
    scale, layers = steering.get("chosen_scale"), steering.get("layers")
    cases = flip_cases(records, cfg.steering.max_flip_cases)["wrong"]
    if scale is None or not layers or not cases:
        return out
    s = cfg.steering
    own = {layer: w[s.direction_layer if s.direction_layer is not None else layer] for layer in layers}
    conds = {"W": {k: v / (np.linalg.norm(v) or 1.0) for k, v in own.items()}}
    conds.update({name: {layer: v / np.linalg.norm(v) for layer in layers} for name, v in vecs.items()})
    texts = continue_prefixes(
        model, tok, cases, [{}] + [scaled(u, scale) for u in conds.values()], s.flip_new_tokens, s.batch_size
    )
    keep = [i for i, t in enumerate(texts[0]) if t.lstrip().startswith("not")]

    def rate(ts: list[str]) -> float | None:
        return float(np.mean([ts[i].lstrip().startswith("this") for i in keep])) if keep else None

    out["steer_flip_at_scale"] = {"scale": scale, **{n: rate(t) for n, t in zip(conds, texts[1:], strict=True)}}
    prompted = {}
    for words in c.prompt_words:
        alt = [p[:-1].rstrip() + f" {words} (" for p in cases]
        got = continue_prefixes(model, tok, alt, [{}], s.flip_new_tokens, s.batch_size)[0]
        prompted[words] = rate(got)
    out["prompt_flip"] = prompted
    return out
