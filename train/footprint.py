"""What a run will need before it starts: GPU memory per trainer GPU, and disk, printed by ``DRY_RUN=1``.

Why by hand: DeepSpeed's estimators (``estimate_zero3_model_states_mem_needs_*``) count the model states only and
need DeepSpeed installed (the GPU extra); accelerate's ``estimate-memory`` knows neither ZeRO sharding, a colocated
vLLM engine nor the logits TRL materialises for the completions' log-probabilities. These are estimates to plan
with, from the parameter count and the batch shapes; the run itself reports its peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from train.config import TrainConfig

GIB = 1024**3
GPU_GIB = 80  # the cards the hub presets are written for (A100 / H100 80 GB)
PROMPT_TOKENS = 256  # a Countdown prompt in the base template is ~150-200 tokens


@dataclass(frozen=True)
class Shape:
    """What the estimates read of a model: parameters, hidden size, layers, vocabulary."""

    params: int
    hidden: int
    layers: int
    vocab: int


# the hub models' config.json (and their parameter count as loaded by transformers)
KNOWN = {
    "Qwen/Qwen2.5-0.5B": Shape(494_032_768, 896, 24, 151_936),
    "Qwen/Qwen2.5-1.5B": Shape(1_543_714_304, 1536, 28, 151_936),
    "Qwen/Qwen2.5-3B": Shape(3_085_938_688, 2048, 36, 151_936),
}


def model_shape(cfg: TrainConfig) -> Shape | None:
    """The model's shape: a known hub model, or the tiny preset's from its base settings (None otherwise)."""
    if cfg.model in KNOWN:
        return KNOWN[cfg.model]
    if cfg.model != "tiny":
        return None
    b = cfg.base
    per_layer = 4 * b.hidden_size**2 + 3 * b.hidden_size * b.intermediate_size
    return Shape(b.vocab_size * b.hidden_size + b.num_layers * per_layer, b.hidden_size, b.num_layers, b.vocab_size)


def zero_stage(cfg: TrainConfig) -> int:
    """The DeepSpeed ZeRO stage of the launch's accelerate config (0: none)."""
    path = cfg.launch.accelerate_config
    if not path or not Path(path).is_file():
        return 0
    data = yaml.safe_load(Path(path).read_text()) or {}
    return int((data.get("deepspeed_config") or {}).get("zero_stage", 0))


def weight_bytes(cfg: TrainConfig) -> int:
    """Bytes per parameter of the trained weights: DeepSpeed (any ZeRO stage) holds them in bf16 beside float32
    master copies in its optimizer; without it the policy is float32 (train.run.load_policy) under bf16 autocast,
    and so are its gradients, the reference model TRL copies from it and the checkpoints the Trainer saves."""
    return 2 if zero_stage(cfg) >= 1 else 4


def gpu_plan(cfg: TrainConfig, shape: Shape, per_device_batch: int) -> dict[str, float]:
    """GiB per trainer GPU: model states (weights and gradients in :func:`weight_bytes`, float32 Adam moments and,
    under DeepSpeed, float32 master weights, sharded by the ZeRO stage), the KL reference model, the colocated
    vLLM share, the float32 logits of one micro-batch's completions, and the hidden states kept for the backward
    pass."""
    n, p, g = cfg.launch.trainer_gpus, shape.params, cfg.grpo
    stage, w = zero_stage(cfg), weight_bytes(cfg)
    out = {
        "weights": w * p / (n if stage >= 3 else 1),
        "gradients": w * p / (n if stage >= 2 else 1),
        "optimizer": (12 if stage >= 1 else 8) * p / (n if stage >= 1 else 1),
        "reference model": (w * p / (n if stage >= 3 else 1)) if g.beta > 0 else 0.0,
        "vLLM (colocated)": (
            cfg.rollout.gpu_memory_utilization * GPU_GIB * GIB
            if cfg.rollout.vllm_mode == "colocate" and cfg.rollout.engine != "hf"
            else 0.0
        ),
        "logits": per_device_batch * g.max_completion_length * shape.vocab * 4,
    }
    length = PROMPT_TOKENS + g.max_completion_length
    kept = per_device_batch * length * shape.hidden * 2 * shape.layers  # one hidden state per layer (checkpointed)
    checkpointing = g.trl.get("gradient_checkpointing", True)
    out["activations"] = kept * (1 if checkpointing else 16)  # ~16 tensors of that size per layer without it
    return {k: v / GIB for k, v in out.items()}


def disk_plan(cfg: TrainConfig, shape: Shape) -> dict[str, float]:
    """GiB on disk: one checkpoint's model (in :func:`weight_bytes`: bf16 from DeepSpeed's 16-bit save, float32
    otherwise), the resume state (float32 Adam moments, plus DeepSpeed's float32 master weights and bf16
    partitions) and the run's total with ``resume_state`` as configured."""
    p = shape.params
    saves = len({0, *range(cfg.save_every, cfg.grpo.steps + 1, cfg.save_every), cfg.grpo.steps})
    model = weight_bytes(cfg) * p
    resume = (14 if zero_stage(cfg) else 8) * p
    kept = 1 if cfg.resume_state == "last" else saves
    return {
        "checkpoints": saves,
        "model": model / GIB,
        "resume state": resume / GIB,
        "total": (saves * model + kept * resume) / GIB,
    }


def describe(cfg: TrainConfig, per_device_batch: int, on_cpu: bool) -> list[str]:
    """The DRY_RUN lines: memory per trainer GPU (GPU runs) and disk."""
    shape = model_shape(cfg)
    if shape is None:
        return [f"memory and disk: unknown for model {cfg.model!r} (no shape on record)"]
    lines = []
    if not on_cpu:
        mem = gpu_plan(cfg, shape, per_device_batch)
        total = sum(mem.values())
        parts = ", ".join(f"{k} {v:.1f}" for k, v in mem.items() if v)
        verdict = "fits" if total <= GPU_GIB * 0.95 else "does NOT fit: raise gradient_accumulation_steps or GPUs"
        lines.append(
            f"GPU memory per trainer GPU (estimate, ZeRO-{zero_stage(cfg)}): {total:.1f} GiB of {GPU_GIB} ({verdict}): "
            f"{parts}"
        )
    d = disk_plan(cfg, shape)
    keep = "the last checkpoint" if cfg.resume_state == "last" else "every checkpoint"
    lines.append(
        f"disk: {_size(d['total'])} for {d['checkpoints']} checkpoints ({_size(d['model'])} model each; "
        f"{_size(d['resume state'])} resume state in {keep}, resume_state={cfg.resume_state})"
    )
    return lines


def _size(gib: float) -> str:
    return f"{gib:.1f} GiB" if gib >= 1 else f"{gib * 1024:.0f} MiB"
