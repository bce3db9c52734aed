"""One training run end to end: data, base model, GRPO with per-checkpoint evaluation, the final summary.

Kept apart from the CLI so tests drive exactly what ``make train`` runs. Resuming (``resume=True``) restarts
from the last complete ``step_<N>`` with the Trainer's optimizer, scheduler and RNG state, after dropping any
metrics logged past that step, so a killed run ends at the same step with no step lost or repeated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from tasks.config import ConfigError
from tasks.countdown.dataset import load_problems, prepare
from tasks.countdown.generate import Problem
from tasks.countdown.prompts import make_prompt
from train import checkpoints as ck
from train import dist
from train.config import TrainConfig, resolve_precision
from train.evaluate import EvalMetrics, score_completions
from train.run_summary import summarize


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is visible; use device=cpu or device=auto")
    return requested


def check_model(model: str) -> None:
    """Fail with one line naming ``model`` when it is neither a loadable local directory nor a hub id whose config
    can be fetched (or is cached): before vLLM or the trainer start on it and fail deep inside."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"model: {model!r} cannot be loaded ({first}); give a local model directory, a hub id reachable from "
            "this machine (or in its hub cache), or model=tiny"
        ) from None


def ensure_base(cfg: TrainConfig, problems: list[Problem], separate_process: bool = False) -> str:
    """The model to train: the tiny base (built and cached on first use) or the configured hub id / path.

    With ``separate_process`` a missing base is built by a child ``python -m train --base-only`` on the resolved
    config, so the pre-training's memory (a few GB of optimizer state, activations and allocator fragments) goes
    back to the OS before GRPO starts instead of sitting in the training process beside vLLM.
    """
    if cfg.model != "tiny":
        return cfg.model
    from train.base import base_is_built, build_base

    if separate_process and not base_is_built(cfg.base_dir, cfg.data.operators, cfg.base, cfg.template):
        import subprocess
        import sys
        import tempfile

        from tasks.config import dump_config

        with tempfile.TemporaryDirectory() as tmp:
            resolved = Path(tmp) / "train_config.yaml"
            dump_config(cfg, resolved)
            cmd = [sys.executable, "-m", "train", "--base-only", "--preset", str(resolved)]
            subprocess.run(cmd, check=True, env=dist.single_process_env())  # not a process of this launch
    return str(build_base(cfg.base_dir, problems, cfg.data.operators, cfg.base, cfg.template))


def make_evaluator(cfg: TrainConfig, problems: list[Problem], engine: str, tokenizer: Any) -> Any:
    """A function trainer -> EvalMetrics that samples the current policy on the held-out problems."""
    prompts = [make_prompt(p.numbers, p.target, cfg.template) for p in problems]
    e = cfg.eval

    def sample(trainer: Any, chosen: list[str]) -> list[tuple[list[str], list[bool]]]:
        """(completions, truncated flags) of ``e.samples`` samples for each prompt of ``chosen``."""
        if engine == "vllm" and getattr(trainer, "vllm_generation", None) is not None:
            from vllm import SamplingParams

            gen = trainer.vllm_generation
            gen.sync_weights()
            # no per-request seed: vLLM's CPU sampler cannot offset a seeded generator (RuntimeError)
            # token ids only, decoded in one batch afterwards: vLLM's per-token incremental detokenizer is slower
            params = SamplingParams(
                n=e.samples, temperature=e.temperature, max_tokens=cfg.eval_max_new_tokens, detokenize=False
            )
            outs = gen.llm.generate(chosen, params, use_tqdm=False) if chosen else []
            flat = tokenizer.batch_decode([o.token_ids for out in outs for o in out.outputs], skip_special_tokens=True)
            texts = [flat[i * e.samples : (i + 1) * e.samples] for i in range(len(outs))]
            trunc = [[o.finish_reason == "length" for o in out.outputs] for out in outs]
        else:
            from train.rollout_engine import hf_sample

            texts, trunc = hf_sample(
                trainer.model,
                tokenizer,
                chosen,
                e.samples,
                e.temperature,
                cfg.eval_max_new_tokens,
                bf16=cfg.grpo.precision == "bf16",
            )
        return list(zip(texts, trunc, strict=True))

    def evaluate(trainer: Any) -> EvalMetrics:
        gen = getattr(trainer, "vllm_generation", None)
        if engine == "vllm" and getattr(gen, "mode", None) == "server":  # no local engine: ask the server
            from train.rollout_engine import server_sample

            rows = server_sample(gen, tokenizer, prompts, e.samples, e.temperature, cfg.eval_max_new_tokens)
        else:  # every process of a multi-process run samples its share of the prompts (train/dist.py)
            rows = dist.shared_map(lambda chosen: sample(trainer, chosen), prompts)
        return score_completions(problems, [t for t, _ in rows], [c for _, c in rows])

    return evaluate


def cpu_patches(cfg: TrainConfig, device: str) -> ModuleType | None:
    """:mod:`train.cpu` (the patches of TRL / transformers internals for CPU runs) on ``device == "cpu"``, else
    None: GPU runs use TRL's trainer as it ships, and a CPU-path option set in the config is said to be ignored."""
    if device == "cpu":
        from train import cpu

        return cpu
    ignored = [k for k, on in (("lean_loss", cfg.grpo.lean_loss), ("fp32_attention", cfg.grpo.fp32_attention)) if on]
    if ignored:
        print(f"grpo.{' and grpo.'.join(ignored)}: CPU-path options (train/cpu), ignored on device={device}")
    return None


