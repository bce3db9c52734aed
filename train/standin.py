"""A Qwen2.5-0.5B *stand-in* with random weights: Qwen's architecture and tokenizer layout, none of its weights.

Why this exists: the hub presets (configs/qwen2.5-*.yaml) load Qwen/Qwen2.5-0.5B, which this offline machine cannot
download, so what only a Qwen-sized model exercises (a 151,936-row vocabulary and tied unembedding, 24 layers, 14
query / 2 KV heads, pad = eos = ``<|endoftext|>``, Qwen's special tokens and chat template, a bf16 checkpoint)
would first be met on a rented GPU. This module writes an HF directory with exactly that shape so ``make train
PRESET=qwen2.5-0.5b`` and ``make analyze APRESET=qwen2.5-0.5b`` can be rehearsed on it first, on a CPU (reduced
depth, ``--layers 2``) or on one GPU (full depth). Its text is noise: it says nothing about Qwen's behaviour.

* model: ``Qwen2ForCausalLM`` with Qwen2.5-0.5B's config.json numbers (:data:`QWEN25_05B`), seeded random weights,
  saved in bf16 like Qwen's checkpoints; ``config.json`` carries a ``standin`` entry saying what it is.
* tokenizer: ``Qwen2Tokenizer`` (Qwen's own pre-tokenizer: NFC, its split regex with single digits, byte-level),
  a BPE trained here on Countdown prompts and synthetic traces, its vocabulary filled with unused byte strings up
  to Qwen's 151,643 regular tokens so the 22 special tokens get Qwen's ids (``<|endoftext|>`` = 151643,
  ``<|im_start|>`` = 151644, ``<|im_end|>`` = 151645, ...), and a Qwen-style ChatML chat template. As in Qwen,
  the embedding has 271 more rows than the tokenizer has tokens.

``python -m train.standin --out checkpoints/models/qwen-standin [--layers 2] [--seed 0]`` builds it; the directory is
refused unless it is empty or an earlier stand-in.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from pathlib import Path
from typing import Any

# Qwen2.5-0.5B's architecture (the numbers of its config.json).
QWEN25_05B: dict[str, Any] = dict(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
    vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)  # fmt: skip
REGULAR_TOKENS = 151643  # Qwen2.5's byte-level BPE tokens; the special tokens follow from this id
# Qwen2.5's added tokens in id order from 151643 (the two tool-call tags are not special there either).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
NOT_SPECIAL = ("<tool_call>", "</tool_call>")
EOS = "<|endoftext|>"
DEFAULT_SYSTEM = "You are a helpful assistant."
# ChatML as Qwen writes it: a default system turn when the conversation opens without one.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
NOTE = "stand-in: random weights with Qwen2.5-0.5B's architecture and tokenizer layout (train/standin.py), not Qwen"


def corpus(problems: int = 400, seed: int = 0) -> list[str]:
    """Countdown prompts (both TinyZero templates) with synthetic traces, and chat-formatted turns: the BPE's text."""
    from tasks.countdown.generate import ProblemSpec, generate_problems
    from tasks.countdown.prompts import make_prompt
    from tasks.countdown.synth import TraceStyle, write_trace

    rng = random.Random(seed)
    spec = ProblemSpec(num_operands=(3, 4), operand_min=1, operand_max=99)
    style = TraceStyle(max_wrong=4, slip_rate=0.1, verdict_noise=0.2, reject_noise=0.1)
    texts = []
    for i, p in enumerate(generate_problems(spec, problems, seed=seed)):
        completion = write_trace(p, rng, style, spec.operators).completion
        texts.append(make_prompt(p.numbers, p.target, ("base", "qwen-instruct")[i % 2]) + completion + EOS)
        texts.append(f"<|im_start|>user\nReach {p.target} with {list(p.numbers)}.<|im_end|>\n")
    return texts


