"""Attention in float32 inside a bf16-autocast training pass: PyTorch's SDPA with its inputs upcast.

What: :func:`use_fp32_attention` registers ``sdpa_fp32`` with transformers' ``AttentionInterface`` (with SDPA's
mask) and switches a loaded model to it: transformers' own ``sdpa_attention_forward`` with autocast off and
query, key and value in float32, the output cast back. The GEMMs stay in bf16 under autocast.
Why: on CPU, PyTorch's flash-attention kernel is about twice as slow in bfloat16 as in float32 at the tiny model's
head size (32), most of it in the backward pass, and attention is a large share of the loss pass (figures in
docs/experiments.md). Float32 attention is at least as accurate, so the loss and gradients change only by bf16
rounding. transformers offers the registry, not the upcast; what is ours is the three-line wrapper. On GPUs flash
attention in bf16 is the fast path, so GPU runs never use this (train/run.py applies it on the CPU path only).
Remove when: PyTorch's CPU flash attention is as fast in bf16 as in float32 at small head sizes.
"""

from __future__ import annotations

from typing import Any

from train.cpu.versions import check_version

WRITTEN_FOR = {"transformers": "5.19"}
NAME = "sdpa_fp32"
_REMEDY = (
    "check transformers.integrations.sdpa_attention.sdpa_attention_forward, AttentionInterface and "
    "masking_utils.sdpa_mask, then run tests/train/test_attention.py"
)


def _sdpa_fp32(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> tuple[Any, Any]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    dtype = query.dtype
    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return out.to(dtype), weights


def register() -> str:
    """Register :data:`NAME` with transformers (attention function and its SDPA-style mask); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    check_version("transformers", WRITTEN_FOR["transformers"], "fp32_attention", _REMEDY)
    AttentionInterface.register(NAME, _sdpa_fp32)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_fp32_attention(model: Any) -> None:
    """Switch a loaded transformers model to float32 SDPA attention (weights and saved config unchanged)."""
    model.set_attn_implementation(register())
