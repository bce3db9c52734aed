"""The fixed-text stage for one checkpoint: the same texts teacher-forced through every checkpoint of a run.

Own-rollout probing (:mod:`analysis.checkpoint_stages`) mixes a change in what a checkpoint writes with a change in
how it represents it, and finds nothing at a checkpoint that writes no "(" at all. Here every checkpoint reads one text
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

The capture is streamed to disk (:func:`analysis.capture.capture_to_dir`) and every consumer reads it a layer (or a
chunk of layers within ``CHUNK_BYTES``) at a time, so host memory does not grow with the capture: a 3B model's
fixed-text capture is gigabytes. What is kept in memory and in ``fixed.npz`` is the per-site metadata, the lens
margins and the probes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis import probes as pr
from analysis import stats
from analysis.fixed_text.probe_fit import CHUNK_BYTES, fit_chunked, released_recipe
from analysis.fixed_text.verdict import COUNTERFACTUAL, own_verdict
from analysis.lens import lens_margin
from analysis.positions import KINDS, LABELS, find_sites
from analysis.splits import role_mask, spread_over_roles
from tasks.countdown.counterfactual import CATEGORIES, PLAIN_LINES, LineStyle, counterfactual_texts
from tasks.countdown.generate import Problem
from tasks.countdown.prompts import make_prompt
from train.base_tokenizer import verdict_token_ids

SUBSETS = ("last", "counterfactual", "first")
assert SUBSETS[COUNTERFACTUAL] == "counterfactual"  # analysis/fixed_text/verdict.py reads the index


def _has_sites(r: dict[str, Any], tokenizer: Any, both_verdicts: bool = False) -> bool:
    """Whether the completion has a probe site; with ``both_verdicts``, a "(not" site and a "(this" site (the
    released probe.py's filter)."""
    enc = tokenizer(r["prompt"] + r["completion"], return_offsets_mapping=True, add_special_tokens=False)
    sites = find_sites(r["completion"], r["numbers"], r["target"], enc.offset_mapping, len(r["prompt"]))
    return {s.verdict for s in sites} == {0, 1} if both_verdicts else bool(sites)


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
    source: str = "all",
    require_both_verdicts: bool = False,
    roles: np.ndarray | None = None,
    style: LineStyle = PLAIN_LINES,
) -> list[dict[str, Any]]:
    """The run's evaluation text set, as records the capture stage reads (``subset`` says where each came from).
    ``source`` (probe.source: greedy / sampled / all) and ``require_both_verdicts`` select the rollout subsets'
    completions, as the released probe.py used greedy completions with both verdicts only. With ``roles``, the
    ``counterfactual_problems`` problems are spread over the roles in proportion (analysis/splits.py), else the
    first ones are taken. ``style``: how the run writes its lines (the counterfactual lines are written alike)."""
    out: list[dict[str, Any]] = []
    for name, recs in (("last", last), ("first", first)):
        recs = [r for r in recs if source == "all" or r["kind"] == source]
        kept = [r for r in recs if _has_sites(r, tokenizer, require_both_verdicts)][:rollouts]
        out += [{**_strip(r), "subset": name, "category": "", "position": -1} for r in kept]
    n = min(counterfactual_problems, len(problems))
    index = list(range(n)) if roles is None else [i for i in spread_over_roles(roles, n) if i < len(problems)]
    chosen = [problems[i] for i in index]
    for c in counterfactual_texts(chosen, seed, max_prior, style.operators, style.chain):
        p = chosen[c.problem]
        out.append(
            {
                "problem": index[c.problem],
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
    """Add per-site ``subset`` / ``category`` / ``position`` indices to a capture's metadata. The earlier
    (rejected) lines of a counterfactual text are context, not tested lines: they get subset -1 and are neither
    fitted nor scored."""
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
    """AUROC, balanced accuracy and accuracy (score > 0) with bootstrap CIs; None where a class is missing.
    AUROC and balanced accuracy have chance at 0.5 whatever the class balance; accuracy's chance is the majority
    share, so it is kept for reference only."""
    if len(y) == 0:
        return {"n": 0}
    both = len(np.unique(y)) == 2
    return {
        "n": int(len(y)),
        "accuracy": stats.accuracy_ci(score > 0, y, groups, n_boot=n_boot),
        "balanced_accuracy": stats.balanced_accuracy_ci(score > 0, y, groups, n_boot=n_boot) if both else None,
        "auroc": stats.auroc_ci(score, y, groups, n_boot=n_boot) if both else None,
    }


def _shuffled(scores: Sequence[np.ndarray], y: np.ndarray) -> dict[str, Any]:
    """The shuffled-label probes' AUROCs on one test set: their mean, and their range over the independent
    permutations as ``lo``/``hi`` (the spread a single permutation hides)."""
    if len(y) == 0 or len(np.unique(y)) < 2 or not scores:
        return {"n": int(len(y))}
    draws = [stats.rank_auroc(sc, y.astype(bool)) for sc in scores]
    auroc = {"value": float(np.mean(draws)), "lo": float(min(draws)), "hi": float(max(draws)), "n": int(len(y))}
    return {"n": int(len(y)), "auroc": {**auroc, "interval": "range over permutations"}, "auroc_draws": draws}


def _disagreements(pred: np.ndarray, cap: dict[str, np.ndarray], te: np.ndarray, n_boot: int) -> dict[str, Any]:
    """Verdict-probe accuracy on the sites where the written verdict disagrees with stated == target and with the
    truth: the only sites where "reads the verdict" and "reads the value / the arithmetic" predict differently."""
    y, groups = cap["verdict"][te], cap["problem"][te]
    out = {}
    for other in ("stated", "truth"):
        m = y != cap[other][te]
        out[f"accuracy_verdict_ne_{other}"] = stats.accuracy_ci(pred[m], y[m], groups[m], n_boot=n_boot)
    return out


SCORED = (("paren", "verdict"), ("paren", "truth"), ("paren", "stated"), ("value", "truth"))  # per-site scores kept


def fixed_probes(
    cap: dict[str, np.ndarray],
    acts: Any,
    roles: np.ndarray,
    margin: np.ndarray,
    c: float,
    max_iter: int,
    n_boot: int,
    method: str = "logistic",
    *how: str,
    shuffles: int = 1,
    seed: int = 0,
    recipe: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Probe and lens rows for every kind x label x layer x subset, raw-unit directions, and every site's probe
    score for the :data:`SCORED` probes (``s_<kind>_<label>``, (sites, layers): the run-level stage pairs them
    across checkpoints). ``how``: solver, device. ``cap`` is the annotated metadata, ``acts`` the streamed capture."""
    train = role_mask(cap["problem"], roles, "train")
    report = role_mask(cap["problem"], roles, "report")
    calib = role_mask(cap["problem"], roles, "calibration")
    rollout = (cap["subset"] >= 0) & (cap["subset"] != SUBSETS.index("counterfactual"))
    train &= cap["subset"] >= 0
    rows: list[dict[str, Any]] = []
    dirs: dict[str, np.ndarray] = {}
    n_layers = acts.n_layers
    for ki, kind in enumerate(KINDS):
        for li, label in enumerate(LABELS):
            y = cap[label]
            fit_rows = train & (rollout if label == "verdict" else True)
            yf = y[fit_rows]
            ok = min(int((yf == 0).sum()), int((yf == 1).sum())) >= 5
            fits = [(np.zeros((n_layers, acts.d), np.float32), np.zeros(n_layers, np.float32))] * 2
            if ok:
                draws = shuffles if (kind, label) == ("paren", "verdict") else 1  # the headline probe's null
                perms = [np.random.default_rng((seed, ki, li, k)).permutation(yf) for k in range(draws)]
                fits = fit_chunked(acts, kind, fit_rows, (yf, *perms), method, c, max_iter, *how, recipe=recipe)
            site_scores = np.zeros((len(y), n_layers), np.float32)
            for layer in range(n_layers):
                x = acts.layer(kind, layer)  # storage dtype: every consumer casts one layer at a time
                if ok:
                    site_scores[:, layer] = pr.predict(fits[0][0][layer], float(fits[0][1][layer]), x)
                    shuffled = [pr.predict(w[layer], float(b[layer]), x) for w, b in fits[1:]]
                for si, subset in enumerate(SUBSETS):
                    te = report & (cap["subset"] == si)
                    row = {"kind": kind, "label": label, "layer": layer, "subset": subset, "fit": ok}
                    g = cap["problem"][te]
                    if ok:
                        sc = site_scores[te, layer]
                        row["probe"] = _score(sc, y[te], g, n_boot)
                        if label == "verdict" and subset != "counterfactual":
                            row.update(_disagreements(sc > 0, cap, te, n_boot))
                        row["shuffled"] = _shuffled([v[te] for v in shuffled], y[te])
                    if kind == "paren":
                        row["lens"] = _score(margin[te, layer], y[te], g, n_boot)
                        if ok:
                            row["probe_minus_lens"] = stats.paired_auroc_diff_ci(
                                site_scores[te, layer], margin[te, layer], y[te], g, n_boot=n_boot
                            )
                            cal = calib & (cap["subset"] == si)
                            row["calibration"] = _calibration(site_scores[cal, layer], margin[cal, layer], y[cal])
                    rows.append(row)
            dirs[f"w_{kind}_{label}"] = fits[0][0].astype(np.float32)
            dirs[f"b_{kind}_{label}"] = fits[0][1].astype(np.float32)
            if (kind, label) in SCORED:
                dirs[f"s_{kind}_{label}"] = site_scores
    return rows, dirs


def _calibration(probe: np.ndarray, lens: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """Point AUROCs of the probe and the lens on calibration problems: what the headline layer is chosen on."""
    yb = y.astype(bool)
    return {"n": int(len(y)), "probe": stats.rank_auroc(probe, yb), "lens": stats.rank_auroc(lens, yb)}


def fixed_checkpoint(
    model: Any, tok: Any, records: Sequence[dict[str, Any]], roles: np.ndarray, cfg: Any, capture_dir: Path
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read the fixed set through ``model``: its capture streamed to ``capture_dir`` (made here unless the caller
    already filled it, see :func:`capture_fixed`); returns (arrays to store: metadata, margins, probes; JSON summary
    of this checkpoint)."""
    from analysis.capture_files import read_capture

    fx = cfg.fixed
    if not (Path(capture_dir) / "meta.npz").is_file():
        capture_fixed(model, tok, records, cfg, Path(capture_dir))
    acts = read_capture(Path(capture_dir))
    cap = annotate(dict(acts.meta), records)
    ids = verdict_token_ids(tok)
    margin = np.concatenate([lens_margin(model, x, ids) for _, x in acts.chunks("paren", None, CHUNK_BYTES)], 1)
    p, how = cfg.probe, (cfg.probe.solver, cfg.device)
    recipe = released_recipe(p)
    rows, dirs = fixed_probes(
        cap, acts, roles, margin, p.C, p.max_iter, fx.bootstrap, p.method, *how,
        shuffles=fx.shuffles, seed=p.seed, recipe=recipe,
    )  # fmt: skip
    summary = {
        "sites": {s: int((cap["subset"] == i).sum()) for i, s in enumerate(SUBSETS)},
        "verdict_tokens": list(ids),
        "probes": rows,
        "own_verdict": own_verdict(cap, acts, roles, margin, fx.bootstrap),
    }
    from analysis.fixed_text.decision import control_directions, own_direction

    own = own_direction(cap, acts, roles, margin, p.C, p.max_iter, p.method, *how, recipe=recipe)
    controls = control_directions(
        model, ids, cap, acts, roles, own["own"], p.C, p.max_iter, p.method, *how, recipe=recipe
    )
    return {**cap, "margin": margin, **dirs, **own, **controls}, summary


def capture_fixed(model: Any, tok: Any, records: Sequence[dict[str, Any]], cfg: Any, directory: Path) -> None:
    """Stream the fixed set's capture through ``model`` into ``directory`` (per layer, storage dtype)."""
    from analysis.capture import capture_to_dir

    c = cfg.capture
    capture_to_dir(model, tok, records, directory, cfg.fixed.batch_size, c.dtype, max_batch_bytes=c.max_batch_bytes)
