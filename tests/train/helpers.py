"""Generation and capability helpers only the tests use: sampling a saved checkpoint with a plain vLLM engine or
with transformers (one call each), and whether vLLM's oneDNN GEMM can be built on this CPU."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from train.rollout_engine import hf_sample, offline_llm


def generate_vllm(
    model_dir: str | Path,
    prompts: Sequence[str],
    n: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 64,
    seed: int = 0,
) -> list[list[str]]:
    """``n`` completions (text only) per prompt from a checkpoint directory with a plain ``vllm.LLM``."""
    from vllm import SamplingParams

    with offline_llm(model_dir, seed) as llm:
        params = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens)
        outs = llm.generate(list(prompts), params, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outs]


def generate_hf(
    model_dir: str | Path,
    prompts: Sequence[str],
    n: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 64,
    seed: int = 0,
) -> list[list[str]]:
    """The transformers equivalent of :func:`generate_vllm` (same signature, same return)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return hf_sample(model, tok, prompts, n, temperature, max_tokens)[0]


def onednn_gemm_available(dtype: Any) -> bool:
    """Whether vLLM's packed oneDNN GEMM can be built for ``dtype`` on this CPU (else :func:`_live_gemm` falls back)."""
    import torch
    from vllm import _custom_ops as ops

    if not getattr(ops, "_supports_onednn", False):
        return False
    try:
        ops.create_onednn_mm(torch.zeros(64, 32, dtype=dtype).t(), 32)
    except RuntimeError:
        return False
    return True
