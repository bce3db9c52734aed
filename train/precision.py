"""Which floating-point precision each stage computes in: bf16 where the hardware has it natively, else float32.

Why this exists: bf16 autocast is the fast path on GPUs with bf16 and on CPUs whose oneDNN computes bf16 natively
(AVX512-BF16 or AMX). On every other x86-64 CPU (AVX2 only: most cloud VMs and many laptops) PyTorch *emulates*
bf16, and a bf16 matmul is one to two orders of magnitude slower than the same matmul in float32. So every stage
has a ``precision: auto | bf16 | fp32`` setting; ``auto`` (the default) resolves here, from what PyTorch reports
about the device, and the resolved value is what the run records (config.yaml, state.json, bench results).

For *inference* (vLLM rollouts, analysis passes) "bf16" means each library's ``auto`` (transformers: the
checkpoint's dtype; vLLM: the checkpoint's dtype, float32 checkpoints such as the tiny base downcast to bf16),
and "fp32" means float32 whatever the checkpoint stores (:func:`inference_dtype`). vLLM's downcast is why the
tiny preset's rollouts were emulated bf16 on AVX2-only CPUs (generation ~2-3x slower) before this setting.

The capability checks are PyTorch's own (``torch.backends.cpu.get_cpu_capability()``,
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` together with ``torch.cpu._is_avx512_bf16_supported()`` /
``_is_amx_tile_supported()``, ``torch.cuda.is_bf16_supported()``): oneDNN's flag alone is also true on AVX512 CPUs
without bf16 instructions, where bf16 is converted, not computed (:func:`native_cpu_bf16`). oneDNN's check follows
``ONEDNN_MAX_CPU_ISA``, so ``make ... CPU_ISA=avx2`` rehearses an AVX2-only machine on a newer CPU (Makefile).
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any, Literal

from tasks.hardware import cpu_model

Precision = Literal["auto", "bf16", "fp32"]
Resolved = Literal["bf16", "fp32"]
_ANNOUNCED: set[tuple[str, ...]] = set()


@functools.cache
def hardware(device: str = "cpu") -> dict[str, Any]:
    """What decides the precision on ``device`` ("cpu" or "cuda"): recorded beside every run's and bench's figures."""
    import torch

    onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    avx512_bf16 = bool(torch.cpu._is_avx512_bf16_supported())
    amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    info: dict[str, Any] = {
        "device": device,
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_onednn_bf16": onednn,
        "cpu_native_bf16": native_cpu_bf16(onednn, avx512_bf16, amx),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["native_bf16"] = bool(torch.cuda.is_bf16_supported())
    else:
        info["native_bf16"] = info["cpu_native_bf16"]
    return info


def native_cpu_bf16(onednn_bf16: bool, avx512_bf16: bool, amx: bool) -> bool:
    """Whether this CPU computes bf16 in hardware: oneDNN's bf16 kernels are enabled (false under an AVX2 cap) *and*
    the CPU has the AVX512-BF16 or AMX instructions. oneDNN alone is not enough: it reports bf16 support on every
    AVX512BW CPU (Skylake-SP to Ice Lake Xeons) and there converts to float32 around each operation, slower than
    float32 throughout."""
    return onednn_bf16 and (avx512_bf16 or amx)


def follow_isa_cap() -> bool:
    """Under ``ATEN_CPU_CAPABILITY=avx2`` (``make ... CPU_ISA=avx2``, a rehearsal of an AVX2-only CPU) also make
    ``torch.cpu._is_avx512_supported`` / ``_is_avx512_bf16_supported`` answer False, so that vLLM's CPU platform
    loads its AVX2 kernels (``vllm._C_AVX2``) as it would on such a CPU: it reads those two functions, not the
    capability PyTorch dispatches on. Call before vLLM is imported; returns whether it applied."""
    import os

    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() not in ("avx2", "default"):
        return False
    import torch

    torch.cpu._is_avx512_supported = lambda: False
    torch.cpu._is_avx512_bf16_supported = lambda: False
    return True


def resolve(requested: str, device: str = "cpu", field: str = "precision") -> Resolved:
    """``auto | bf16 | fp32`` -> ``bf16 | fp32`` on ``device``; prints the choice once per field.

    ``auto`` is bf16 where the device computes it natively, else fp32. A forced ``bf16`` where it is emulated runs,
    after one warning with the slowdown measured on this machine.
    """
    if requested not in ("auto", "bf16", "fp32"):
        raise ValueError(f"{field}: expected one of ['auto', 'bf16', 'fp32'], got {requested!r}")
    hw = hardware("cuda" if device.startswith("cuda") else "cpu")
    resolved: Resolved = ("bf16" if hw["native_bf16"] else "fp32") if requested == "auto" else requested  # type: ignore[assignment]
    where = hw.get("gpu") or f"CPU {hw['cpu_capability']} ({hw['cpu_model'] or 'unknown model'})"
    native = "native bf16" if hw["native_bf16"] else "no native bf16"
    chosen = f"auto -> {resolved}" if requested == "auto" else f"{resolved} (set)"
    _once((field, requested, resolved), f"{field}: {chosen} on {where}, {native}")
    if resolved == "bf16" and not hw["native_bf16"]:
        slow = bf16_slowdown() if device == "cpu" else None
        measured = f" (a matmul here: {slow:.0f}x slower than float32)" if slow else ""
        _once(
            (field, "emulated"),
            f"WARNING {field}=bf16: this {where} has no native bf16, PyTorch emulates it{measured}; "
            f"{field}=auto or fp32 runs at full speed",
            err=True,
        )
    return resolved


def resolved(value: str, field: str) -> Resolved:
    """A precision that was resolved at the door (:func:`train.config.resolve_precision`, or :func:`resolve` once by
    the stage's entry point); ``auto`` here is a caller that skipped it, and would be resolved twice."""
    if value not in ("bf16", "fp32"):
        raise ValueError(f"{field}: expected a resolved precision (bf16 or fp32), got {value!r}; resolve it first")
    return value  # type: ignore[return-value]


def _once(key: tuple[str, ...], message: str, err: bool = False) -> None:
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        print(message, file=sys.stderr if err else sys.stdout, flush=True)


@functools.cache
def bf16_slowdown(n: int = 256, repeats: int = 3) -> float:
    """Time of an ``n``-cubed bf16 matmul over the float32 one on this CPU (~0.3-0.5 native, ~100 emulated)."""
    import torch

    def best(dtype: Any) -> float:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    return best(torch.bfloat16) / max(best(torch.float32), 1e-9)


def inference_dtype(resolved: str) -> str:
    """The dtype a checkpoint is loaded in for inference (vLLM, from_pretrained): "float32" under fp32, "auto" (the
    checkpoint's own) under bf16."""
    return "float32" if resolved == "fp32" else "auto"
