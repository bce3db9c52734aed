"""TRL GRPO wiring: the Countdown reward as TRL reward functions, the problems RL sees, and the trainer config.

TRL does the RL (``GRPOTrainer``: sampling groups, advantages, clipped loss, vLLM colocate weight sync). What is
ours is only what TRL cannot know: the TinyZero reward (``tasks.countdown.reward``), extra *zero-weight* reward
functions so that TRL's own logging reports success / format / verification rates per step, the shuffled-reward
control, and the checks that turn a bad passed-through TRL option into one line. The Trainer callback that writes
checkpoints and metrics is train/run_callback.py.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.config import ConfigError
from tasks.countdown.degeneracy import count_lines
from tasks.countdown.generate import Problem
from tasks.countdown.prompts import make_prompt
from tasks.countdown.reward import breakdown
from tasks.countdown.solve import count_solutions
from tasks.countdown.trace import parse_attempts
from train import checkpoints as ck
from train.config import TrainConfig
from train.precision import resolve, resolved
from train.run_callback import SampleLog


def reward_functions(cfg: TrainConfig, samples: SampleLog | None = None) -> tuple[list[Callable], list[float]]:
    """TRL reward functions and weights: the TinyZero reward (weight 1) plus logged-only components (weight 0).
    With ``samples``, the TinyZero reward also hands it sample completions for the run callback to write."""
    g = cfg.grpo

    def countdown_reward(completions: list[str], numbers: list, target: list, **kw: Any) -> list[float]:
        t0 = time.perf_counter()
        out = [
            breakdown(c, n, t, format_score=g.format_score, correct_score=g.correct_score, template=cfg.template).score
            for c, n, t in zip(completions, numbers, target, strict=True)
        ]
        state = kw.get("trainer_state")
        out = control_rewards(out, completions, numbers, target, g, getattr(state, "global_step", 0), cfg)
        if "log_metric" in kw:
            kw["log_metric"]("time/reward_s", time.perf_counter() - t0)
        if samples is not None and state is not None:
            samples.offer(state.global_step, completions, numbers, target, out)
        return out

    def success(completions: list[str], numbers: list, target: list, **kw: Any) -> list[float]:
        return [float(breakdown(c, n, t).correct) for c, n, t in zip(completions, numbers, target, strict=True)]

    def has_answer(completions: list[str], numbers: list, target: list, **kw: Any) -> list[float]:
        return [float(breakdown(c, n, t).has_answer) for c, n, t in zip(completions, numbers, target, strict=True)]

    def false_accepts(completions: list[str], numbers: list, target: list, **kw: Any) -> list[float]:
        """Lines accepted ("this works") although wrong, per completion."""
        return [
            float(sum(a.parsed and a.verdict == "this" and not a.correct for a in parse_attempts(c, n, t)))
            for c, n, t in zip(completions, numbers, target, strict=True)
        ]

    def attempt_lines(completions: list[str], numbers: list, target: list, **kw: Any) -> list[float]:
        return [float(len(parse_attempts(c, n, t))) for c, n, t in zip(completions, numbers, target, strict=True)]

    def verifying(completions: list[str], numbers: list, target: list, **kw: Any) -> list[float]:
        """1 for a completion with verdict lines: its batch mean is the share of rollouts that verify."""
        return [float(v) for v in verifies(completions, numbers, target)]

    def advantage(style: bool) -> Callable:
        def adv(completions: list[str], numbers: list, target: list, **kw: Any) -> list[float | None]:
            """The group advantage the training reward gives this completion, for one style only (None for the
            other, which TRL logs as NaN and averages out): how much RL pushes toward verifying or away."""
            state = kw.get("trainer_state")
            rows = zip(completions, numbers, target, strict=True)
            scores = [breakdown(c, n, t, template=cfg.template).score for c, n, t in rows]
            rewards = control_rewards(scores, completions, numbers, target, g, getattr(state, "global_step", 0), cfg)
            advs = group_advantages(rewards, g.num_generations, str(g.trl.get("scale_rewards", "group")))
            styles = verifies(completions, numbers, target)
            return [a if v == style else None for a, v in zip(advs, styles, strict=True)]

        adv.__name__ = "advantage_verifying" if style else "advantage_plain"
        return adv

    funcs = [countdown_reward, success, has_answer, false_accepts, attempt_lines, verifying]
    funcs += [advantage(True), advantage(False)]
    return funcs, [1.0] + [0.0] * (len(funcs) - 1)


def verifies(completions: list[str], numbers: list, target: list) -> list[bool]:
    """Whether each completion writes at least one verdict line (a judged attempt)."""
    return [count_lines(c, n, t).with_verdict > 0 for c, n, t in zip(completions, numbers, target, strict=True)]


def group_advantages(rewards: list[float], k: int, scale: str = "group") -> list[float]:
    """GRPO's advantages as TRL computes them for consecutive groups of ``k`` completions: reward minus the group
    mean, divided by the group's (unbiased) standard deviation + 1e-4 unless ``scale`` is "none" ("batch": the
    whole batch's)."""
    import statistics

    out: list[float] = []
    batch_sd = statistics.stdev(rewards) if len(rewards) > 1 else 0.0
    for s in range(0, len(rewards), k):
        grp = rewards[s : s + k]
        m = sum(grp) / len(grp)
        sd = batch_sd if scale == "batch" else (statistics.stdev(grp) if len(grp) > 1 else 0.0)
        out += [(r - m) / (sd + 1e-4) if scale != "none" else r - m for r in grp]
    return out


