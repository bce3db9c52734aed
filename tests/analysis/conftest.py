"""Tiny random-weight models for the analysis tests, built locally: one with the project's digit tokenizer
(trained on synthetic traces, as the tiny base is) and one with a Qwen2-style byte-level BPE tokenizer."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.countdown.generate import ProblemSpec, generate_problems
from tasks.countdown.prompts import make_prompt
from tasks.countdown.synth import TraceStyle, write_trace

# Qwen2's pre-tokenizer split pattern (from its tokenizer.json), so " (" is one token and "not" another.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def traces(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    spec = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=20, operators=("+", "-", "*", "/"))
    problems = generate_problems(spec, 60, seed=seed)
    style = TraceStyle(max_wrong=3, slip_rate=0.1, verdict_noise=0.2)
    out = []
    for _ in range(n):
        p = rng.choice(problems)
        out.append(make_prompt(p.numbers, p.target) + write_trace(p, rng, style, spec.operators).completion)
    return out


def qwen_like_tokenizer(texts: list[str], vocab_size: int = 600) -> Any:
    """A byte-level BPE with Qwen2's regex pre-tokenizer, trained on ``texts`` (numbers split into digits)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>", clean_up_tokenization_spaces=False
    )


def random_qwen2(tokenizer: Any, hidden: int = 64, layers: int = 3, tied: bool = True, seed: int = 0) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=1024,
        tie_word_embeddings=tied,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return traces()


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    """A random-weight Qwen2 with a Qwen-style tokenizer, saved and reloaded through from_pretrained."""
    out = tmp_path_factory.mktemp("qwen_like")
    tok = qwen_like_tokenizer(corpus)
    random_qwen2(tok, tied=False).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def digit_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    """A random-weight Qwen2 with the tiny base's digit tokenizer, saved and reloaded through from_pretrained."""
    from train.base_tokenizer import build_tokenizer

    out = tmp_path_factory.mktemp("digit")
    tok = build_tokenizer(corpus, 400)
    random_qwen2(tok, tied=True).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def load(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The stand-in device, and a hardware report for it (precision resolution asks torch.cuda, which a CPU build
    has not)."""
    import train.precision as precision

    real = precision.hardware
    gpu = {"gpu": "stand-in cuda:0 (tests/fake_device.py)", "native_bf16": False}
    monkeypatch.setattr(
        precision, "hardware", lambda d="cpu": {**real("cpu"), **gpu} if d.startswith("cuda") else real(d)
    )
    from tests.fake_device import FakeCuda

    with FakeCuda():
        yield
