"""The fixed-text protocol over one run: build the text set, read it through every checkpoint, calibrate one
steering scale, and steer every checkpoint with its own and with the final checkpoint's direction.

Order matters and is why this is a run-level stage: the text set needs the first and last checkpoints' rollouts,
the final direction needs the last checkpoint's fixed-text probe, and the scale (chosen on *calibration* problems
at the last checkpoint, or fixed by the preset) must be known before any checkpoint is steered. Everything is
cached like the per-checkpoint stages (``<run>/analysis/fixed/`` and ``step_<N>/fixed*``), keyed by its inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from analysis import probes as pr
from analysis import stats
from analysis.cache import StepCache, fingerprint, stage_key
from analysis.capture import read_capture
from analysis.checkpoint import load_model, release
from analysis.config import AnalysisConfig
from analysis.context import RunContext
from analysis.fixed.changes import probe_changes, same_texts
from analysis.fixed.checkpoint import SUBSETS, capture_fixed, choose_layer, fixed_checkpoint, fixed_records
from analysis.fixed.patching import patch_summary, value_patching
from analysis.fixed.steer import POSITIONS, flip_outcomes, scaled_vectors, wrong_line_cases
from analysis.fixed.steering import calibrate, steering_directions, steering_rates
from analysis.fixed.verdict import slip_p_not
from analysis.splits import role_mask
from tasks.config import ConfigError
from train.precision import inference_dtype


def headline_layer(cfg: AnalysisConfig) -> int:
    """The layer every headline probe number is read at: the preset's steering direction layer (or its deepest
    steered layer). Fixed by the preset, never chosen on the reported data."""
    s = cfg.steering
    return s.direction_layer if s.direction_layer is not None else max(s.layers)


def run_fixed(ctx: RunContext, ckpts: Sequence[tuple[int, Path]]) -> dict[str, Any]:
    """Run (or load) the protocol on ``ckpts`` (loadable checkpoints, in step order) of the context's run; returns
    its results. The rollouts of the first and last checkpoint come from ``ctx.rollouts``."""
    from transformers import AutoTokenizer

    cfg, out, problems, template, roles, say, style = (
        ctx.cfg, ctx.out, ctx.problems, ctx.template, ctx.roles, ctx.say, ctx.style
    )  # fmt: skip
    fx = cfg.fixed
    (first_step, first_path), (last_step, last_path) = ckpts[0], ckpts[-1]
    first, k_first = ctx.rollouts(first_step, first_path)
    last, k_last = ctx.rollouts(last_step, last_path)
    run_cache = StepCache(out / "fixed")
    set_settings = {k: getattr(fx, k) for k in ("rollouts", "counterfactual_problems", "max_prior", "seed", "source")}
    both = cfg.probe.require_both_verdicts
    k_set = stage_key(set_settings, both, roles.tolist(), k_first, k_last, template, asdict(style))
    texts = run_cache.json(
        "texts",
        k_set,
        lambda: fixed_records(
            first,
            last,
            problems[: cfg.rollout.problems],
            template,
            fx.rollouts,
            fx.counterfactual_problems or cfg.rollout.problems,
            fx.seed,
            fx.max_prior,
            AutoTokenizer.from_pretrained(last_path),
            source=fx.source,
            require_both_verdicts=cfg.probe.require_both_verdicts,
            roles=roles,
            style=style,
        ),
    )
    missing = [s for s in ("counterfactual",) if not any(t["subset"] == s for t in texts)]
    if not texts or missing or not any(roles[t["problem"]] == "report" for t in texts):
        raise ConfigError(
            f"fixed: this run's fixed-text set ({run_cache.dir / 'texts.json'}) has {len(texts)} texts"
            f"{', no ' + missing[0] + ' lines' if missing else ''}; it needs counterfactual lines on report problems "
            "(raise fixed.counterfactual_problems or rollout.problems, or set fixed.enabled=false and a steering.scale)"
        )
    keys = {
        s: stage_key(fx, cfg.capture, cfg.probe, fingerprint(p), k_set, inference_dtype(cfg.precision), "controls")
        for s, p in ckpts
    }
    order = [ckpts[-1], *ckpts[:-1]]  # the last first: its direction is every other checkpoint's "final"
    summaries: dict[int, Any] = {}
    final: dict[str, np.ndarray] = {}
    kept: dict[int, dict[str, np.ndarray]] = {}  # per step: site scores and margins, for the paired changes
    outcomes: dict[int, Any] = {}
    scale_info: dict[str, Any] = {}
    slips: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    patched: dict[int, dict[str, Any]] = {}  # per step: P(this) with the slip's value patched in (patching.py)
    patched_problems = {i for i, r in enumerate(roles) if r in ("calibration", "report")}  # what patch_summary reads
    for step, path in order:
        cache = ctx.cache(step)
        loaded: dict[str, Any] = {}

        def model(path: Path = path, loaded: dict = loaded) -> tuple[Any, Any]:
            if "m" not in loaded:
                loaded["m"] = load_model(path, cfg.device, cfg.precision)
            return loaded["m"]

        k = keys[step]

        def acts(cache: StepCache = cache, k: str = k, model: Callable = model) -> Any:
            # the streamed capture (step_<N>/fixed_capture/), made only when a stage below needs it
            return read_capture(cache.directory("fixed_capture", k, lambda d: capture_fixed(*model(), texts, cfg, d)))

        if cache.valid("fixed", k, "npz") and cache.valid("fixed_summary", k):
            arrays, summary = cache.npz("fixed", k, dict), cache.json("fixed_summary", k, dict)
        else:
            say(f"step {step}: fixed text ({len(texts)} texts)")
            t0 = time.perf_counter()
            arrays, summary = fixed_checkpoint(*model(), texts, roles, cfg, acts().dir)
            cache.record("fixed", time.perf_counter() - t0)
            arrays = cache.npz("fixed", k, lambda arrays=arrays: arrays, timed=False)
            summary = cache.json("fixed_summary", k, lambda summary=summary: summary, timed=False)
        summaries[step] = summary
        slips[step] = slip_p_not(arrays, roles)
        kept[step] = {key: arrays[key] for key in arrays if key.startswith("s_") or key in META_KEPT}
        if step == last_step:
            final = {k: v for k, v in arrays.items() if k.startswith(("w_", "b_"))}  # its probes, not its activations
            scale_info = calibrate(cfg, run_cache, keys[step], texts, roles, final, arrays, model, say)
        summaries[step]["versus_final"] = cache.json(  # bootstraps over every layer: cached, not recomputed
            "versus_final",
            stage_key(fx, keys[step], keys[last_step]),
            lambda arrays=arrays, final=final, acts=acts: versus_final(arrays, acts(), final, roles, fx.bootstrap),
        )
        k_steer = stage_key(cfg.steering, fx, keys[step], keys[last_step], scale_info["scale"], "outcomes")

        def steer(
            arrays: dict = arrays,
            model: Callable = model,
            step: int = step,
            scale: float = scale_info["scale"],
            final: dict = final,
        ) -> dict[str, Any]:
            say(f"step {step}: fixed-text steering (own, final and control directions, scale {scale:g})")
            m, tok = model()
            dirs, rands, norms = steering_directions(arrays, final, cfg, scale)
            vecs = {n: scaled_vectors(u, scale, norms) for n, u in dirs.items()}
            rvecs = [scaled_vectors(r, scale, norms) for r in rands]
            return {
                pos: flip_outcomes(
                    m,
                    tok,
                    wrong_line_cases(texts, roles, "report", pos, fx.steer_cases),
                    vecs,
                    rvecs,
                    cfg.steering.flip_new_tokens,
                    cfg.steering.batch_size,
                )
                for pos in POSITIONS
            }

        outcomes[step] = cache.json("fixed_steering", k_steer, steer)
        patched[step] = cache.json(
            "fixed_patching",
            stage_key(keys[step], "value_patching"),
            lambda model=model: value_patching(*model(), texts, cfg.steering.batch_size, patched_problems),
        )
        release(loaded)  # before the next checkpoint's model is loaded
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
        "scale": scale_info,
        "per_step": [summaries[s] for s in steps],
        "steering": steering_rates([outcomes[s] for s in steps], fx.bootstrap),
        "changes": _changes(steps, kept, slips, roles, layer, fx.bootstrap),
        "patching": patch_summary(steps, patched, roles, fx.bootstrap),
    }


META_KEPT = ("problem", "subset", "category", "position", "record", "verdict", "truth", "stated", "margin")


def _changes(
    steps: Sequence[int],
    kept: dict[int, dict[str, np.ndarray]],
    slips: dict[int, tuple[np.ndarray, np.ndarray]],
    roles: np.ndarray,
    layer: int,
    n_boot: int,
) -> list[dict[str, Any]]:
    """Per step, every paired change from the first step (analysis/fixed/changes.py), or an empty dict for a step
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
