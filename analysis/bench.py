"""Analysis speed and memory (``make bench``): every figure is a ratio measured in this run.

* steering: the KV-cached token-conditional loop vs the naive protocol that re-runs the whole sequence for every
  new token (how the original study steered; target >= 20x at 256 new tokens, batch 32), and vs unsteered
  KV-cached generation of the same batch (target <= 1.15x);
* capture: the forward pass with the recording hooks vs the same pass without hooks (target <= 1.1x);
* memory: peak RSS of ``python -m analysis`` over 2 and over 8 checkpoints of the same run (it must not grow
  with the number of checkpoints: results are written per checkpoint and only summaries are kept);
* capture memory: peak host memory growth of the streamed capture vs the in-memory one at the same 4x sites (target
  <= 0.5x: it holds one batch, not the capture), and flat in the number of sites: from 1x to 4x its peak grows by at
  most 0.1 of the activation bytes added (analysis/bench_capture.py).

The model is the newest tiny run's last checkpoint when one exists (``make train`` first), else a random-weight
tiny Qwen2 with the tiny tokenizer built here (speed does not depend on the weights; sequences are generated to
full length either way). Each timing is the median of ``repeats`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tasks.bench_results import record_bench
from train.precision import hardware, resolve

TARGETS = {
    "steer_vs_naive": 20.0,
    "steer_vs_unsteered": 1.15,
    "capture_vs_plain": 1.1,
    "rss_8_vs_2": 1.1,
    "capture_stream_vs_memory_4x": 0.5,
    "capture_stream_added_share_4x": 0.1,
}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_s(fn: Callable[[], Any], repeats: int, warmup: Callable[[], Any] | None = None) -> float:
    (warmup or fn)()
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# Qwen2.5-0.5B's architecture (its config.json), built locally with random weights: speed does not need weights.
def sized_model(tok: Any, device: str, precision: str = "fp32") -> Any:
    """A random-weight Qwen2 of Qwen2.5-0.5B's size (bf16 where ``precision`` resolved to it, as Qwen2.5's
    checkpoints are stored); prompts still come from ``tok``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from train.standin import QWEN25_05B

    cfg = Qwen2Config(**QWEN25_05B, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def bench_model(root: Path) -> tuple[Any, Any, str]:
    """(model, tokenizer, where it came from): the newest trained checkpoint, else a random-weight tiny model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.checkpoints import list_checkpoints

    runs = [p for p in root.iterdir() if p.is_dir() and list_checkpoints(p)] if root.is_dir() else []
    if runs:
        run = max(runs, key=lambda p: p.stat().st_mtime)
        path = list_checkpoints(run)[-1][1]
        return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path), str(path)
    import random

    from tasks.countdown.generate import ProblemSpec, generate_problems
    from train.base import BaseConfig, build_model, corpus
    from train.base_tokenizer import build_tokenizer

    cfg = BaseConfig(corpus_traces=2000)
    spec = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=20)
    texts = corpus(generate_problems(spec, 500, seed=0), cfg, spec.operators)
    random.seed(0)
    tok = build_tokenizer(texts, cfg.vocab_size)
    return build_model(cfg, tok).eval(), tok, "random-weight tiny Qwen2 (no trained run found)"


def _prompts(tok: Any, batch: int) -> Any:
    from tasks.countdown.generate import ProblemSpec, generate_problems
    from tasks.countdown.prompts import make_prompt

    spec = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=20)
    prompts = [make_prompt(p.numbers, p.target) for p in generate_problems(spec, batch, seed=1)]
    tok.padding_side = "left"
    return tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


def steering(model: Any, tok: Any, batch: int, new_tokens: int, repeats: int) -> dict[str, float]:
    from analysis.steering.loop import SteerRule, naive_steered_generate, steered_generate, trigger_vocab

    enc = _prompts(tok, batch).to(model.device)
    vocab, rule = trigger_vocab(tok, model.config.vocab_size), SteerRule(every=1)
    vec = {layer: torch.randn(model.config.hidden_size, device=model.device) for layer in (2, 3)}
    args = (enc.input_ids, enc.attention_mask)

    def cached(v: dict) -> Callable[[], Any]:
        return lambda: steered_generate(model, *args, v, vocab, rule, new_tokens, -1, tok.pad_token_id)

    steered_s = _median_s(cached(vec), repeats)
    plain_s = _median_s(cached({}), repeats)
    # the naive loop is quadratic in length (~1 min per run here): warm it up on 8 tokens, not 256
    naive_s = _median_s(
        lambda: naive_steered_generate(model, *args, vec, vocab, rule, new_tokens),
        repeats,
        warmup=lambda: naive_steered_generate(model, *args, vec, vocab, rule, 8),
    )
    return {
        "steer_cached_s": steered_s,
        "unsteered_cached_s": plain_s,
        "steer_naive_s": naive_s,
        "steer_vs_naive": naive_s / steered_s,
        "steer_vs_unsteered": steered_s / plain_s,
    }


def capture_overhead(model: Any, tok: Any, batch: int, repeats: int) -> dict[str, float]:
    from analysis.hooks import record_residuals

    enc = _prompts(tok, batch).to(model.device)
    ids = torch.cat([enc.input_ids, enc.input_ids, enc.input_ids, enc.input_ids], 1)  # ~250 tokens per row
    mask = torch.cat([enc.attention_mask] * 4, 1)
    rows = torch.arange(batch, device=ids.device).repeat_interleave(12)
    cols = torch.randint(0, ids.shape[1], (batch * 12,), device=ids.device)

    def plain() -> None:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)

    def hooked() -> None:
        with torch.no_grad(), record_residuals(model, rows, cols):
            model(input_ids=ids, attention_mask=mask, use_cache=False)

    p, h = _median_s(plain, repeats), _median_s(hooked, repeats)
    return {"capture_plain_s": p, "capture_hooked_s": h, "capture_vs_plain": h / p}


def _peak_rss_mb(args: list[str]) -> float:
    code = (
        "import resource, runpy, sys\n"
        f"sys.argv = ['analysis', *{args!r}]\n"
        "try:\n    runpy.run_module('analysis', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
    line = [x for x in out.stdout.splitlines() if x.startswith("PEAK_RSS_KB")]
    if not line:
        raise RuntimeError(f"analysis subprocess failed: {out.stderr[-2000:]}")
    return int(line[0].split()[1]) / 1024


def memory(source: Path) -> dict[str, float]:
    """Peak RSS of analysing 2 vs 8 checkpoints (copies of ``source``'s last checkpoint in a scratch run)."""
    from train.checkpoints import list_checkpoints

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "bench-run"
        run.mkdir()
        last = list_checkpoints(source)[-1][1]
        for i in range(8):
            shutil.copytree(last, run / f"step_{i}", ignore=shutil.ignore_patterns("optimizer.pt", "*.pth"))
        shutil.copy(source / "config.yaml", run / "config.yaml")
        # every stage runs, on little data: what is measured is whether memory grows with the checkpoint count
        common = [f"run={run}", "rollout.problems=12", "rollout.samples=1", "rollout.max_new_tokens=128"]
        common += ["steering.problems=4", "steering.max_flip_cases=12", "steering.scales=[0.0,8.0]"]
        common += ["steering.max_new_tokens=96", "components.k_max=2", "components.random_draws=1"]
        common += ["components.free_problems=4", "components.free_max_new_tokens=64"]
        two = _peak_rss_mb([*common, "steps=[0,1]"])
        shutil.rmtree(run / "analysis")
        eight = _peak_rss_mb(common)
    return {"rss_2_ckpt_mb": two, "rss_8_ckpt_mb": eight, "rss_8_vs_2": eight / two}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--root", default="checkpoints", help="where trained runs are looked for")
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--arch", default="trained", choices=["trained", "qwen2.5-0.5b"], help="the tiny run, or random weights"
    )
    parser.add_argument("--section", default="analysis", help="results.json section to write")
    parser.add_argument("--precision", default="auto", help="auto | bf16 | fp32 (train/precision.py)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-RSS runs (they need vLLM or time)")
    parser.add_argument("--capture-records", type=int, default=60, help="records of the 1x capture-memory run")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    precision = resolve(args.precision, args.device, "precision")
    model, tok, origin = bench_model(Path(args.root))
    if args.arch != "trained":
        model, origin = sized_model(tok, args.device, precision), f"random-weight {args.arch}-sized Qwen2"
    model = model.to(args.device)
    print(f"analysis bench model: {origin} on {args.device}, {model.dtype}")
    fig: dict[str, Any] = {"model": origin, "device": args.device, "precision": precision}
    fig["hardware"] = hardware("cuda" if args.device.startswith("cuda") else "cpu")
    t0 = time.perf_counter()
    fig.update(steering(model, tok, args.batch, args.new_tokens, args.repeats))
    fig.update(capture_overhead(model, tok, args.batch, args.repeats))
    print(f"(steering and capture timed in {time.perf_counter() - t0:.0f} s)")
    if not args.skip_memory and (origin.startswith(str(args.root)) or Path(origin).exists()):
        t0 = time.perf_counter()
        fig.update(memory(Path(origin).parent))
        print(f"(peak-RSS runs over 2 and 8 checkpoints took {time.perf_counter() - t0:.0f} s)")
    if not args.skip_memory:
        from analysis.bench_capture import capture_memory

        t0 = time.perf_counter()
        fig.update(capture_memory(tok, args.capture_records))
        print(f"(capture memory over {fig['capture_sites']} and {fig['capture_sites_4x']} sites took "
              f"{time.perf_counter() - t0:.0f} s)")  # fmt: skip
    rows = [
        ("steering: naive / KV-cached", "steer_vs_naive", ">="),
        ("steering: steered / unsteered (cached)", "steer_vs_unsteered", "<="),
        ("capture: hooked / plain forward", "capture_vs_plain", "<="),
        ("peak RSS: 8 / 2 checkpoints", "rss_8_vs_2", "<="),
        ("capture host memory growth: stream / memory", "capture_stream_vs_memory_4x", "<="),
        ("capture peak, 4x sites: share of added bytes", "capture_stream_added_share_4x", "<="),
    ]
    for name, key, op in rows:
        if key in fig:
            t = TARGETS[key]
            ok = fig[key] >= t if op == ">=" else fig[key] <= t
            print(f"{name:<42}{fig[key]:>9.2f}x  target {op} {t}x  {'ok' if ok else 'MISSED'}")
    print(
        f"(absolute: cached steer {fig['steer_cached_s']:.2f} s, naive {fig['steer_naive_s']:.1f} s for "
        f"{args.batch} x {args.new_tokens} tokens"
        + (f"; peak RSS {fig['rss_2_ckpt_mb']:.0f} / {fig['rss_8_ckpt_mb']:.0f} MB)" if "rss_2_ckpt_mb" in fig else ")")
    )
    if "capture_stream_growth_mb" in fig:
        print(
            f"(capture peak host memory growth, streamed: {fig['capture_stream_growth_mb']:.0f} -> "
            f"{fig['capture_stream_growth_4x_mb']:.0f} MB; in memory at 4x: "
            f"{fig['capture_memory_growth_4x_mb']:.0f} MB; activations at 4x: "
            f"{fig['capture_activations_4x_mb']:.0f} MB)"
        )
    out = record_bench(args.out, args.section, fig)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
