"""TRL's trainer on a colocated vLLM engine that computes no per-token log-probs of the sampled tokens.

What: :func:`without_sampler_logprobs` wraps ``trainer.vllm_generation.generate`` so that, when the engine
returned no log-probs, each sampled token gets a NaN ("not computed") in their place.
Why: with TRL's vLLM importance-sampling correction off nothing reads those log-probs, and on CPU computing them
is a noticeable share of every rollout
(``train.rollout_engine.grpo_vllm_kwargs(sampler_logprobs=False)`` asks for none).
But TRL 1.16's ``GRPOTrainer`` indexes them unconditionally; they end up only in ``sampling_per_token_logps``,
which TRL reads for that correction alone.
Remove when: TRL accepts ``logprobs=None`` in its vLLM generation kwargs.
"""

from __future__ import annotations

from typing import Any

from train.cpu.versions import check_version

WRITTEN_FOR = {"trl": "1.16"}
_REMEDY = (
    "check whether GRPOTrainer still indexes the log-probs that VLLMGeneration.generate returns when none were asked "
    "for (drop this patch if not), then run tests/train/test_rollout.py"
)


def without_sampler_logprobs(vllm_generation: Any) -> None:
    """Let TRL's trainer run on a colocated engine asked for no log-probs (``grpo_vllm_kwargs(sampler_logprobs=
    False)``): TRL 1.16 indexes them unconditionally, so each sampled token gets a NaN ("not computed") instead.
    They end up only in ``sampling_per_token_logps``, which TRL reads for its importance-sampling correction."""
    check_version("trl", WRITTEN_FOR["trl"], "sampler_logprobs", _REMEDY)
    generate = vllm_generation.generate

    def generate_without_logprobs(*args: Any, **kwargs: Any) -> Any:
        prompt_ids, completion_ids, logprobs, token_ids = generate(*args, **kwargs)
        if logprobs is None:
            logprobs = [[(None,)] * len(ids) for ids in completion_ids]
        return prompt_ids, completion_ids, logprobs, token_ids

    vllm_generation.generate = generate_without_logprobs