def control_rewards(
    rewards: list[float], completions: list[str], numbers: list, target: list, g: Any, step: int, cfg: TrainConfig
) -> list[float]:
    """``grpo.reward``: the countdown rewards as they are, permuted within each group of ``num_generations``
    consecutive completions (TRL's sampler repeats each prompt that many times in a row), or format-only."""
    if g.reward == "countdown":
        return rewards
    if g.reward == "format":
        return [
            g.format_score if breakdown(c, n, t, template=cfg.template).has_answer else 0.0
            for c, n, t in zip(completions, numbers, target, strict=True)
        ]
    import random

    rng = random.Random(cfg.seed * 1_000_003 + step)
    out = list(rewards)
    k = g.num_generations
    for start in range(0, len(out) - len(out) % k, k):
        group = out[start : start + k]
        rng.shuffle(group)
        out[start : start + k] = group
    return out


def solution_counts(problems: list[Problem], cfg: TrainConfig) -> list[int]:
    """Each problem's number of ways to the target, with the run's operators and integer-step rule."""
    return [count_solutions(p.numbers, p.target, cfg.data.operators, cfg.data.integer_steps) for p in problems]


def select_problems(problems: list[Problem], cfg: TrainConfig) -> list[Problem]:
    """The training problems with at least ``grpo.min_solutions`` ways to the target (all of them at 1).

    Raises ConfigError when none is left, naming the setting; prints how many were kept otherwise.
    """
    k = cfg.grpo.min_solutions
    if k <= 1:
        return list(problems)
    kept = [p for p, ways in zip(problems, solution_counts(problems, cfg), strict=True) if ways >= k]
    if not kept:
        raise ConfigError(
            f"grpo.min_solutions={k}: none of the {len(problems)} training problems has that many solutions; "
            "lower it (1 keeps every problem)"
        )
    print(f"grpo.min_solutions={k}: training on {len(kept)} of {len(problems)} problems")
    return kept


def prompt_dataset(problems: list[Problem], template: str) -> Any:
    """The GRPO training set: TinyZero prompts plus the columns the reward reads."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt": [make_prompt(p.numbers, p.target, template) for p in problems],
            "numbers": [list(p.numbers) for p in problems],
            "target": [p.target for p in problems],
        }
    )


# trl.GRPOConfig options the grpo: section passes on under the same name (the rest of it is GRPOSettings.trl)
PASSED_ON = (
    "num_generations",
    "beta",
    "loss_type",
    "max_completion_length",
    "temperature",
    "top_entropy_quantile",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "vllm_importance_sampling_correction",
)
# options this project sets itself, from the field named here: a grpo: key of the same name would be ignored
SET_HERE = {
    "output_dir": "output_root / run_name",
    "max_steps": "grpo.steps",
    "per_device_train_batch_size": "grpo.prompts_per_step x grpo.num_generations / launch.trainer_gpus",
    "bf16": "grpo.precision",
    "fp16": "grpo.precision",
    "use_cpu": "device",
    "seed": "seed",
    "reward_weights": "grpo.reward",
    "save_strategy": "save_every",
    "save_steps": "save_every",
    "report_to": "the run's own TensorBoard callback",
    "use_vllm": "rollout.engine",
    "vllm_mode": "rollout.vllm_mode",
}


def trl_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The ``trl.GRPOConfig`` options of the ``grpo:`` section: the declared ones TRL shares, then every other key
    as written. A key this project sets itself is refused with the field that sets it."""
    g = cfg.grpo
    for key in g.trl:
        if key in SET_HERE or key.startswith("vllm_server") or key == "vllm_gpu_memory_utilization":
            where = SET_HERE.get(key, "the rollout: section")
            raise ConfigError(f"grpo.{key}: set by this project from {where}; set that instead")
    # TRL's steps_per_generation counts micro-steps (its default: gradient_accumulation_steps); this project's
    # counts optimizer updates, so one generation covers every micro-step of them
    micro_steps = {"steps_per_generation": g.steps_per_generation * g.gradient_accumulation_steps}
    return {**{k: getattr(g, k) for k in PASSED_ON}, **micro_steps, **g.trl}


