"""Training speed (``make bench``): vLLM vs transformers rollouts, and where a GRPO step's time goes.

* rollouts: tokens/s of vLLM (the in-process CPU engine the trainer uses) vs ``model.generate`` at the tiny
  preset's GRPO batch shape (prompts_per_step x num_generations completions, its max completion length, T=1);
  target >= 5x. Median of ``repeats`` after a warm-up; engine start-up is excluded and printed separately.
* GRPO step breakdown: a short real ``python -m train`` run (TRL GRPOTrainer, vLLM colocate) on the tiny base,
  its per-step ``metrics.jsonl`` split into generation, weight sync, reward and the rest (forward, backward,
  optimizer), as shares of the step (median over steps after the first two).
* the lean loss pass (``grpo.lean_loss``, train/cpu/lean_loss.py): the same short run with TRL's own loss pass, and
  the ratio of the two runs' forward/backward/optimizer time per step (no target: it depends on how many groups
  have all-equal rewards and how spread the completion lengths are).
* precision: one training step (forward, backward, AdamW) of a random tiny-preset-sized Qwen2 (4 x 128, batch
  8 x 320 tokens) in float32 and under bf16 autocast on this CPU: the bf16 / fp32 time ratio says at once whether
  bf16 is native here (< 1) or emulated (>> 1), next to what ``precision: auto`` picks (train/precision.py).
* the allocator: ``make`` runs CPU jobs with tcmalloc preloaded (Makefile ``MALLOC``); the same short tiny-base
  pre-training with and without it, its Trainer runtime ratio, and whether the losses are bit for bit equal.

The model is the tiny base of the precision ``auto`` picks here (``checkpoints/tiny-base-<precision>``) when it
exists (``make base``); otherwise a micro base is built in a scratch directory (a few seconds), which the output
says.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks.bench_results import record_bench
from train.config import load_train_config, resolve_precision
from train.precision import hardware, inference_dtype

TARGET_VLLM_VS_HF = 5.0
MICRO_BASE = [
    "base.vocab_size=300", "base.hidden_size=128", "base.num_layers=4", "base.num_heads=4", "base.num_kv_heads=4",
    "base.corpus_traces=400", "base.steps=20", "base.precision=fp32",
]  # fmt: skip


def _median_s(fn: Any, repeats: int) -> tuple[float, Any]:
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def rollouts(
    model_dir: Path, prompts: list[str], n: int, max_tokens: int, repeats: int, precision: str
) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    from train import cpu
    from train.rollout_engine import hf_sample, offline_llm

    cpu.enable()  # the live-weight GEMMs of TRL's colocated engine (a no-op off vLLM's CPU platform)
    params = SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens)
    timed: dict[str, tuple[float, int]] = {}
    start_s = 0.0
    # the dtype TRL's colocated engine runs in under this precision (the tiny base's own fp32 either way); bf16 is
    # measured beside it for reference
    engine_dtype = inference_dtype(precision)
    for dtype in (engine_dtype, "bfloat16"):
        t0 = time.perf_counter()
        with offline_llm(model_dir, seed=0, dtype=dtype) as llm:
            start_s = start_s or time.perf_counter() - t0
            secs, outs = _median_s(functools.partial(llm.generate, prompts, params, use_tqdm=False), repeats)
            timed[dtype] = (secs, sum(len(o.token_ids) for out in outs for o in out.outputs))
    v_s, v_tokens = timed[engine_dtype]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    bf16 = precision == "bf16"
    h_s, (texts, _) = _median_s(lambda: hf_sample(model, tok, prompts, n, 1.0, max_tokens, bf16=bf16), repeats)
    h_tokens = sum(len(tok(t, add_special_tokens=False).input_ids) + 1 for ts in texts for t in ts)
    return {
        "vllm_tokens_per_s": v_tokens / v_s,
        "hf_tokens_per_s": h_tokens / h_s,
        "vllm_vs_hf": (v_tokens / v_s) / (h_tokens / h_s),
        "vllm_bf16_tokens_per_s": timed["bfloat16"][1] / timed["bfloat16"][0],
        "vllm_bf16_vs_hf": (timed["bfloat16"][1] / timed["bfloat16"][0]) / (h_tokens / h_s),
        "vllm_engine_start_s": start_s,
    }


def grpo_breakdown(base_args: list[str], steps: int, lean: bool = True) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            *base_args, f"grpo.lean_loss={str(lean).lower()}",
            f"output_root={tmp}", "run_name=bench", f"grpo.steps={steps}", f"save_every={steps}",
            "eval.problems=8", "eval.samples=1", "rollout.engine=vllm",
        ]  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "train", *args], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"GRPO bench run failed:\n{proc.stderr[-3000:]}")
        rows = [json.loads(x) for x in (Path(tmp) / "bench" / "metrics.jsonl").read_text().splitlines()][2:]

    def med(key: str) -> float:
        vals = [r.get(key, 0.0) for r in rows]
        return statistics.median(vals) if vals else 0.0

    step, gen, sync, reward = (
        med("time/step_s"),
        med("time/generation_s"),
        med("time/weight_sync_s"),
        med("time/reward_s"),
    )
    parts = {"generation": gen - sync, "weight_sync": sync, "reward": reward}
    parts["forward_backward_optimizer"] = max(step - sum(parts.values()), 0.0)
    out = {"grpo_step_s": step}
    out.update({f"share_{k}": v / step for k, v in parts.items()})
    return out


def precision_step(repeats: int, batch: int = 8, tokens: int = 320) -> dict[str, float]:
    """Seconds per training step of a random tiny-preset-sized Qwen2 in float32 and under bf16 autocast (median)."""
    import torch

    from train.base import BaseConfig, build_model
    from train.base_tokenizer import build_tokenizer

    cfg = BaseConfig()
    tok = build_tokenizer(["12 + 3 = 15 (this works)", "20 - 7 = 13 (not 24)"] * 8, cfg.vocab_size)
    model = build_model(cfg, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, len(tok), (batch, tokens), generator=torch.Generator().manual_seed(0))
    out = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):

        def step(bf16: bool = bf16) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()

        out[f"train_step_{name}_s"] = _median_s(step, repeats)[0]
    out["train_step_bf16_vs_fp32"] = out["train_step_bf16_s"] / out["train_step_fp32_s"]
    return out


def allocator(steps: int) -> dict[str, float]:
    """Base pre-training seconds under this process's preloaded allocator vs glibc malloc (nothing preloaded)."""
    preload = os.environ.get("LD_PRELOAD", "")
    if "malloc" not in preload:
        return {}
    runs = {}
    for name, env in (
        ("preloaded", dict(os.environ)),
        ("glibc", {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            args = [f"base_dir={tmp}/base", f"base.steps={steps}", "base.warmup_steps=10"]
            cmd = [sys.executable, "-m", "train", "--base-only", *args]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"allocator bench ({name}) failed:\n{proc.stderr[-3000:]}")
            runtime = re.search(r"'train_runtime': '([0-9.]+)'", proc.stdout + proc.stderr)
            loss = json.loads((Path(tmp) / "base" / "base.json").read_text())["train_loss"]
            runs[name] = (float(runtime.group(1)) if runtime else float("nan"), loss)
    return {
        "base_steps_glibc_vs_preloaded": runs["glibc"][0] / runs["preloaded"][0],
        "base_loss_identical": float(runs["glibc"][1] == runs["preloaded"][1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grpo-steps", type=int, default=7, help="the first 2 are dropped as warm-up")
    parser.add_argument("--base-steps", type=int, default=150, help="tiny-base steps per allocator run")
    parser.add_argument("--out", default="bench/results.json")
    args = parser.parse_args(argv)
    cfg = resolve_precision(load_train_config("tiny"), "cpu")
    fig: dict[str, Any] = {"precision": cfg.grpo.precision, "hardware": hardware("cpu")}
    fig.update(precision_step(args.repeats))
    hw = fig["hardware"]
    print(
        f"{'training step: bf16 autocast / float32':<42}{fig['train_step_bf16_vs_fp32']:>9.2f}x  "
        f"({fig['train_step_fp32_s']:.2f} s vs {fig['train_step_bf16_s']:.2f} s; CPU {hw['cpu_capability']}, "
        f"{'native' if hw['native_bf16'] else 'emulated'} bf16: auto picks {cfg.grpo.precision})"
    )
    with tempfile.TemporaryDirectory() as scratch:
        base_args: list[str] = []
        if (Path(cfg.base_dir) / "config.json").is_file():
            origin = cfg.base_dir
        else:
            base_args = [*MICRO_BASE, f"base_dir={scratch}/base"]
            subprocess.run([sys.executable, "-m", "train", "--base-only", *base_args], check=True, capture_output=True)
            origin = f"micro base built for the bench ({scratch}/base)"
        model_dir = Path(cfg.base_dir) if not base_args else Path(scratch) / "base"
        print(f"training bench model: {origin}")
        from tasks.countdown.dataset import load_problems, prepare
        from tasks.countdown.prompts import make_prompt

        out_dir, _ = prepare(cfg.data, progress=False)
        prompts = [make_prompt(p.numbers, p.target, cfg.template) for p in load_problems(out_dir, "test")]
        g = cfg.grpo
        fig["model"] = origin
        fig.update(
            rollouts(
                model_dir,
                prompts[: g.prompts_per_step],
                g.num_generations,
                g.max_completion_length,
                args.repeats,
                g.precision,
            )
        )
        fig.update(grpo_breakdown(base_args, args.grpo_steps, lean=True))
        full = grpo_breakdown(base_args, args.grpo_steps, lean=False)
        fig["grpo_step_s_trl_loss"] = full["grpo_step_s"]
        lean_s = fig["grpo_step_s"] * fig["share_forward_backward_optimizer"]
        full_s = full["grpo_step_s"] * full["share_forward_backward_optimizer"]
        fig["lean_loss_speedup"] = full_s / max(lean_s, 1e-9)
    ok = "ok" if fig["vllm_vs_hf"] >= TARGET_VLLM_VS_HF else "MISSED"
    print(
        f"{'rollouts: vLLM / transformers tokens/s':<42}{fig['vllm_vs_hf']:>9.2f}x  "
        f"target >= {TARGET_VLLM_VS_HF}x  {ok}"
    )
    print(
        f"(absolute: vLLM {fig['vllm_tokens_per_s']:,.0f} tok/s, transformers {fig['hf_tokens_per_s']:,.0f} tok/s, "
        f"engine start {fig['vllm_engine_start_s']:.1f} s; vLLM in bf16: {fig['vllm_bf16_vs_hf']:.2f}x)"
    )
    print(f"GRPO step {fig['grpo_step_s']:.2f} s: " + ", ".join(
        f"{k[6:]} {v:.0%}" for k, v in fig.items() if k.startswith("share_")
    ))  # fmt: skip
    print(
        f"{'GRPO loss pass: TRL full / lean':<42}{fig['lean_loss_speedup']:>9.2f}x  "
        f"(forward+backward+optimizer per step; steps {fig['grpo_step_s_trl_loss']:.2f} s vs "
        f"{fig['grpo_step_s']:.2f} s)"
    )
    fig.update(allocator(args.base_steps))
    if "base_steps_glibc_vs_preloaded" in fig:
        same = "bit for bit the same loss" if fig["base_loss_identical"] else "DIFFERENT losses"
        ratio = fig["base_steps_glibc_vs_preloaded"]
        print(f"{'base pre-training: glibc / preloaded malloc':<42}{ratio:>9.2f}x  ({same})")
    else:
        print("base pre-training allocator: nothing preloaded (make bench preloads tcmalloc where setup found it)")
    out = record_bench(args.out, "train", fig)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
