"""The fixed-text stage for one checkpoint: the same texts teacher-forced through every checkpoint of a run.

Own-rollout probing (:mod:`analysis.checkpoint`) mixes a change in what a checkpoint writes with a change in how it
represents it, and finds nothing at a checkpoint that writes no "(" at all. Here every checkpoint reads one text
set, built once per run (:func:`fixed_records`):

* ``last``: completions of the last checkpoint (its rollouts), so the final behaviour is read by every earlier model;
* ``counterfactual``: :mod:`tasks.countdown.counterfactual` lines, where verdict, stated == target and truth are set
  independently (pairs identical up to "(");
* ``first``: completions of the first checkpoint.

Per checkpoint, position kind ("(", last "=", stated value), label and layer: a probe fitted on ``train`` problems
and scored (AUROC, accuracy, bootstrap CI over problems) on ``report`` problems of each subset, with a shuffled-label
control; the logit-lens margin at "(" as the baseline beside it; and the checkpoint's own verdict (the margin at the
output) on the counterfactual lines by category and by position. The verdict probe is fitted on the rollout subsets
only: on the counterfactual pairs the written verdict comes after "(", which is what makes them a leakage check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis import probes as pr
from analysis import stats
from analysis.lens import lens_margin, verdict_token_ids
from analysis.positions import KINDS, LABELS, find_sites
from analysis.splits import role_mask
from tasks.countdown.counterfactual import CATEGORIES, counterfactual_texts
from tasks.countdown.generate import Problem
from tasks.countdown.prompts import make_prompt

SUBSETS = ("last", "counterfactual", "first")


def _has_sites(r: dict[str, Any], tokenizer: Any) -> bool:
    enc = tokenizer(r["prompt"] + r["completion"], return_offsets_mapping=True, add_special_tokens=False)
    return bool(find_sites(r["completion"], r["numbers"], r["target"], enc.offset_mapping, len(r["prompt"])))


def fixed_records(
    first: Sequence[dict[str, Any]],
    last: Sequence[dict[str, Any]],
    problems: Sequence[Problem],
    template: str,
    rollouts: int,
    counterfactual_problems: int,
    seed: int,
    max_prior: int,
    tokenizer: Any,
) -> list[dict[str, Any]]:
    """The run's evaluation text set, as records the capture stage reads (``subset`` says where each came from)."""
    out: list[dict[str, Any]] = []
    for name, recs in (("last", last), ("first", first)):
        kept = [r for r in recs if _has_sites(r, tokenizer)][:rollouts]
        out += [{**_strip(r), "subset": name, "category": "", "position": -1} for r in kept]
    chosen = list(problems)[:counterfactual_problems]
    for c in counterfactual_texts(chosen, seed, max_prior):
        p = chosen[c.problem]
        out.append(
            {
                "problem": c.problem,
                "numbers": list(p.numbers),
                "target": p.target,
                "kind": "counterfactual",
                "prompt": make_prompt(p.numbers, p.target, template),
                "completion": c.completion,
                "subset": "counterfactual",
                "category": c.category,
                "position": c.position,
                "written": c.verdict,
            }
        )
    return out