def prepare_inputs(cfg: TrainConfig, resume: bool) -> tuple[Path, Any, list[Problem], list[Problem], str]:
    """The run directory (with the step to resume from, if any), the train and held-out problems and the base
    model's path: made once, by the main process, while the others wait and then read them."""
    with dist.main_first():
        if dist.is_main():
            run_dir, last = ck.prepare_run_dir(cfg, resume)
            if last is not None:
                ck.truncate_jsonl(run_dir / "metrics.jsonl", last[0])
                ck.truncate_jsonl(run_dir / "eval.jsonl", last[0])
                print(f"resuming {run_dir} from step {last[0]}")
        else:
            run_dir, last = cfg.run_dir, ck.latest_checkpoint(cfg.run_dir) if resume else None
        data_dir, _ = prepare(cfg.data)
        train_problems = load_problems(data_dir, "train")
        test_problems = load_problems(data_dir, "test")[: cfg.eval.problems]
        model_path = ensure_base(cfg, train_problems, separate_process=True)
    return run_dir, last, train_problems, test_problems, model_path


def load_policy(model_path: str) -> tuple[Any, Any]:
    """The tokenizer (left padding, as generation needs) and the policy in float32 master weights.

    float32 whatever the checkpoint stores (hub Qwen2.5 is bf16; transformers 5 would keep that): bf16 is
    grpo.precision's autocast, and AdamW on bf16 weights drops most lr-1e-6 updates below bf16's resolution. TRL
    loads a model id in float32 too; the reference model follows this dtype.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    return tokenizer, AutoModelForCausalLM.from_pretrained(model_path, dtype="float32")


def trainer_class(cfg: TrainConfig, cpu: ModuleType | None) -> Any:
    """TRL's ``GRPOTrainer``, or on the CPU with ``grpo.lean_loss`` its lean-loss subclass (train/cpu)."""
    from trl import GRPOTrainer

    if cpu is not None and cfg.grpo.lean_loss and dist.world_size() > 1:  # DDP needs the same passes on every rank
        print("grpo.lean_loss: single-process only (a rank may skip every row); TRL's pass is used", flush=True)
    elif cpu is not None and cfg.grpo.lean_loss:
        return cpu.lean_trainer_class(GRPOTrainer, cfg.grpo.lean_loss_rows)
    return GRPOTrainer


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) GRPO training as configured; returns the summary."""
    from train.grpo import check_grpo, grpo_args, prompt_dataset, reward_functions, select_problems
    from train.rollout_engine import choose_rollout, grpo_vllm_kwargs
    from train.run_callback import SampleLog, make_callback, tensorboard_callback

    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    cfg = resolve_precision(cfg, device)
    check_grpo(cfg, device)  # a bad grpo: option fails here, before any model, engine or run directory
    if cfg.model != "tiny":
        check_model(cfg.model)  # before the run directory exists, so a fixed retry is not refused as a rerun
    engine = choose_rollout(cfg.rollout.engine)
    dist.init(device, cfg.launch.trainer_gpus)
    run_dir, last, train_problems, test_problems, model_path = prepare_inputs(cfg, resume)
    tokenizer, model = load_policy(model_path)
    cpu = cpu_patches(cfg, device)
    if cpu is not None and cfg.grpo.fp32_attention and cfg.grpo.precision == "bf16":  # a float32 pass has it already
        cpu.use_fp32_attention(model)
    g = cfg.grpo
    rollout_kwargs = (
        grpo_vllm_kwargs(
            device, cfg.rollout, sampler_logprobs=g.vllm_importance_sampling_correction, precision=g.precision
        )
        if engine == "vllm"
        else {"use_vllm": False}
    )
    samples = SampleLog(g.sample_every)
    funcs, weights = reward_functions(cfg, samples)
    callback = make_callback(cfg, run_dir, tokenizer, make_evaluator(cfg, test_problems, engine, tokenizer), samples)
    trainer = trainer_class(cfg, cpu)(
        model=model,
        reward_funcs=funcs,
        args=grpo_args(cfg, run_dir, device, rollout_kwargs, weights),
        train_dataset=prompt_dataset(select_problems(train_problems, cfg), cfg.template),
        processing_class=tokenizer,
        callbacks=[callback, *([tensorboard_callback(run_dir)] if dist.is_main() else [])],
    )
    callback.trainer = trainer
    if cpu is not None:
        if engine == "vllm" and not g.vllm_importance_sampling_correction:
            cpu.without_sampler_logprobs(trainer.vllm_generation)  # grpo_vllm_kwargs asked the engine for none
        cpu.time_generation(trainer)  # time/generation_s and time/weight_sync_s, which `make bench` splits
    resume_from = str(last[1]) if last is not None and (last[1] / "trainer_state.json").is_file() else None
    trainer.train(resume_from_checkpoint=resume_from)
    with dist.main_first():  # the main process writes summary.json, the others read it
        if dist.is_main():
            summary = summarize(run_dir, test_problems, cfg, wall_s=time.perf_counter() - t0)
        else:
            summary = json.loads((run_dir / "summary.json").read_text())
    dist.finish()
    return summary
