"""The fixed-text protocol over one run: build the text set, read it through every checkpoint, calibrate one
steering scale, and steer every checkpoint with its own and with the final checkpoint's direction.

Order matters and is why this is a run-level stage: the text set needs the first and last checkpoints' rollouts,
the final direction needs the last checkpoint's fixed-text probe, and the scale (chosen on *calibration* problems
at the last checkpoint, or fixed by the preset) must be known before any checkpoint is steered. The text set and
the scale are cached in ``<run>/analysis/fixed_text/``; each checkpoint's stages (``step_<N>/fixed*``) are the stage
table's (analysis/stages.py), keyed by what they read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from analysis import probes as pr
from analysis import stats
from analysis.cache import StepCache, stage_key
from analysis.config import AnalysisConfig
from analysis.context import RunContext
from analysis.fixed_text.changes import probe_changes, same_texts
from analysis.fixed_text.flips import POSITIONS, flip_outcomes, scaled_vectors, wrong_line_cases
from analysis.fixed_text.patching import patch_summary, value_patching
from analysis.fixed_text.per_checkpoint import SUBSETS, capture_fixed, fixed_checkpoint, fixed_records
from analysis.fixed_text.steering_plan import calibrate, steering_directions, steering_rates
from analysis.fixed_text.verdict import slip_p_not
from analysis.splits import role_mask
from analysis.stages import FIXED, StepState, checkpoint_rollouts, run_stages
from tasks.config import ConfigError

# a layer whose verdict probe reads the calibration problems' verdicts no better than this AUROC holds no direction
# to headline: at layer 0 the residual at "(" is the "(" embedding itself, probe and lens both at 0.5, and a gap of
# exactly 0 there would beat layers whose probe reads the verdict as well as the lens does (small negative gaps)
PROBE_FLOOR = 0.6


def choose_layer(rows: Sequence[dict[str, Any]], fallback: int) -> tuple[int, str]:
    """The headline layer: where the final checkpoint's "(" verdict probe beats the logit lens by the most on
    *calibration* problems (the last checkpoint's texts; ties: the shallowest), so no reported number chose it.
    Layers whose probe is below :data:`PROBE_FLOOR` there are not candidates. ``fallback`` (the preset's layer)
    when no calibration row is usable or no layer reads the verdict."""
    best: tuple[float, int] | None = None
    usable = False
    for r in rows:
        if (r["kind"], r["label"], r["subset"]) != ("paren", "verdict", "last"):
            continue
        c = r.get("calibration") or {}
        if c.get("probe") is None or c.get("lens") is None:
            continue
        usable = True
        if c["probe"] < PROBE_FLOOR:
            continue
        gap = c["probe"] - c["lens"]
        if best is None or gap > best[0] + 1e-9:
            best = (gap, r["layer"])
    if not usable:
        return fallback, "preset (no usable calibration problems)"
    if best is None:
        return fallback, f"preset (no layer's probe reaches AUROC {PROBE_FLOOR} on calibration problems)"
    return best[1], (
        f"calibration problems: largest probe AUROC over the logit lens ({best[0]:+.3f}) among layers whose probe "
        f"reaches {PROBE_FLOOR}"
    )


def headline_layer(cfg: AnalysisConfig) -> int:
    """The layer every headline probe number is read at: the preset's steering direction layer (or its deepest
    steered layer). Fixed by the preset, never chosen on the reported data."""
    s = cfg.steering
    return s.direction_layer if s.direction_layer is not None else max(s.layers)


def text_set(
    ctx: RunContext, ckpts: Sequence[tuple[int, Path]], run_cache: StepCache
) -> tuple[str, list[dict[str, Any]]]:
    """The run's fixed-text set (cached in ``fixed/texts.json`` under its key): the first and last checkpoints'
    completions and the counterfactual lines; refused in one line when it has no counterfactual line on a report
    problem, which every headline number needs."""
    from transformers import AutoTokenizer

    cfg, roles, fx = ctx.cfg, ctx.roles, ctx.cfg.fixed
    (first_step, first_path), (last_step, last_path) = ckpts[0], ckpts[-1]
    first, k_first = checkpoint_rollouts(ctx, first_step, first_path)
    last, k_last = checkpoint_rollouts(ctx, last_step, last_path)
    set_settings = {k: getattr(fx, k) for k in ("rollouts", "counterfactual_problems", "max_prior", "seed", "source")}
    both = cfg.probe.require_both_verdicts
    k_set = stage_key(set_settings, both, roles.tolist(), k_first, k_last, ctx.template, asdict(ctx.style))
    texts = run_cache.json(
        "texts",
        k_set,
        lambda: fixed_records(
            first,
            last,
            ctx.problems[: cfg.rollout.problems],
            ctx.template,
            fx.rollouts,
            fx.counterfactual_problems or cfg.rollout.problems,
            fx.seed,
            fx.max_prior,
            AutoTokenizer.from_pretrained(last_path),
            source=fx.source,
            require_both_verdicts=both,
            roles=roles,
            style=ctx.style,
        ),
    )
    missing = [s for s in ("counterfactual",) if not any(t["subset"] == s for t in texts)]
    if not texts or missing or not any(roles[t["problem"]] == "report" for t in texts):
        raise ConfigError(
            f"fixed: this run's fixed-text set ({run_cache.dir / 'texts.json'}) has {len(texts)} texts"
            f"{', no ' + missing[0] + ' lines' if missing else ''}; it needs counterfactual lines on report problems "
            "(raise fixed.counterfactual_problems or rollout.problems, or set fixed.enabled=false and a steering.scale)"
        )
    return k_set, texts


def run_fixed(ctx: RunContext, ckpts: Sequence[tuple[int, Path]]) -> dict[str, Any]:
    """Run (or load) the protocol on ``ckpts`` (loadable checkpoints, in step order) of the context's run; returns
    its results. Each checkpoint walks the stage table's :data:`analysis.stages.FIXED`; the text set, the final
    direction and the scale are made here, between its stages."""
    cfg, roles, say, fx = ctx.cfg, ctx.roles, ctx.say, ctx.cfg.fixed
    last_step = ckpts[-1][0]
    run_cache = StepCache(ctx.out / "fixed")
    k_set, texts = text_set(ctx, ckpts, run_cache)
    order = [ckpts[-1], *ckpts[:-1]]  # the last first: its direction is every other checkpoint's "final"
    summaries: dict[int, Any] = {}
    kept: dict[int, dict[str, np.ndarray]] = {}  # per step: site scores and margins, for the paired changes
    slips: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    outcomes: dict[int, Any] = {}
    patched: dict[int, dict[str, Any]] = {}  # per step: P(this) with the slip's value patched in (patching.py)
    given: dict[str, Any] = {"texts": k_set, "records": texts}
    for step, path in order:
        state = StepState(ctx, step, path, given=given)
        try:
            run_stages(FIXED[:2], state)  # the texts' activations and every probe on them
            arrays, summaries[step] = state.values["fixed"]
            slips[step] = slip_p_not(arrays, roles)
            kept[step] = {key: arrays[key] for key in arrays if key.startswith("s_") or key in META_KEPT}
            if step == last_step:  # its probes, not its activations, are every checkpoint's final direction
                final = {k: v for k, v in arrays.items() if k.startswith(("w_", "b_"))}
                k_final = state.keys["fixed"]
                scale = calibrate(cfg, run_cache, k_final, texts, roles, final, arrays, state.model, say)
                given.update(final=k_final, final_arrays=final, scale=scale["scale"], scale_info=scale)
            run_stages(FIXED[2:], state)
        finally:
            state.release()  # before the next checkpoint's model is loaded
        summaries[step]["versus_final"] = state.values["versus_final"]
        outcomes[step], patched[step] = state.values["fixed_steering"], state.values["fixed_patching"]
    steps = [s for s, _ in ckpts]
    layer, layer_source = choose_layer(summaries[last_step]["probes"], headline_layer(cfg))
    return {
        "steps": steps,
        "headline_layer": layer,
        "headline_layer_source": layer_source,
        "position": cfg.steering.position,
        "roles": {r: int((roles == r).sum()) for r in ("calibration", "train", "report")},
        "report_split": cfg.report_split,
        "texts": {s: sum(t["subset"] == s for t in texts) for s in SUBSETS},
        "scale": given["scale_info"],
        "per_step": [summaries[s] for s in steps],
        "steering": steering_rates([outcomes[s] for s in steps], fx.bootstrap),
        "changes": _changes(steps, kept, slips, roles, layer, fx.bootstrap),
        "patching": patch_summary(steps, patched, roles, fx.bootstrap),
    }


def compute_fixed_capture(state: StepState, directory: Path) -> None:
    """The fixed-text capture: every text's residual stream at its sites, streamed into ``directory``."""
    capture_fixed(*state.model(), state.given["records"], state.cfg, directory)


def compute_fixed(state: StepState) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every fixed-text probe of one checkpoint (fixed.npz: scores, margins, directions) and its summary."""
    acts = state.values["fixed_capture"]()
    return fixed_checkpoint(*state.model(), state.given["records"], state.ctx.roles, state.cfg, acts.dir)


def compute_versus_final(state: StepState) -> dict[str, Any]:
    """This checkpoint's directions against the final checkpoint's (bootstraps over every layer)."""
    arrays, acts = state.values["fixed"][0], state.values["fixed_capture"]()
    return versus_final(arrays, acts, state.given["final_arrays"], state.ctx.roles, state.cfg.fixed.bootstrap)


def compute_fixed_steering(state: StepState) -> dict[str, Any]:
    """The flip test on counterfactual wrong lines with the checkpoint's own, the final, the logit and random
    directions at the run's scale, at each steered position."""
    cfg, scale, texts, roles = state.cfg, state.given["scale"], state.given["records"], state.ctx.roles
    state.tell(f"fixed-text steering (own, final and control directions, scale {scale:g})")
    m, tok = state.model()
    dirs, rands, norms = steering_directions(state.values["fixed"][0], state.given["final_arrays"], cfg, scale)
    vecs = {n: scaled_vectors(u, scale, norms) for n, u in dirs.items()}
    rvecs = [scaled_vectors(r, scale, norms) for r in rands]
    s = cfg.steering
    return {
        pos: flip_outcomes(
            m, tok, wrong_line_cases(texts, roles, "report", pos, cfg.fixed.steer_cases), vecs, rvecs,
            s.flip_new_tokens, s.batch_size,
        )
        for pos in POSITIONS
    }  # fmt: skip


def compute_fixed_patching(state: StepState) -> dict[str, Any]:
    """P("this") on right lines with a slip's stated value patched in (analysis/fixed_text/patching.py), on the
    calibration and report problems (what :func:`patch_summary` reads)."""
    roles = state.ctx.roles
    problems = {i for i, r in enumerate(roles) if r in ("calibration", "report")}
    return value_patching(*state.model(), state.given["records"], state.cfg.steering.batch_size, problems)


META_KEPT = ("problem", "subset", "category", "position", "record", "verdict", "truth", "stated", "margin")


def _changes(
    steps: Sequence[int],
    kept: dict[int, dict[str, np.ndarray]],
    slips: dict[int, tuple[np.ndarray, np.ndarray]],
    roles: np.ndarray,
    layer: int,
    n_boot: int,
) -> list[dict[str, Any]]:
    """Per step, every paired change from the first step (analysis/fixed_text/changes.py), or an empty dict for a step
    whose texts do not align with the first step's."""
    first = kept[steps[0]]
    base_p, groups = slips[steps[0]]
    out = []
    for step in steps:
        k = kept[step]
        if not same_texts(k, first):
            out.append({})
            continue
        row = probe_changes(first, k, first, roles, layer, n_boot)
        p_not, g = slips[step]
        row["slip_p_not"] = stats.mean_ci(p_not, g, n_boot=n_boot)
        row["slip_p_not_change"] = stats.paired_diff_ci(p_not, base_p, g, n_boot=n_boot) if len(g) else None
        out.append(row)
    return out


def versus_final(
    arrays: dict[str, np.ndarray], acts: Any, final: dict[str, np.ndarray], roles: np.ndarray, n_boot: int
) -> dict[str, Any]:
    """Per kind/label: cosine of this checkpoint's direction with the final checkpoint's at each layer, and the
    final checkpoint's probe scored on this checkpoint's activations (``acts``, its streamed fixed-text capture,
    read one layer at a time; report problems, per subset; AUROC, CI)."""
    out: dict[str, Any] = {}
    report = role_mask(arrays["problem"], roles, "report")
    for key in [k for k in arrays if k.startswith("w_")]:
        kind, label = key[2:].split("_", 1)
        w, wf, bf = arrays[key], final[key], final[f"b_{kind}_{label}"]
        tests = [report & (arrays["subset"] == si) for si in range(len(SUBSETS))]
        aurocs: dict[str, list] = {subset: [] for subset in SUBSETS}
        for i in range(w.shape[0]):
            x = acts.layer(kind, i)
            for subset, te in zip(SUBSETS, tests, strict=True):
                y, groups = arrays[label][te].astype(bool), arrays["problem"][te]
                aurocs[subset].append(
                    stats.auroc_ci(pr.predict(wf[i], float(bf[i]), x[te].astype(np.float32)), y, groups, n_boot=n_boot)
                    if np.any(wf[i]) and len(np.unique(y)) == 2
                    else None
                )
        cosine = [pr.cosine(w[i], wf[i]) for i in range(w.shape[0])]
        out[f"{kind}/{label}"] = {"cosine": cosine, "final_probe_auroc": aurocs}
    return out
