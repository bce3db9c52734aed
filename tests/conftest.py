"""Fixtures every test directory shares. The analysis tests add their own (tests/analysis/conftest.py: models with
the tiny base's digit tokenizer and a Qwen2-style tokenizer, trained on synthetic traces)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Qwen2 with a byte-level BPE tokenizer, both built by the same code as the tiny base:
    2 layers, hidden 128 and 4 heads / 2 KV heads (head_dim 32, the least vLLM's CPU attention takes)."""
    import torch

    from train.base import BaseConfig, build_model
    from train.base_tokenizer import build_tokenizer

    out = tmp_path_factory.mktemp("tiny-qwen2")
    texts = ["the quick brown fox jumps over the lazy dog", "count down to reach a target number 42 with + - * /"]
    tok = build_tokenizer(texts * 4, 300)
    cfg = BaseConfig(
        hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4, num_kv_heads=2, max_position_embeddings=256
    )
    torch.manual_seed(0)
    build_model(cfg, tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out
