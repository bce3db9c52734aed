"""The training stage's config: one frozen dataclass (with sections) loaded from ``configs/<preset>.yaml``.

Every field is type-checked by :mod:`tasks.config` and cross-checked here before any model is loaded, so a
typo or an impossible batch shape fails in a second with the field's name, not after a 45 s engine start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from tasks.config import ConfigError, find_preset, load_config
from tasks.countdown.dataset import DataConfig
from train.base import BaseConfig

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class GRPOSettings:
    """The ``grpo:`` section: this project's own GRPO settings, and any ``trl.GRPOConfig`` option passed as is.

    A key declared here is either this project's (``steps``, ``prompts_per_step``, ``precision``, the rewards, ...)
    or a TRL option the project itself reads (for the batch shape, the held-out evaluation, the lean loss) and
    passes on under the same name. Every other key (``learning_rate``, ``lr_scheduler_type``, ``weight_decay``,
    ``epsilon``, ``gradient_checkpointing``, ...) lands in ``trl`` and goes to ``trl.GRPOConfig`` unchanged, with
    TRL's default where a preset is silent; :func:`train.grpo.grpo_args` builds the config (also under
    ``--dry-run``), so a misspelt or invalid option fails there with the nearest valid name. One more TRL option
    therefore needs no edit here.
    """

    OPEN_FIELD: ClassVar[str] = "trl"

    steps: int = 100  # optimizer updates (TRL's max_steps)
    prompts_per_step: int = 8  # prompts per generated batch; x num_generations completions per step
    num_generations: int = 8
    beta: float = 0.0  # KL coefficient (TinyZero: 0.001)
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "dapo"
    max_completion_length: int = 256
    temperature: float = 1.0
    top_entropy_quantile: float = 1.0  # < 1: train only on the highest-entropy ("forking") tokens of each batch
    gradient_accumulation_steps: int = 1
    # optimizer steps per generated batch: the prompts_per_step x num_generations completions are shuffled and
    # split into this many minibatches, one update each (grpo.steps counts updates). TRL's steps_per_generation
    # counts micro-steps: it gets this x gradient_accumulation_steps
    steps_per_generation: int = 1
    # TRL's correction for the vLLM-vs-trainer logprob mismatch; costs one extra forward pass over every batch
    vllm_importance_sampling_correction: bool = True
    # auto: bf16 autocast where the device computes bf16 natively, float32 elsewhere (train/precision.py); also the
    # transformers generation fallback's autocast and, under fp32, the dtype vLLM runs a bf16 checkpoint in
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # attention in float32 inside the bf16 pass (train/cpu/attention.py): on CPU twice as fast as bf16 at head size 32;
    # nothing to do when the pass is float32 already
    fp32_attention: bool = False
    # exact, cheaper loss pass (train/cpu/lean_loss.py): skip zero-advantage completions, whole prompt groups packed
    # into chunks of at most lean_loss_rows rows, each prompt run once; needs loss_type dapo and beta 0 (then =
    # TRL's loss). 32 rows was the fastest chunk on tiny-preset batches (docs/experiments.md)
    lean_loss: bool = False
    lean_loss_rows: int = 32
    # train only on problems with at least this many solutions (tasks/countdown/solve.py; 1 = every problem, as
    # TinyZero). Problems with one way are mostly never solved by a weak policy: all-wrong groups, no signal
    min_solutions: int = 1
    format_score: float = 0.1
    correct_score: float = 1.0
    # what the policy is rewarded for. countdown: TinyZero's reward. The controls of `make study` keep the data,
    # steps and compute but not the signal: shuffled permutes the countdown rewards within each prompt's group
    # (same reward distribution, no information about which completion was right); format pays format_score for
    # an answer tag and nothing for being right
    reward: Literal["countdown", "shuffled", "format"] = "countdown"
    sample_every: int = 10  # print and save sample completions every N steps
    truncation_warn: float = 0.2  # warn loudly when more completions than this hit max_completion_length
    # every other trl.GRPOConfig option of the section, passed as is (filled from the section's undeclared keys)
    trl: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutSettings:
    """Who generates the GRPO rollouts: vLLM (colocated, or a ``trl vllm-serve`` server on GPUs) or HF."""

    engine: Literal["auto", "vllm", "hf"] = "auto"
    vllm_mode: Literal["colocate", "server"] = "colocate"
    server_host: str = "127.0.0.1"
    server_port: int = 8000
    start_server: bool = True  # server mode: launch `trl vllm-serve` ourselves (else use host:port)
    server_timeout_s: float = 300.0
    gpu_memory_utilization: float = 0.3
    tensor_parallel_size: int = 1


@dataclass(frozen=True)
class EvalSettings:
    """Held-out evaluation of every checkpoint (success + verification metrics)."""

    problems: int = 200
    samples: int = 1
    temperature: float = 1.0
    max_new_tokens: int | None = None  # default: grpo.max_completion_length


@dataclass(frozen=True)
class LaunchSettings:
    """Multi-GPU launch plan (printed by DRY_RUN=1; used by `make train` on GPU boxes)."""

    trainer_gpus: int = 1
    vllm_gpus: int = 0  # server mode: GPUs given to `trl vllm-serve`
    accelerate_config: str | None = None  # e.g. configs/accelerate/zero3.yaml


@dataclass(frozen=True)
class TrainConfig:
    """Everything one `make train` run needs."""

    run_name: str = "tiny"
    output_root: str = "checkpoints"
    model: str = "tiny"  # "tiny" builds the offline base; else a hub id or a local HF model directory
    # where the tiny base is built and cached; {precision} becomes base.precision as resolved (bf16 or fp32)
    base_dir: str = "checkpoints/tiny-base-{precision}"
    template: Literal["base", "qwen-instruct", "compact"] = "base"
    save_every: int = 20
    # which checkpoints keep what resume needs (optimizer, scheduler, RNG, DeepSpeed partitions): "last" (earlier
    # ones keep the model, all the analysis reads: ~6 GiB instead of ~49 GiB each at 3B) or "all"
    resume_state: Literal["last", "all"] = "last"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    launch: LaunchSettings = field(default_factory=LaunchSettings)

    def __post_init__(self) -> None:
        g = self.grpo
        if g.steps < 1:
            raise ConfigError(f"grpo.steps: expected >= 1, got {g.steps}")
        if g.num_generations < 2:
            raise ConfigError(f"grpo.num_generations: GRPO needs >= 2 completions per prompt, got {g.num_generations}")
        if g.prompts_per_step < 1:
            raise ConfigError(f"grpo.prompts_per_step: expected >= 1, got {g.prompts_per_step}")
        if g.min_solutions < 1:
            raise ConfigError(f"grpo.min_solutions: expected >= 1 (1 keeps every problem), got {g.min_solutions}")
        if g.steps_per_generation < 1:
            raise ConfigError(f"grpo.steps_per_generation: expected >= 1, got {g.steps_per_generation}")
        batch, parts = g.prompts_per_step * g.num_generations, self._batch_parts
        if batch % parts:
            raise ConfigError(
                f"grpo.prompts_per_step x grpo.num_generations = {batch} completions per step must divide evenly "
                f"into launch.trainer_gpus x grpo.gradient_accumulation_steps x grpo.steps_per_generation = {parts} "
                "parts"
            )
        if g.max_completion_length < 48:
            raise ConfigError(
                f"grpo.max_completion_length: {g.max_completion_length} tokens is too short for one attempt line "
                "plus an answer; use >= 48 (TinyZero: 1024)"
            )
        if not 0.0 < g.top_entropy_quantile <= 1.0:
            raise ConfigError(f"grpo.top_entropy_quantile: expected in (0, 1], got {g.top_entropy_quantile}")
        if g.lean_loss_rows < 1:
            raise ConfigError(f"grpo.lean_loss_rows: expected >= 1, got {g.lean_loss_rows}")
        if g.lean_loss and (g.loss_type != "dapo" or g.beta != 0.0 or g.top_entropy_quantile < 1.0):
            raise ConfigError(
                "grpo.lean_loss: exact only with grpo.loss_type=dapo, grpo.beta=0 and grpo.top_entropy_quantile=1 "
                f"(got {g.loss_type!r}, {g.beta}, {g.top_entropy_quantile}); set grpo.lean_loss=false"
            )
        if self.base.length_buckets < 0:
            raise ConfigError(f"base.length_buckets: expected >= 0 (0: random batches), got {self.base.length_buckets}")
        if self.save_every < 1:
            raise ConfigError(f"save_every: expected >= 1, got {self.save_every}")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ConfigError(f"run_name: expected a plain directory name, got {self.run_name!r}")
        if self.eval.samples < 1 or (self.eval.temperature == 0.0 and self.eval.samples > 1):
            raise ConfigError(
                f"eval.samples: expected 1 with eval.temperature=0 (greedy decoding has one answer; vLLM refuses more) "
                f"or >= 1 when sampling, got {self.eval.samples}"
            )
        if self.eval.problems > self.data.test_size:
            raise ConfigError(
                f"eval.problems ({self.eval.problems}) exceeds data.test_size ({self.data.test_size}): "
                "evaluation draws from the held-out split"
            )
        if self.model != "tiny" and not self._looks_like_hub_id() and not Path(self.model).is_dir():
            raise ConfigError(
                f"model: {self.model!r} is neither 'tiny', a local model directory, nor a hub id (owner/name)"
            )

    def _looks_like_hub_id(self) -> bool:
        parts = self.model.split("/")
        return len(parts) == 2 and all(parts) and not Path(self.model).exists() and not self.model.startswith(".")

    @property
    def _batch_parts(self) -> int:
        """How many micro-batches one generated batch is cut into: processes x accumulation x updates."""
        g = self.grpo
        return self.launch.trainer_gpus * g.gradient_accumulation_steps * g.steps_per_generation

    @property
    def per_device_batch(self) -> int:
        """Completions per device per micro-step."""
        return self.grpo.prompts_per_step * self.grpo.num_generations // self._batch_parts

    @property
    def run_dir(self) -> Path:
        return Path(self.output_root) / self.run_name

    @property
    def eval_max_new_tokens(self) -> int:
        return self.eval.max_new_tokens or self.grpo.max_completion_length


def resolve_precision(cfg: TrainConfig, device: str) -> TrainConfig:
    """``cfg`` with ``base.precision`` and ``grpo.precision`` resolved (``auto`` -> ``bf16 | fp32``, announced once)
    and ``{precision}`` in ``base_dir`` filled in: what the run records and every stage reads.

    The tiny base is pre-trained on the CPU whatever the device, so its precision follows the CPU."""
    from dataclasses import replace

    from train.precision import resolve

    base = resolve(cfg.base.precision, "cpu", "base.precision") if cfg.model == "tiny" else cfg.base.precision
    return replace(
        cfg,
        base_dir=cfg.base_dir.replace("{precision}", base),
        base=replace(cfg.base, precision=base),
        grpo=replace(cfg.grpo, precision=resolve(cfg.grpo.precision, device, "grpo.precision")),
    )


def preset_path(preset: str) -> Path:
    """``configs/<preset>.yaml`` for a preset name, or the path itself when given a file."""
    return find_preset(preset, PRESET_DIR, "preset")


def load_train_config(preset: str = "tiny", overrides: tuple[str, ...] | list[str] = ()) -> TrainConfig:
    """The resolved training config for a preset name (or YAML path) plus ``key=value`` overrides."""
    return load_config(TrainConfig, preset_path(preset), overrides)
