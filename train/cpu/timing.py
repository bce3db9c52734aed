"""Wall time of TRL's generation and weight sync, logged per step as ``time/generation_s`` / ``time/weight_sync_s``.

What: :func:`time_generation` wraps the trainer's ``_generate_single_turn`` and its vLLM engine's ``sync_weights``
so that each call logs its wall time through TRL's own per-step metric hook (``_log_metric``), into the metrics
that ``metrics.jsonl`` and TensorBoard receive.
Why: TRL 1.16 times these only for wandb (``profiling_context``); ``make bench`` splits a CPU GRPO step into
generation, weight sync, reward and the rest from these metrics. All three names are TRL internals.
Remove when: TRL logs generation and weight-sync time in its own metrics.
"""

from __future__ import annotations

import time
from typing import Any

from train.cpu.versions import check_version

WRITTEN_FOR = {"trl": "1.16"}
_REMEDY = (
    "check that GRPOTrainer still has _generate_single_turn and _log_metric and VLLMGeneration.sync_weights, "
    "then run tests/train/test_e2e.py (its metrics name time/generation_s)"
)


def timed(trainer: Any, owner: Any, method: str, metric: str) -> None:
    """Wrap ``owner.method`` so each call logs its wall time as ``metric`` through TRL's own metric hook."""
    if owner is None:
        return
    original = getattr(owner, method)

    def timed_call(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = original(*args, **kwargs)
        trainer._log_metric(metric, time.perf_counter() - t)
        return out

    setattr(owner, method, timed_call)


def time_generation(trainer: Any) -> None:
    """Log each step's generation and (with vLLM) weight-sync wall time; the sync runs inside generation."""
    check_version("trl", WRITTEN_FOR["trl"], "timing", _REMEDY)
    timed(trainer, trainer, "_generate_single_turn", "time/generation_s")
    timed(trainer, getattr(trainer, "vllm_generation", None), "sync_weights", "time/weight_sync_s")
