"""The offline tiny base model: a digit-level tokenizer, a small Qwen2, and pre-training on synthetic traces.

Why this exists: the tiny preset needs a base model that already writes the structured R1-Zero format (attempt
lines with "(not T)" / "(this works)" verdicts), does the arithmetic of its attempts reasonably well, and checks
them *imperfectly*, so that RL has verification to improve. No hub model can be downloaded here, so we build
one. A tokenizer with one token per digit learns arithmetic far better than whole-number tokens, and ~1M
parameters (4 layers x 128) reach useful behaviour in minutes on 2 cores (docs/experiments.md).

The tokenizer is a byte-level BPE (like Qwen's) whose pre-tokenizer isolates every digit (as Qwen2's does),
trained on the corpus itself, so the TinyZero prompt's words become single tokens. Pre-training uses
``transformers.Trainer`` for a fixed number of steps (reproducible, unlike a wall-time budget), and the result
is saved with ``save_pretrained`` as a plain HF model directory that AutoModelForCausalLM, AutoTokenizer and
vLLM load.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tasks.config import config_hash, dump_config, to_dict
from tasks.countdown.generate import Problem
from tasks.countdown.search_trace import SearchStyle, write_search_trace
from tasks.countdown.synth import TraceStyle, write_trace
from train.base_pretrain import pretrain, prime, priming
from train.base_tokenizer import EOS, build_tokenizer, check_reload
from train.precision import resolve


@dataclass(frozen=True)
class BaseConfig:
    """How the tiny base is built: tokenizer, architecture, corpus and pre-training schedule."""

    vocab_size: int = 512
    # > 0: the whole numbers 0..number_tokens-1 are one token each, so "is the stated value the target?" is one
    # token matched against another. 0: digits one by one (as Qwen2's own tokenizer splits them)
    number_tokens: int = 0
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 1024
    corpus_traces: int = 40_000
    trace: TraceStyle = field(
        default_factory=lambda: TraceStyle(max_wrong=4, slip_rate=0.05, verdict_noise=0.3, reject_noise=0.1)
    )
    # A corpus whose checking is real (tasks/countdown/search_trace.py) instead of ``trace``'s: attempt lines from
    # the model's own random search, verdicts that follow the arithmetic, few traces that verify. None: ``trace``.
    search: SearchStyle | None = None
    # > 1: the loss on the verdict word (the token after "(") weighs this much more than any other token. The search
    # corpus writes verdicts in few traces, so the check itself gets few examples; a heavier verdict loss teaches
    # the comparison without changing how often a trace verifies (the "(" and the header are weighed as usual).
    verdict_loss_weight: float = 1.0
    # > 0 (search corpus only): first pre-train this many steps on traces that verify at ``prime_verdict_rate``,
    # then ``steps`` on the corpus as configured. The check is learned where it is common, the habit set where it
    # is rare: a base that knows how to verify but seldom does, like a hub model that saw much checking elsewhere.
    prime_steps: int = 0
    prime_verdict_rate: float = 0.5
    # the priming phase's learning rate (None: ``learning_rate``). A check learned in priming is erased by the
    # rare corpus at the priming rate; a lower ``learning_rate`` after it sets the habit and keeps the check
    prime_learning_rate: float | None = None
    # the priming corpus's slips (None: ``search``'s): more slips that state the target make "stated == target" a
    # worse guess of the verdict than the arithmetic, so the check must be learned from the line's operands
    prime_slip_rate: float | None = None
    prime_slip_target_share: float | None = None
    steps: int = 2500
    batch_size: int = 8
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    # auto: bf16 autocast where the CPU/GPU computes bf16 natively, float32 elsewhere (train/precision.py). An fp32
    # base and a bf16 base are different models: the resolved value is part of the cache key and of base_dir
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # > 0: batch traces of similar token length (see LengthBucketSampler): pools of this many batches are sorted by
    # length and cut into batches, then all batches are shuffled. Same traces, same steps, less padding to compute
    # (a random batch of 8 pads to 318 tokens for a mean of 267 on the tiny corpus). 0: random batches.
    length_buckets: int = 0
    # attention in float32 inside the bf16 autocast (train/cpu/attention.py): the same model, a faster pre-training pass
    fp32_attention: bool = False
    seed: int = 0


def corpus(problems: list[Problem], cfg: BaseConfig, operators: tuple[str, ...], template: str = "base") -> list[str]:
    """Prompt + synthetic completion + EOS for ``cfg.corpus_traces`` traces drawn over ``problems``."""
    from tasks.countdown.prompts import make_prompt

    rng = random.Random(cfg.seed)
    texts = []
    for _ in range(cfg.corpus_traces):
        p = rng.choice(problems)
        tr = (
            write_trace(p, rng, cfg.trace, operators)
            if cfg.search is None
            else write_search_trace(p, rng, cfg.search, operators)
        )
        texts.append(make_prompt(p.numbers, p.target, template) + tr.completion + EOS)
    return texts


def build_model(cfg: BaseConfig, tokenizer: Any) -> Any:
    """A randomly initialised Qwen2ForCausalLM of the configured size (tied embeddings)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(cfg.seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(config)


def _resolve(cfg: BaseConfig) -> BaseConfig:
    """``cfg`` with its precision resolved for the CPU, where the tiny base is always pre-trained (a no-op on a config
    resolved at the door, :func:`train.config.resolve_precision`)."""
    if cfg.precision != "auto":
        return cfg
    return dataclasses.replace(cfg, precision=resolve(cfg.precision, "cpu", "base.precision"))


def _base_key(operators: tuple[str, ...], cfg: BaseConfig, template: str) -> str:
    """The cache key of a base: its config (precision resolved), the template and the operators."""
    base = to_dict(_resolve(cfg))
    if base.get("search") is None:  # bases built before the field existed keep their key
        base.pop("search", None)
    if base.get("verdict_loss_weight") == 1.0:
        base.pop("verdict_loss_weight", None)
    if not base.get("number_tokens"):
        base.pop("number_tokens", None)
    for name in ("prime_learning_rate", "prime_slip_rate", "prime_slip_target_share"):
        if base.get(name) is None:
            base.pop(name, None)
    if not base.get("prime_steps"):
        base.pop("prime_steps", None)
        base.pop("prime_verdict_rate", None)
    return config_hash({"base": base, "template": template, "operators": list(operators)})


def base_is_built(out_dir: str | Path, operators: tuple[str, ...], cfg: BaseConfig, template: str = "base") -> bool:
    """Whether ``out_dir`` holds a complete base built from exactly these inputs (so ``build_base`` reuses it)."""
    info = Path(out_dir) / "base.json"
    return info.is_file() and json.loads(info.read_text()).get("config_hash") == _base_key(operators, cfg, template)


def build_base(
    out_dir: str | Path, problems: list[Problem], operators: tuple[str, ...], cfg: BaseConfig, template: str = "base"
) -> Path:
    """Build the tiny base into ``out_dir`` (cached: a complete directory with the same inputs is reused).

    The cache key covers the base config, the prompt ``template`` its corpus is written in and the operators:
    a base pre-trained on one template has never seen another and answers it with end-of-text. Interrupted
    builds resume from the Trainer's last checkpoint in ``out_dir``.work (only when it was building the same
    inputs); the final directory is renamed into place only when complete.
    """
    out, cfg = Path(out_dir), _resolve(cfg)
    key = _base_key(operators, cfg, template)
    if base_is_built(out, operators, cfg, template):
        return out
    if out.exists():
        raise FileExistsError(
            f"{out} holds a base built from another config (base.*, template or data.operators differ); "
            "delete it or set base_dir to another path"
        )
    t0 = time.perf_counter()
    work = out.with_name(out.name + ".work")
    stamp = work / "inputs.key"
    if work.is_dir() and (not stamp.is_file() or stamp.read_text() != key):
        print(f"{work}: an interrupted build of other inputs; starting this one from scratch")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    texts = corpus(problems, cfg, operators, template)
    primer = priming(cfg)
    prime_texts = corpus(problems, primer, operators, template) if primer else []
    tokenizer = build_tokenizer(texts + prime_texts, cfg.vocab_size, cfg.number_tokens)
    model = build_model(cfg, tokenizer)
    check_reload(tokenizer, model.config, texts[:200], work / "tokenizer")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny base: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, {len(texts)} traces")
    if cfg.fp32_attention:
        from train.cpu import use_fp32_attention

        use_fp32_attention(model)
    if primer:
        prime(model, tokenizer, prime_texts, primer, work / "primed")
    stats = pretrain(model, tokenizer, texts, cfg, work / "trainer")
    if cfg.fp32_attention:
        model.set_attn_implementation("sdpa")  # what the saved config.json names: loaders need no registration
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    dump_config(cfg, staging / "base_config.yaml")
    meta = {
        "config_hash": key,
        "template": template,
        "operators": list(operators),
        "parameters": n_params,
        "seconds": time.perf_counter() - t0,
        **stats,
    }
    (staging / "base.json").write_text(json.dumps(meta, indent=2) + "\n")
    staging.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    return out