_SCALARS = (bool, int, float)


def checked_option(key: str, value: Any, hint: Any) -> Any:
    """``value`` for the ``trl.GRPOConfig`` option ``key`` typed as ``hint``: a number written as a string (YAML
    reads ``1e-5`` as one) becomes the number; a value of another type is a :class:`ConfigError`.

    Why here: ``GRPOConfig`` is a dataclass and does not check its fields, so ``learning_rate="abc"`` would only
    fail inside torch's optimizer after the models are loaded. Options typed otherwise (strings, dicts, enums) pass
    as written, and TRL checks them itself."""
    allowed = typing.get_args(hint) if typing.get_args(hint) else (hint,)
    kinds = [t for t in allowed if t is not type(None)]
    if not kinds or not all(t in _SCALARS for t in kinds) or (value is None and type(None) in allowed):
        return value
    for kind in kinds:
        if type(value) is kind or (kind is float and type(value) is int):
            return value
    if isinstance(value, str) and bool not in kinds:
        for kind in sorted(kinds, key=_SCALARS.index):
            try:
                return kind(value)
            except ValueError:
                continue
    names = " or ".join(t.__name__ for t in kinds)
    raise ConfigError(f"grpo.{key}: expected {names} (an option of trl.GRPOConfig), got {value!r}")


def grpo_args(
    cfg: TrainConfig, run_dir: Path, device: str, rollout_kwargs: dict[str, Any], reward_weights: list[float] | None
) -> Any:
    """``trl.GRPOConfig`` from the ``grpo:`` section (TinyZero's settings live in the presets) and the run.

    An option ``GRPOConfig`` does not have, or a value it refuses, is a :class:`ConfigError` naming ``grpo.<key>``
    (with the nearest valid name), not a traceback."""
    import dataclasses
    import difflib

    from trl import GRPOConfig

    g = cfg.grpo
    kwargs = trl_kwargs(cfg)
    valid = {f.name for f in dataclasses.fields(GRPOConfig)}
    for key in kwargs:
        if key not in valid:
            near = difflib.get_close_matches(key, sorted(valid | set(type(g).__dataclass_fields__)), n=1)
            hint = f" Did you mean 'grpo.{near[0]}'?" if near else ""
            raise ConfigError(
                f"unknown key 'grpo.{key}': neither this project's nor an option of trl.GRPOConfig.{hint}"
            )
    hints = typing.get_type_hints(GRPOConfig)
    kwargs = {k: checked_option(k, v, hints.get(k)) for k, v in kwargs.items()}
    try:
        return GRPOConfig(
            output_dir=str(run_dir / ck.STAGING),
            max_steps=g.steps,
            per_device_train_batch_size=cfg.per_device_batch,
            bf16=resolved(g.precision, "grpo.precision") == "bf16",
            use_cpu=device == "cpu",
            seed=cfg.seed,
            reward_weights=reward_weights,
            logging_steps=1,
            save_strategy="steps",
            save_steps=cfg.save_every,
            report_to=[],  # TensorBoard is attached explicitly (see tensorboard_callback) to write into <run>/tb
            disable_tqdm=False,
            log_completions=False,
            **kwargs,
            **rollout_kwargs,
        )
    except (ValueError, TypeError) as e:
        raise ConfigError(f"grpo: trl.GRPOConfig refused the options ({type(e).__name__}: {e})") from None


def check_grpo(cfg: TrainConfig, device: str) -> None:
    """Build the run's ``trl.GRPOConfig`` once, rollouts aside, so a bad ``grpo:`` option fails before any model
    or engine is loaded (and under ``--dry-run``, where a GPU preset may be checked on a host without CUDA: its
    precision is then taken as float32, which changes no other option)."""
    import tempfile
    from dataclasses import replace

    import torch

    if device == "cuda" and not torch.cuda.is_available():
        cfg = replace(cfg, grpo=replace(cfg.grpo, precision="fp32"))
    else:
        cfg = replace(cfg, grpo=replace(cfg.grpo, precision=resolve(cfg.grpo.precision, device, "grpo.precision")))
    with tempfile.TemporaryDirectory() as tmp:
        grpo_args(cfg, Path(tmp), device, {"use_vllm": False}, None)
