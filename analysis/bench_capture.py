"""Capture's peak host memory against the number of sites (a row of ``make bench``, analysis/bench.py).

The streamed capture (:func:`analysis.capture.capture_to_dir`) must hold one batch, not the whole capture, so its
peak host memory must stay flat when the number of sites grows 4x; the in-memory capture
(:func:`analysis.capture.capture`) is measured beside it as the contrast (its growth is the activations' bytes).
Each measurement is a fresh subprocess: the peak resident set (``VmHWM``) is reset through ``/proc/self/clear_refs``
once the model and records are in memory, so what is measured is the capture alone. The model is a random-weight
Qwen2 that is deep and narrow (48 layers, d_model 128), so the stored residuals (3 kinds x 49 layers x 128 per site)
outweigh one batch's transient activations the way a hub model's do, at a small model's compute.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SHAPE = dict(hidden_size=128, intermediate_size=128, num_hidden_layers=48, num_attention_heads=2, num_key_value_heads=1)


def records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` synthetic rollout records in the tiny base's trace format, ~6 attempt lines ("(" sites) each."""
    from tasks.countdown.generate import ProblemSpec, generate_problems
    from tasks.countdown.prompts import make_prompt
    from tasks.countdown.synth import TraceStyle, write_trace

    rng = random.Random(seed)
    spec = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=20)
    problems = generate_problems(spec, n, seed=seed)
    style = TraceStyle(max_wrong=10, verdict_noise=0.2)
    return [
        {
            "prompt": make_prompt(p.numbers, p.target),
            "completion": write_trace(p, rng, style, spec.operators).completion,
            "numbers": list(p.numbers),
            "target": p.target,
            "problem": i,
            "kind": "greedy",
        }
        for i, p in enumerate(problems)
    ]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(model_dir: str, n: int, mode: str, batch: int) -> dict[str, float]:
    """In this process: capture ``n`` records (``mode`` stream or memory); peak host memory growth in bytes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analysis.capture import capture, capture_to_dir, read_capture

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    recs = records(n)
    with tempfile.TemporaryDirectory() as tmp:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status("VmRSS")
        if mode == "stream":
            capture_to_dir(model, tok, recs, Path(tmp) / "cap", batch)
            sites = read_capture(Path(tmp) / "cap").n_sites
        else:
            sites = len(capture(model, tok, recs, batch)["problem"])
        growth = _status("VmHWM") - before
    per_site = 3 * (SHAPE["num_hidden_layers"] + 1) * SHAPE["hidden_size"] * 2
    return {"growth_bytes": growth, "sites": sites, "activation_bytes": sites * per_site}


def _run(model_dir: Path, n: int, mode: str, batch: int) -> dict[str, float]:
    code = (
        "import json, sys\nfrom analysis.bench_capture import child\n"
        f"print('RESULT', json.dumps(child({str(model_dir)!r}, {n}, {mode!r}, {batch})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        raise RuntimeError(f"capture memory subprocess failed: {out.stderr[-2000:]}")
    return json.loads(line[0][len("RESULT ") :])


def capture_memory(tok: Any, records_small: int = 100, batch: int = 32) -> dict[str, float]:
    """Peak host memory growth of capture over ``records_small`` and 4x as many records, streamed and in memory."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(**SHAPE, vocab_size=len(tok), max_position_embeddings=1024, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    fig: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        Qwen2ForCausalLM(cfg).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        for mode in ("stream", "memory"):
            small, large = (_run(Path(tmp), n, mode, batch) for n in (records_small, 4 * records_small))
            fig[f"capture_{mode}_growth_mb"] = small["growth_bytes"] / 2**20
            fig[f"capture_{mode}_growth_4x_mb"] = large["growth_bytes"] / 2**20
            fig[f"capture_{mode}_4x_vs_1x"] = large["growth_bytes"] / max(small["growth_bytes"], 1)
        fig["capture_sites"], fig["capture_sites_4x"] = small["sites"], large["sites"]
        fig["capture_activations_4x_mb"] = large["activation_bytes"] / 2**20
    return fig