def _strip(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("problem", "numbers", "target", "kind", "prompt", "completion")
    return {k: r[k] for k in keys}


def annotate(cap: dict[str, np.ndarray], records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Add per-site ``subset`` / ``category`` / ``position`` indices to a capture. The earlier (rejected) lines of a
    counterfactual text are context, not tested lines: they get subset -1 and are neither fitted nor scored."""
    rec = cap["record"]
    tested = np.array(
        [
            records[i]["subset"] != "counterfactual" or line == records[i]["position"]
            for i, line in zip(rec, cap["line"], strict=True)
        ],
        dtype=bool,
    )
    subset = np.array([SUBSETS.index(records[i]["subset"]) for i in rec], dtype=np.int64)
    cap["subset"] = np.where(tested, subset, -1)
    cats = [records[i]["category"] for i in rec]
    cap["category"] = np.where(tested, [CATEGORIES.index(c) if c else -1 for c in cats], -1).astype(np.int64)
    cap["position"] = np.array([records[i]["position"] for i in rec], dtype=np.int64)
    return cap


def _score(score: np.ndarray, y: np.ndarray, groups: np.ndarray, n_boot: int) -> dict[str, Any]:
    """AUROC and accuracy (score > 0) with bootstrap CIs; None where a class is missing."""
    if len(y) == 0:
        return {"n": 0}
    acc = stats.accuracy_ci(score > 0, y, groups, n_boot=n_boot)
    auc = stats.auroc_ci(score, y, groups, n_boot=n_boot) if len(np.unique(y)) == 2 else None
    return {"n": int(len(y)), "accuracy": acc, "auroc": auc}


def _fit_layers(
    x: np.ndarray, y: np.ndarray, method: str, c: float, max_iter: int, *how: str
) -> tuple[np.ndarray, np.ndarray]:
    """Raw-unit binary weights (layers, d) and biases (layers,) of one probe per layer of ``x`` (n, layers, d)."""
    if method == "softmax":
        from analysis.softmax_probe import fit_softmax_probes

        w2, b2 = fit_softmax_probes(x, y)
        return w2[:, 1] - w2[:, 0], b2[:, 1] - b2[:, 0]
    return pr.fit_logistic_layers(x, y, c, max_iter, *how)


def _disagreements(pred: np.ndarray, cap: dict[str, np.ndarray], te: np.ndarray, n_boot: int) -> dict[str, Any]:
    """Verdict-probe accuracy on the sites where the written verdict disagrees with stated == target and with the
    truth: the only sites where "reads the verdict" and "reads the value / the arithmetic" predict differently."""
    y, groups = cap["verdict"][te], cap["problem"][te]
    out = {}
    for other in ("stated", "truth"):
        m = y != cap[other][te]
        out[f"accuracy_verdict_ne_{other}"] = stats.accuracy_ci(pred[m], y[m], groups[m], n_boot=n_boot)
    return out


def fixed_probes(
    cap: dict[str, np.ndarray],
    roles: np.ndarray,
    margin: np.ndarray,
    c: float,
    max_iter: int,
    n_boot: int,
    method: str = "logistic",
    *how: str,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Probe and lens rows for every kind x label x layer x subset, and raw-unit directions (how: solver, device)."""
    train = role_mask(cap["problem"], roles, "train")
    report = role_mask(cap["problem"], roles, "report")
    rollout = (cap["subset"] >= 0) & (cap["subset"] != SUBSETS.index("counterfactual"))
    train &= cap["subset"] >= 0
    rows: list[dict[str, Any]] = []
    dirs: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for kind in KINDS:
        x_all = cap[f"act_{kind}"]  # storage dtype: every consumer casts one layer at a time
        n_layers = x_all.shape[1]
        for label in LABELS:
            y = cap[label]
            fit_rows = train & (rollout if label == "verdict" else True)
            w_stack = np.zeros((n_layers, x_all.shape[2]), dtype=np.float32)
            b_stack = np.zeros(n_layers, dtype=np.float32)
            ok = min(int((y[fit_rows] == 0).sum()), int((y[fit_rows] == 1).sum())) >= 5
            if ok:
                xf, yf = x_all[fit_rows], y[fit_rows]
                w_stack, b_stack = _fit_layers(xf, yf, method, c, max_iter, *how)
                ws_stack, bs_stack = _fit_layers(xf, rng.permutation(yf), method, c, max_iter, *how)
            for layer in range(n_layers):
                x = x_all[:, layer]
                if ok:
                    w, b, ws, bs = w_stack[layer], float(b_stack[layer]), ws_stack[layer], float(bs_stack[layer])
                for si, subset in enumerate(SUBSETS):
                    te = report & (cap["subset"] == si)
                    row = {"kind": kind, "label": label, "layer": layer, "subset": subset, "fit": ok}
                    if ok:
                        row["probe"] = _score(pr.predict(w, b, x[te]), y[te], cap["problem"][te], n_boot)
                        if label == "verdict" and subset != "counterfactual":
                            row.update(_disagreements(pr.predict(w, b, x[te]) > 0, cap, te, n_boot))
                        row["shuffled"] = _score(pr.predict(ws, bs, x[te]), y[te], cap["problem"][te], n_boot)
                    if kind == "paren":
                        row["lens"] = _score(margin[te, layer], y[te], cap["problem"][te], n_boot)
                    rows.append(row)
            dirs[f"w_{kind}_{label}"] = w_stack.astype(np.float32)
            dirs[f"b_{kind}_{label}"] = b_stack.astype(np.float32)
    return rows, dirs


def own_verdict(cap: dict[str, np.ndarray], roles: np.ndarray, margin: np.ndarray, n_boot: int) -> dict[str, Any]:
    """The checkpoint's own verdict on the counterfactual lines (report problems): the share it accepts
    (output margin > 0) per category and per position, and how well the margin separates stated == target and
    truth (AUROC). Also the largest activation difference at "(" within a this/not pair (0: no leakage)."""
    cf = (cap["subset"] == SUBSETS.index("counterfactual")) & role_mask(cap["problem"], roles, "report")
    out_margin = margin[:, -1]
    accept = (out_margin > 0).astype(np.float64)
    groups = cap["problem"]
    res: dict[str, Any] = {"by_category": {}, "by_position": {}}
    for ci, cat in enumerate(CATEGORIES):
        m = cf & (cap["category"] == ci)
        res["by_category"][cat] = stats.mean_ci(accept[m], groups[m], n_boot=n_boot)
    for pos in sorted(set(cap["position"][cf].tolist())):
        m = cf & (cap["position"] == pos)
        res["by_position"][str(pos)] = stats.mean_ci(accept[m], groups[m], n_boot=n_boot)
    res["content_effect"] = _content_effect(cap, cf, accept, n_boot)
    pos = sorted(set(cap["position"][cf].tolist()))
    if len(pos) > 1:
        hi, lo = cf & (cap["position"] == pos[-1]), cf & (cap["position"] == pos[0])
        res["position_effect"] = {
            "positions": [pos[0], pos[-1]],
            **stats.diff_ci(accept[hi], groups[hi], accept[lo], groups[lo], n_boot=n_boot),
        }
    for label in ("stated", "truth"):
        y = cap[label][cf]
        res[f"auroc_{label}"] = (
            stats.auroc_ci(out_margin[cf], y, groups[cf], n_boot=n_boot) if len(np.unique(y)) == 2 else None
        )
    res["pair_max_diff"] = _pair_diff(cap)
    return res


def slip_p_not(arrays: dict[str, np.ndarray], roles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slip line of the report problems (stated == target, arithmetic wrong; both texts of each pair, which
    are identical up to "("): the checkpoint's own ``P("not" | "this" or "not")`` at "(" from its output margin,
    and the line's problem. The texts are the same at every checkpoint, so the rows align across steps."""
    cf = (arrays["subset"] == SUBSETS.index("counterfactual")) & role_mask(arrays["problem"], roles, "report")
    m = cf & (arrays["category"] == CATEGORIES.index("slip"))
    p_not = 1.0 / (1.0 + np.exp(arrays["margin"][m, -1].astype(np.float64)))
    return p_not, arrays["problem"][m].astype(np.int64)


def _content_effect(cap: dict[str, np.ndarray], cf: np.ndarray, accept: np.ndarray, n_boot: int) -> dict[str, Any]:
    """Accept rate of right lines minus wrong lines of the *same* problem (same prior lines, same position):
    what the line's content alone does to the verdict (paired, CI over problems)."""
    rows: dict[int, dict[int, list[float]]] = {}
    for i in np.flatnonzero(cf):
        rows.setdefault(int(cap["problem"][i]), {}).setdefault(int(cap["category"][i]), []).append(accept[i])
    r, w = CATEGORIES.index("right"), CATEGORIES.index("wrong")
    both = [(p, float(np.mean(c[r])), float(np.mean(c[w]))) for p, c in rows.items() if r in c and w in c]
    a = np.array([x[1] for x in both])
    b = np.array([x[2] for x in both])
    return stats.paired_diff_ci(a, b, np.array([x[0] for x in both], dtype=np.int64), n_boot=n_boot)


def _pair_diff(cap: dict[str, np.ndarray]) -> float | None:
    """Max |activation difference| at "(" between the two texts of each counterfactual pair (they differ only
    after it, so anything above float noise means the written verdict leaked into the '(' position)."""
    cf = np.flatnonzero(cap["subset"] == SUBSETS.index("counterfactual"))
    if len(cf) < 2:
        return None
    x = cap["act_paren"][cf].astype(np.float32)
    key = list(zip(cap["problem"][cf], cap["category"][cf], strict=True))
    first: dict[tuple, int] = {}
    worst = 0.0
    for i, k in enumerate(key):
        if k in first:
            worst = max(worst, float(np.abs(x[i] - x[first[k]]).max()))
        else:
            first[k] = i
    return worst


def fixed_checkpoint(
    model: Any, tok: Any, records: Sequence[dict[str, Any]], roles: np.ndarray, cfg: Any
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Capture the fixed set through ``model``; returns (arrays to store, JSON summary of this checkpoint)."""
    from analysis.capture import capture

    fx = cfg.fixed
    cap = annotate(capture(model, tok, records, fx.batch_size, cfg.capture.dtype), records)
    ids = verdict_token_ids(tok)
    margin = lens_margin(model, cap["act_paren"], ids)
    p, how = cfg.probe, (cfg.probe.solver, cfg.device)
    rows, dirs = fixed_probes(cap, roles, margin, p.C, p.max_iter, fx.bootstrap, p.method, *how)
    summary = {
        "sites": {s: int((cap["subset"] == i).sum()) for i, s in enumerate(SUBSETS)},
        "verdict_tokens": list(ids),
        "probes": rows,
        "own_verdict": own_verdict(cap, roles, margin, fx.bootstrap),
    }
    arrays = {**cap, "margin": margin, **dirs, **own_direction(cap, roles, margin, p.C, p.max_iter, p.method, *how)}
    return arrays, summary


def own_direction(
    cap: dict[str, np.ndarray], roles: np.ndarray, margin: np.ndarray, c: float, max_iter: int, method: str, *how: str
) -> dict[str, np.ndarray]:
    """The checkpoint's own decision direction at "(": a probe per layer for its own verdict (output margin > 0)
    on every fixed-text site of the train problems. This is the steering direction of the fixed-text stage.

    Why not the written-verdict probe: the fixed texts carry two checkpoints' verdicts (first and last), so that
    probe reads "what was written", not "what this model decides". On the tiny float32 run the written-verdict
    direction flipped none of the final checkpoint's rejected wrong lines even at scale 96, while this one flipped
    about a fifth at scale 32 (docs/experiments.md). ``own`` (labels) and ``w_paren_own`` / ``b_paren_own``."""
    own = (margin[:, -1] > 0).astype(np.int64)
    fit = role_mask(cap["problem"], roles, "train") & (cap["subset"] >= 0)
    x = cap["act_paren"]
    w = np.zeros((x.shape[1], x.shape[2]), dtype=np.float32)
    b = np.zeros(x.shape[1], dtype=np.float32)
    if min(int((own[fit] == 0).sum()), int((own[fit] == 1).sum())) >= 5:
        w, b = _fit_layers(x[fit], own[fit], method, c, max_iter, *how)  # how: probe.solver, device
    return {"own": own, "w_paren_own": w.astype(np.float32), "b_paren_own": b.astype(np.float32)}
