"""A checkpoint is checked before any heavy work: a file missing, unreadable, or weights that are empty partitions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from analysis.checkpoint_stages import CheckpointError, check_checkpoint


def _tiny_qwen(path: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    (path / "tokenizer.json").write_text("{}")  # only its presence is checked here
    return path


def test_zero3_partitions_saved_without_gathering_are_refused(tmp_path: Path) -> None:
    """Under ZeRO-3 a main-process save_pretrained writes each rank's empty partitions: every shape has a 0. Such a
    step_0 must be refused by name, not loaded as a model of empty tensors."""
    good = _tiny_qwen(tmp_path / "good")
    check_checkpoint(good)
    bad = _tiny_qwen(tmp_path / "bad")
    (weights,) = bad.glob("*.safetensors")
    tensors = {k: torch.empty(0, dtype=v.dtype) for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"empty tensors \(first: .+\); weights saved from ZeRO-3 partitions"):
        check_checkpoint(bad)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = _tiny_qwen(tmp_path / "m")
    (path / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json: missing"):
        check_checkpoint(path)
