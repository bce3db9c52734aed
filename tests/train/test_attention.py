"""Float32 attention inside a bf16-autocast pass (train/cpu/attention.py) on a tiny random Qwen2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tasks.config import ConfigError
from train.config import load_train_config
from train.cpu.attention import NAME, use_fp32_attention


def loss_and_grads(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, bf16: bool = True
) -> tuple[torch.Tensor, list]:
    """Mean next-token loss over unpadded positions and its gradient, under bf16 autocast or in float32."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids, attention_mask=mask).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
    )
    loss = (loss * mask[:, 1:].flatten()).sum() / mask[:, 1:].sum()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_fp32_attention_runs_sdpa_in_float32_and_matches_the_fp32_reference(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 200, (6, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # a left-padded row: the explicit-mask path
    ref_loss, ref_grads = loss_and_grads(AutoModelForCausalLM.from_pretrained(model_dir), ids, mask, bf16=False)

    bf16 = AutoModelForCausalLM.from_pretrained(model_dir)
    fp32 = AutoModelForCausalLM.from_pretrained(model_dir)
    use_fp32_attention(fp32)
    assert fp32.config._attn_implementation == NAME

    dtypes: list[torch.dtype] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        # autocast casts inside the dispatcher, so the dtype the kernel ran in shows in its output
        out = sdpa(*args, **kwargs)
        dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    bf16_loss, bf16_grads = loss_and_grads(bf16, ids, mask)
    assert dtypes == [torch.bfloat16] * 2  # autocast: both layers' attention in bf16
    dtypes.clear()
    fp32_loss, fp32_grads = loss_and_grads(fp32, ids, mask)
    assert dtypes == [torch.float32] * 2

    # same loss and gradient up to bf16 rounding of the GEMMs; attention in fp32 is no further from fp32
    assert fp32_loss.item() == pytest.approx(ref_loss.item(), rel=2e-2)
    err = lambda grads: sum((a - b).norm() ** 2 for a, b in zip(grads, ref_grads, strict=True)) ** 0.5  # noqa: E731
    scale = sum(g.norm() ** 2 for g in ref_grads) ** 0.5
    assert err(fp32_grads) / scale < 0.05
    assert err(fp32_grads) <= err(bf16_grads) * 1.05


def test_saved_checkpoint_keeps_a_loadable_attention_setting(model_dir: Path, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    use_fp32_attention(model)
    model.save_pretrained(tmp_path / "saved")
    assert NAME not in (tmp_path / "saved" / "config.json").read_text()
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert again.config._attn_implementation == "sdpa"


def test_config_field_and_tiny_default() -> None:
    assert load_train_config("tiny").grpo.fp32_attention is True
    assert load_train_config("qwen2.5-0.5b").grpo.fp32_attention is False
    with pytest.raises(ConfigError, match="fp32_attention"):
        load_train_config("tiny", ["grpo.fp32_attention=maybe"])
