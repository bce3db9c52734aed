"""What each checkpoint stage of :data:`analysis.stages.CHECKPOINT` computes (``compute_<stage>``), and loading a
checkpoint: the files checked first, the model released after. Which stage reads what, its cache key and when it
runs are the stage table's; the maths lives in :mod:`analysis.probes`, :mod:`analysis.unembed`,
:mod:`analysis.steering` and :mod:`analysis.components`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis import probes as pr
from analysis.config import AnalysisConfig
from analysis.positions import KINDS, LABELS
from analysis.splits import fresh_roles, problem_roles, role_mask
from train.precision import inference_dtype

if TYPE_CHECKING:
    from analysis.stages import StepState

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
    """Every kind x label x layer probe of a capture (:class:`analysis.capture_files.Capture`), one layer at a time."""
    p = cfg.probe
    sel = ~role_mask(cap["problem"], roles, "calibration")
    if p.source != "all":
        sel &= cap["greedy"] == (1 if p.source == "greedy" else 0)
    if p.require_both_verdicts:  # only completions with a "(not" and a "(this" site, as the released probe.py
        from analysis.original_study import both_verdict_sites

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


def compute_rollouts(state: StepState) -> list[dict[str, Any]]:
    """The rollouts stage: the checkpoint's greedy and sampled completions of the analysed problems."""
    from analysis.rollouts import generate_rollouts

    check_checkpoint(state.path)  # fail here, naming the file, before an engine starts on a broken checkpoint
    cfg, ctx = state.cfg, state.ctx
    engine = ctx.engine()
    return generate_rollouts(state.path, ctx.problems, cfg.rollout, ctx.template, engine, cfg.device, cfg.precision)


def compute_capture(state: StepState, directory: Path) -> None:
    """The capture stage: every rollout's residual stream at its verdict sites, streamed into ``directory``."""
    from analysis.capture import capture_to_dir

    m, tok = state.model()
    c = state.cfg.capture
    records = state.values["rollouts"]
    capture_to_dir(m, tok, records, directory, c.batch_size, c.dtype, max_batch_bytes=c.max_batch_bytes)


def compute_probes(state: StepState) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The probes stage: every kind x label x layer probe (probes.json) and its directions (directions.npz)."""
    return _probe_all(state.values["capture"], state.cfg, state.ctx.roles)


def compute_unembed(state: StepState) -> dict[str, Any]:
    """The unembed stage: the "(" verdict direction of every layer read through the unembedding."""
    from analysis.unembed import describe_layers

    m, tok = state.model()
    r = state.cfg.report
    return describe_layers(state.values["probes"][1]["w_paren_verdict"], m, tok, r.top_k_tokens, r.unembed_gain)


def compute_steering(state: StepState) -> dict[str, Any]:
    """The steering stage: the flip test and free generation with the "(" verdict direction at the run's scale
    (every swept scale on the last checkpoint), against random directions of the same norm."""
    from analysis.steering.stage import run_steering

    cfg, ctx, roles = state.cfg, state.ctx, state.ctx.roles
    m, tok = state.model()
    dirs, cap = state.values["probes"][1], state.values["capture"]
    report = [r for r in state.values["rollouts"] if roles[r["problem"]] == "report"]
    probs = [p for i, p in enumerate(ctx.problems[: cfg.rollout.problems]) if roles[i] == "report"]
    units = steering_units(dirs, cfg)
    if cfg.steering.scale_unit == "relative":  # the run's scale is in residual norms: per layer, at "(" sites
        units = {x: u * _steering_norm(cap, x, m, tok, report) for x, u in units.items()}
    slow_parts = state.runs_slow_parts("steering")
    return run_steering(m, tok, report, probs, units, cfg, ctx.template, state.given["scale"], slow_parts)


def _steering_norm(cap: Any, layer: int, model: Any, tok: Any, report: Sequence[dict[str, Any]]) -> float:
    """The residual norm relative steering scales multiply: its mean at the rollouts' "(" sites at ``layer``. A
    checkpoint whose rollouts write no attempt line (a random stand-in, a base that never verifies) has none: then
    its mean over every position of the report rollouts, so the stage runs (with nothing at "(" to steer, its
    flip test is empty) instead of failing on an empty mean."""
    from analysis.directions import residual_norm
    from analysis.steering.stage import residual_norms

    rows = cap.layer("paren", layer)
    if len(rows):
        return residual_norm(rows.astype(np.float32))
    return residual_norms(model, tok, [r["prompt"] + r["completion"] for r in report[:16]], [layer])[layer]


def compute_components(state: StepState) -> dict[str, Any]:
    """The component stage: which heads and MLP blocks write the direction (its slow parts on the last checkpoint)."""
    from analysis.components.stage import run_components

    cfg, ctx = state.cfg, state.ctx
    slow_parts = state.runs_slow_parts("components")
    m, tok = state.model()
    dirs, steering = state.values["probes"][1], state.values["steering"]
    return run_components(m, tok, state.values["rollouts"], ctx.problems, dirs, steering, cfg, ctx.template, slow_parts)


def rollout_summary(records: Sequence[dict[str, Any]], roles: np.ndarray) -> dict[str, Any]:
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
    from tasks.countdown.accepted import accepted_attempts

    vals, groups = [], []
    for r in records:
        for a, judged in accepted_attempts(r["completion"], r["numbers"], r["target"]):
            if a.parsed and not a.correct and judged is not None:
                vals.append(float(judged))
                groups.append(r["problem"])
    return np.array(vals, dtype=np.float64), np.array(groups, dtype=np.int64)
