"""Greedy and sampled generations of one checkpoint on a fixed held-out problem set.

vLLM where it is installed (the same in-process CPU engine the trainer uses), transformers ``generate``
otherwise, with a one-line notice. Records keep the completion text, its token ids and whether it was cut at the
token limit; the capture stage re-tokenizes prompt + completion with offsets, so nothing downstream depends on
which engine produced them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.config import RolloutSettings
from tasks.countdown.generate import Problem
from tasks.countdown.prompts import make_prompt
from tasks.countdown.reward import breakdown
from train.precision import inference_dtype


def choose_engine(requested: str) -> str:
    """``vllm`` or ``hf`` for ``rollout.engine``; ``auto`` picks vLLM when importable and says so when it cannot."""
    from train.rollout_engine import vllm_available

    if requested == "hf":
        return "hf"
    if vllm_available():
        return "vllm"
    if requested == "vllm":
        raise RuntimeError("rollout.engine=vllm but vLLM is not importable here; install the cpu/gpu extra or use hf")
    print("analysis: vLLM not installed, rollouts use transformers generate (rollout.engine=hf)")
    return "hf"


def _vllm(model_dir: Path, prompts: list[str], s: RolloutSettings, precision: str) -> tuple[list, list]:
    from vllm import SamplingParams

    def unpack(outs: Sequence[Any]) -> list[list[tuple[str, list[int], bool]]]:
        return [[(o.text, list(o.token_ids), o.finish_reason == "length") for o in out.outputs] for out in outs]

    from train.rollout_engine import offline_llm

    with offline_llm(model_dir, s.seed, inference_dtype(precision), s.gpu_memory_share) as llm:
        greedy = llm.generate(
            prompts, SamplingParams(n=1, temperature=0.0, max_tokens=s.max_new_tokens), use_tqdm=False
        )
        if not s.samples:
            return unpack(greedy), []
        params = SamplingParams(n=s.samples, temperature=s.temperature, max_tokens=s.max_new_tokens)
        return unpack(greedy), unpack(llm.generate(prompts, params, use_tqdm=False))


def _hf(model_dir: Path, prompts: list[str], s: RolloutSettings, device: str, precision: str) -> tuple[list, list]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.rollout_engine import hf_sample

    torch.manual_seed(s.seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=inference_dtype(precision)).to(device)

    def run(n: int, temperature: float) -> list[list[tuple[str, list[int], bool]]]:
        texts, trunc = hf_sample(model, tok, prompts, n, temperature, s.max_new_tokens, bf16=precision == "bf16")
        return [
            [(t, tok(t, add_special_tokens=False).input_ids, c) for t, c in zip(ts, cs, strict=True)]
            for ts, cs in zip(texts, trunc, strict=True)
        ]

    return run(1, 0.0), run(s.samples, s.temperature) if s.samples else []


def generate_rollouts(
    model_dir: str | Path,
    problems: Sequence[Problem],
    s: RolloutSettings,
    template: str,
    engine: str,
    device: str,
    precision: str = "auto",
) -> list[dict[str, Any]]:
    """One record per completion: problem index, kind (greedy/sampled), text, token ids, truncation, reward."""
    problems = list(problems)[: s.problems]
    prompts = [make_prompt(p.numbers, p.target, template) for p in problems]
    if engine == "vllm":
        greedy, sampled = _vllm(Path(model_dir), prompts, s, precision)
    else:
        greedy, sampled = _hf(Path(model_dir), prompts, s, device, precision)
    records = []
    for kind, outs in (("greedy", greedy), ("sampled", sampled)):
        for i, samples in enumerate(outs):
            p = problems[i]
            for j, (text, ids, cut) in enumerate(samples):
                b = breakdown(text, p.numbers, p.target)
                records.append(
                    {
                        "problem": i,
                        "numbers": list(p.numbers),
                        "target": p.target,
                        "kind": kind,
                        "sample": j,
                        "prompt": prompts[i],
                        "completion": text,
                        "token_ids": ids,
                        "truncated": cut,
                        "success": bool(b.correct),
                        "has_answer": bool(b.has_answer),
                    }
                )
    return records