def _fillers(taken: set[str], alphabet: list[str], count: int) -> list[str]:
    """``count`` byte-level strings (2 then 3 bytes, in order) not in ``taken``: vocabulary no merge produces."""
    out: list[str] = []
    for n in (2, 3):
        for chars in itertools.product(alphabet, repeat=n):
            s = "".join(chars)
            if s not in taken:
                out.append(s)
                if len(out) == count:
                    return out
    raise ValueError(f"cannot find {count} filler tokens")  # unreachable: 3-byte strings alone number 16.7M


def build_tokenizer(texts: list[str], trained_tokens: int = 4096) -> Any:
    """A ``Qwen2Tokenizer`` with Qwen2.5's vocabulary layout: a BPE of ``trained_tokens`` learnt from ``texts``,
    fillers up to :data:`REGULAR_TOKENS`, then :data:`SPECIAL_TOKENS` at Qwen's ids, and :data:`CHAT_TEMPLATE`."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = trainers.BpeTrainer(vocab_size=trained_tokens, initial_alphabet=alphabet, show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    for s in _fillers(set(vocab), alphabet, REGULAR_TOKENS - len(vocab)):
        vocab[s] = len(vocab)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=None,
        model_max_length=QWEN25_05B["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
        errors="replace",
        split_special_tokens=False,
    )
    tok.add_tokens([AddedToken(t, special=t not in NOT_SPECIAL, normalized=False) for t in SPECIAL_TOKENS])
    extra = [t for t in SPECIAL_TOKENS if t != EOS and t not in NOT_SPECIAL]
    tok.add_special_tokens({"additional_special_tokens": extra})
    tok.chat_template = CHAT_TEMPLATE
    ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(range(REGULAR_TOKENS, REGULAR_TOKENS + len(SPECIAL_TOKENS))):
        raise AssertionError(f"special tokens landed at {ids[:3]}..., not Qwen's ids from {REGULAR_TOKENS}")
    return tok


def standin_config(layers: int = 24) -> Any:
    """Qwen2.5-0.5B's ``Qwen2Config`` with ``layers`` decoder layers, marked as a stand-in (``standin`` entry)."""
    from transformers import Qwen2Config

    eos = REGULAR_TOKENS  # <|endoftext|>: Qwen2.5 base's bos and eos
    return Qwen2Config(
        **{**QWEN25_05B, "num_hidden_layers": layers},
        max_window_layers=layers,
        use_sliding_window=False,
        bos_token_id=eos,
        eos_token_id=eos,
        standin=NOTE,
    )


def build_model(layers: int = 24, seed: int = 0) -> Any:
    """A ``Qwen2ForCausalLM`` of :func:`standin_config` with seeded random weights (float32)."""
    import torch
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(standin_config(layers))


def build_standin(out: str | Path, layers: int = 24, seed: int = 0, dtype: str = "bfloat16") -> Path:
    """Write the stand-in (model + tokenizer) to ``out`` with ``save_pretrained``; returns the directory.

    Refuses a non-empty ``out`` that is not an earlier stand-in, so a real model directory is never overwritten."""
    import torch

    out = Path(out)
    if layers < 1:
        raise ValueError(f"layers: expected >= 1 decoder layers, got {layers}")
    if dtype not in ("bfloat16", "float32"):
        raise ValueError(f"dtype: expected bfloat16 or float32, got {dtype!r}")
    if out.is_dir() and any(out.iterdir()):
        try:
            previous = json.loads((out / "config.json").read_text()).get("standin")
        except (OSError, ValueError):
            previous = None
        if previous is None:
            raise ValueError(f"out: {str(out)!r} is not empty and holds no earlier stand-in; give a new directory")
    tok = build_tokenizer(corpus(seed=seed))
    model = build_model(layers, seed).to(getattr(torch, dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.standin", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory to write (empty, new, or an earlier stand-in)")
    parser.add_argument("--layers", type=int, default=24, help="decoder layers (Qwen2.5-0.5B: 24; same width)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the tokenizer's corpus")
    parser.add_argument("--dtype", default="bfloat16", help="bfloat16 (as Qwen's checkpoints) or float32")
    args = parser.parse_args(argv)
    try:
        out = build_standin(args.out, args.layers, args.seed, args.dtype)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"stand-in (random weights, {args.layers} layers, Qwen2.5-0.5B's width and tokenizer layout): {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
