"""One checkpoint: stages 1-5, each cached under ``<run>/analysis/step_<N>/`` and re-run only when its inputs change.

The model is loaded lazily, only when a stage has to be computed, so a re-run over a fully cached run reads JSON
and NumPy files and nothing else. Probe and steering maths live in :mod:`analysis.probes`,
:mod:`analysis.unembed` and :mod:`analysis.steering.evaluate`; this module wires them to files.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis import probes as pr
from analysis.cache import fingerprint, stage_key
from analysis.config import AnalysisConfig
from analysis.context import RunContext
from analysis.positions import KINDS, LABELS
from analysis.splits import fresh_roles, problem_roles, role_mask
from train.precision import inference_dtype

OTHER = {"verdict": "truth", "truth": "verdict", "stated": "verdict"}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be analysed (missing or corrupt files); the message names the file."""


def check_checkpoint(path: Path) -> None:
    """Fail with the name of the missing or unreadable file before any heavy work starts on ``path``."""
    for name in ("config.json", "tokenizer.json"):
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name}: missing (the checkpoint directory is incomplete)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise CheckpointError(f"{path}: no *.safetensors weights file")
    try:
        from safetensors import safe_open

        empty = []
        for w in weights:
            with safe_open(str(w), framework="pt") as f:
                empty += [(w, k) for k in f.keys() if 0 in f.get_slice(k).get_shape()]
    except Exception as e:  # truncated or corrupt header
        raise CheckpointError(f"{weights[0]}: unreadable safetensors file ({type(e).__name__}: {e})") from None
    if empty:
        w, k = empty[0]
        raise CheckpointError(
            f"{w}: {len(empty)} empty tensors (first: {k}); weights saved from ZeRO-3 partitions without gathering them"
        )


def load_model(path: Path, device: str, precision: str = "auto") -> tuple[Any, Any]:
    """Model and tokenizer of a checkpoint, with an error naming the file that is missing or broken; ``precision``
    as resolved (:func:`train.precision.inference_dtype`: fp32 loads float32, bf16 the checkpoint's dtype)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_checkpoint(path)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=inference_dtype(precision)).to(device)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be loaded with from_pretrained ({type(e).__name__}: {e})") from None
    model.eval()
    return model, tok


def run_roles(cfg: AnalysisConfig) -> np.ndarray:
    """The run's problem roles (calibration / train / report), the same for every checkpoint and text set."""
    p = cfg.probe
    roles = fresh_roles if cfg.report_split == "fresh" else problem_roles
    return roles(cfg.rollout.problems, p.calibration_fraction, p.test_fraction, p.seed)


