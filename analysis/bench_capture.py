"""Capture's peak host memory against the number of sites (a row of ``make bench``, analysis/bench.py).

The streamed capture (:func:`analysis.capture.capture_to_dir`) must hold one batch, not the whole capture: its peak
host memory growth at 4x the sites is compared with the in-memory capture's (:func:`analysis.capture.capture`,
which grows by the activations' bytes) at the same 4x, and with its own at 1x: flat means its peak grows by a small
share of the activation bytes the 3x more sites add (``capture_stream_added_share_4x``). What the streamed capture still
grows by is the tokenization of all texts (O(tokens), a few bytes per token against 3 x (layers + 1) x d_model x 2
per site) and the longest batch. Each measurement is a fresh subprocess: the peak resident set (``VmHWM``) is reset
through ``/proc/self/clear_refs`` once the model and records are in memory and a warm-up batch has run, so what is
measured is the capture alone. The model is a random-weight
Qwen2 that is deep and narrow (48 layers, d_model 256), so the stored residuals (3 kinds x 49 layers x 256 per site)
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

SHAPE = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=48, num_attention_heads=2, num_key_value_heads=1)
# the streamed runs' cap on a batch's float32 activations (~27 sites of this model): the 4x set's longest
# completions have more attempt lines than the 1x set's, and without a cap its largest batch would hold more
BATCH_BYTES = 4 << 20


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
    """In this process: capture ``n`` records (``mode`` stream or memory); peak host memory growth in bytes. The
    streamed capture runs with ``capture.max_batch_bytes`` = :data:`BATCH_BYTES`, as the hub presets do."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analysis.capture import capture, capture_to_dir
    from analysis.capture_files import read_capture

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    recs = records(n)
    # warm-up on the longest batch: lazily loaded kernels and the allocator's pool for one batch's transient
    # activations are not what grows with the number of sites
    capture(model, tok, sorted(recs, key=lambda r: len(r["prompt"]) + len(r["completion"]))[-batch:], batch)
    with tempfile.TemporaryDirectory() as tmp:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status("VmRSS")
        if mode == "stream":
            capture_to_dir(model, tok, recs, Path(tmp) / "cap", batch, max_batch_bytes=BATCH_BYTES)
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


def capture_memory(tok: Any, records_small: int = 60, batch: int = 32) -> dict[str, float]:
    """Peak host memory growth of the streamed capture over ``records_small`` and 4x as many records, and of the
    in-memory capture over 4x (the contrast: it grows by the activations' bytes)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(**SHAPE, vocab_size=len(tok), max_position_embeddings=1024, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    fig: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        Qwen2ForCausalLM(cfg).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        small, large = (_run(Path(tmp), n, "stream", batch) for n in (records_small, 4 * records_small))
        memory = _run(Path(tmp), 4 * records_small, "memory", batch)
    fig["capture_stream_growth_mb"] = small["growth_bytes"] / 2**20
    fig["capture_stream_growth_4x_mb"] = large["growth_bytes"] / 2**20
    fig["capture_stream_4x_vs_1x"] = large["growth_bytes"] / max(small["growth_bytes"], 1)
    fig["capture_memory_growth_4x_mb"] = memory["growth_bytes"] / 2**20
    fig["capture_stream_vs_memory_4x"] = large["growth_bytes"] / max(memory["growth_bytes"], 1)
    # flat: the share of the activation bytes added by 4x the sites that the streamed capture's peak grows by
    added = large["activation_bytes"] - small["activation_bytes"]
    fig["capture_stream_added_share_4x"] = (large["growth_bytes"] - small["growth_bytes"]) / max(added, 1)
    fig["capture_sites"], fig["capture_sites_4x"] = small["sites"], large["sites"]
    fig["capture_activations_4x_mb"] = large["activation_bytes"] / 2**20
    return fig
