"""Attention in float32 inside a bf16-autocast training pass: PyTorch's SDPA with its inputs upcast.

Why this exists: on CPU, PyTorch's flash-attention kernel is about twice as slow in bfloat16 as in float32 at the
tiny model's head size (32), and most of that is the backward pass. Measured on a 32 x 4 x 180 x 321 masked
attention (the lean loss pass's shape, 2-core Zen 4): bf16 forward 15.0 ms + backward 45.6 ms, fp32 10.3 + 21.0 ms;
on a real tiny-preset batch of 128 completions the whole loss pass fell from ~1.88 to ~1.64 s (attention was ~45%
of it, now ~33%). The GEMMs stay in bf16 under autocast, where they are faster. Float32 attention is at least as
accurate, so the loss and gradients change only by bf16 rounding.

transformers offers the registry (``AttentionInterface``), not the upcast; what is ours is the three-line wrapper.
On GPUs, flash attention in bf16 is the fast path, so presets there leave this off.
"""

from __future__ import annotations

from typing import Any

NAME = "sdpa_fp32"


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

    AttentionInterface.register(NAME, _sdpa_fp32)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_fp32_attention(model: Any) -> None:
    """Switch a loaded transformers model to float32 SDPA attention (weights and saved config unchanged)."""
    model.set_attn_implementation(register())