def _probe_all(cap: Any, cfg: AnalysisConfig, roles: np.ndarray) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Every kind x label x layer probe of a capture (:class:`analysis.capture.Capture`), read one layer at a time."""
    p = cfg.probe
    sel = ~role_mask(cap["problem"], roles, "calibration")
    if p.source != "all":
        sel &= cap["greedy"] == (1 if p.source == "greedy" else 0)
    if p.require_both_verdicts:  # only completions with a "(not" and a "(this" site, as the released probe.py
        from analysis.protocol import both_verdict_sites

        sel &= both_verdict_sites(cap["record"], cap["verdict"])
    test = role_mask(cap["problem"][sel], roles, "report")
    results, dirs = [], {}
    for kind in KINDS:
        labels = {label: (cap[label][sel], cap[OTHER[label]][sel]) for label in LABELS}
        fitted = pr.probe_kind(
            lambda layer, kind=kind: cap.layer(kind, layer)[sel],
            cap.n_layers,
            labels,
            test,
            c=p.C,
            max_iter=p.max_iter,
            min_per_class=p.min_per_class,
            seed=p.seed,
            kind=kind,
            solver=p.solver,
            device=cfg.device,
        )
        for label, (rows, w_stack, b_stack, md_stack) in fitted.items():
            results += [r.as_dict() for r in rows]
            dirs[f"w_{kind}_{label}"], dirs[f"b_{kind}_{label}"] = w_stack, b_stack
            dirs[f"meandiff_{kind}_{label}"] = md_stack
    dirs["test_problems"] = np.unique(cap["problem"][sel][test])
    return results, dirs


def release(loaded: dict[str, Any]) -> None:
    """Drop a lazily loaded model (``loaded["m"]``) and hand its memory back before the next checkpoint's model or
    vLLM engine starts: garbage-collect, and empty PyTorch's CUDA cache, which otherwise keeps the freed blocks
    reserved (vLLM sizes its share of the GPU from what is free)."""
    import gc

    import torch

    loaded.pop("m", None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def steering_units(dirs: dict[str, np.ndarray], cfg: AnalysisConfig) -> dict[int, np.ndarray]:
    """Unit W[1] direction of the "(" verdict probe for each steered layer (its own, or ``direction_layer``'s)."""
    w = dirs["w_paren_verdict"]
    s = cfg.steering
    return {layer: pr.unit(w[s.direction_layer if s.direction_layer is not None else layer]) for layer in s.layers}


def checkpoint_rollouts(ctx: RunContext, step: int, path: Path) -> tuple[list[dict[str, Any]], str]:
    """The rollouts stage alone (cached): the checkpoint's rollouts and their cache key."""
    from analysis.rollouts import generate_rollouts

    cfg, problems, template, cache = ctx.cfg, ctx.problems, ctx.template, ctx.cache(step)
    problems_key = stage_key([(list(p.numbers), p.target) for p in problems[: cfg.rollout.problems]], template)
    k_roll = stage_key(cfg.rollout, fingerprint(path), problems_key, inference_dtype(cfg.precision))
    if not cache.valid("rollouts", k_roll):
        check_checkpoint(path)  # fail here, naming the file, before an engine starts on a broken checkpoint
        ctx.say(f"step {step}: rollouts ({ctx.engine()})")
    records = cache.json(
        "rollouts",
        k_roll,
        lambda: generate_rollouts(path, problems, cfg.rollout, template, ctx.engine(), cfg.device, cfg.precision),
    )
    return records, k_roll


def analyse_checkpoint(
    ctx: RunContext, step: int, path: Path, scale: float | None, last: bool = True, say: Any = None
) -> dict[str, Any]:
    """:func:`_analyse_checkpoint`, with the checkpoint's model (when one was loaded) released afterwards, also
    when a stage raises."""
    loaded: dict[str, Any] = {}
    try:
        return _analyse_checkpoint(ctx, step, path, scale, last, say or ctx.say, loaded)
    finally:
        release(loaded)


def _analyse_checkpoint(
    ctx: RunContext, step: int, path: Path, scale: float | None, last: bool, say: Any, loaded: dict[str, Any]
) -> dict[str, Any]:
    """Run (or load) every per-checkpoint stage; returns the step's results for the emergence stage and report.

    ``scale`` is the run's one steering scale (calibrated or from the preset); probes fit on the context's
    ``train`` problems and everything is scored on ``report`` problems. ``last`` marks the last checkpoint analysed
    (the component stage's extras run there by default). The step's cache is the context's, shared with the
    fixed-text stage (so ``computed`` lists both). ``ctx.engine()`` resolves the rollout engine only when rollouts
    must be generated (importing vLLM takes seconds, and a fully cached re-run should not pay for it); the cache key
    uses the *requested* engine. ``loaded`` receives the model once loaded (the caller releases it).
    """
    from analysis.capture import capture_to_dir, read_capture

    cfg, problems, template, roles, cache = ctx.cfg, ctx.problems, ctx.template, ctx.roles, ctx.cache(step)
    records, k_roll = ctx.rollouts(step, path)
    k_cap = stage_key(cfg.capture, k_roll)
    k_probe = stage_key(cfg.probe, k_cap)
    k_unembed = stage_key([cfg.report.top_k_tokens, cfg.report.unembed_gain], k_probe)
    full_sweep = cfg.steering.sweep == "every" or last
    k_steer = stage_key(cfg.steering, k_probe, k_roll, scale, full_sweep)

    def model() -> tuple[Any, Any]:
        if "m" not in loaded:
            loaded["m"] = load_model(path, cfg.device, cfg.precision)
            cfg.check_layers(loaded["m"][0].config.num_hidden_layers)
        return loaded["m"]

    def do_capture(directory: Path) -> None:
        say(f"step {step}: capture ({len(records)} rollouts)")
        m, tok = model()
        c = cfg.capture
        capture_to_dir(m, tok, records, directory, c.batch_size, c.dtype, max_batch_bytes=c.max_batch_bytes)

    cap = read_capture(cache.directory("capture", k_cap, do_capture))
    if cache.valid("probes", k_probe) and cache.valid("directions", k_probe, "npz"):
        probe_rows = cache.json("probes", k_probe, lambda: None)
        dirs = cache.npz("directions", k_probe, lambda: {})
    else:
        say(f"step {step}: probes ({len(cap['problem'])} sites)")
        t0 = time.perf_counter()
        probe_rows, dirs = _probe_all(cap, cfg, roles)
        cache.record("probes", time.perf_counter() - t0)
        dirs = cache.npz("directions", k_probe, lambda: dirs, timed=False)
        probe_rows = cache.json("probes", k_probe, lambda: probe_rows, timed=False)

    def do_unembed() -> dict[str, Any]:
        from analysis.unembed import describe_layers

        m, tok = model()
        return describe_layers(dirs["w_paren_verdict"], m, tok, cfg.report.top_k_tokens, cfg.report.unembed_gain)

    unembed = cache.json("unembed", k_unembed, do_unembed)

    def do_steer() -> dict[str, Any]:
        from analysis.steering.stage import run_steering

        say(f"step {step}: steering sweep")
        m, tok = model()
        if scale is None:
            raise ValueError("analyse_checkpoint: the run's steering scale must be given (see analysis/fixed/run.py)")
        report = [r for r in records if roles[r["problem"]] == "report"]
        probs = [p for i, p in enumerate(problems[: cfg.rollout.problems]) if roles[i] == "report"]
        units = steering_units(dirs, cfg)
        if cfg.steering.scale_unit == "relative":  # the run's scale is in residual norms: per layer, at "(" sites
            from analysis.directions import residual_norm

            units = {x: u * residual_norm(cap.layer("paren", x).astype(np.float32)) for x, u in units.items()}
        return run_steering(m, tok, report, probs, units, cfg, template, scale, full_sweep)

    steering = cache.json("steering", k_steer, do_steer)
    components = None
    if cfg.components.enabled:
        extras = cfg.components.extras == "every" or last
        k_comp = stage_key(cfg.components, k_steer, extras)

        def do_components() -> dict[str, Any]:
            from analysis.components.stage import run_components

            say(f"step {step}: components" + (" (+ free generation and controls)" if extras else ""))
            m, tok = model()
            return run_components(m, tok, records, problems, dirs, steering, cfg, template, extras)

        components = cache.json("components", k_comp, do_components)
    return {
        "step": step,
        "path": str(path),
        "rollouts": _rollout_summary(records, roles),
        "sites": int(len(cap["problem"])),
        "probes": probe_rows,
        "unembed": unembed,
        "steering": steering,
        "components": components,
        "computed": cache.computed,
    }


def _rollout_summary(records: Sequence[dict[str, Any]], roles: np.ndarray) -> dict[str, Any]:
    """Success, format and truncation per rollout kind on the report problems; success with a bootstrap CI."""
    from analysis.stats import mean_ci

    out = {}
    for kind in ("greedy", "sampled"):
        rs = [r for r in records if r["kind"] == kind and roles[r["problem"]] == "report"]
        if rs:
            ok = np.array([r["success"] for r in rs], dtype=np.float64)
            groups = np.array([r["problem"] for r in rs], dtype=np.int64)
            fa, fa_groups = _false_accepts(rs)
            out[kind] = {
                "n": len(rs),
                "success": float(ok.mean()),
                "success_ci": mean_ci(ok, groups, n_boot=200),
                "false_accept_ci": mean_ci(fa, fa_groups, n_boot=200),
                "format": float(np.mean([r["has_answer"] for r in rs])),
                "truncated": float(np.mean([r["truncated"] for r in rs])),
            }
    return out


def _false_accepts(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """One row per wrong attempt line the model judged (in any form): 1 if it accepted it, with its problem."""
    from tasks.countdown.trace import accepted_attempts

    vals, groups = [], []
    for r in records:
        for a, judged in accepted_attempts(r["completion"], r["numbers"], r["target"]):
            if a.parsed and not a.correct and judged is not None:
                vals.append(float(judged))
                groups.append(r["problem"])
    return np.array(vals, dtype=np.float64), np.array(groups, dtype=np.int64)
