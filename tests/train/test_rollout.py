"""train.rollout_engine and the CPU colocate patch (train/cpu/vllm_colocate.py): engine choice, GRPOConfig kwargs, real
GRPO steps with vLLM colocate (CPU) and with HF.

The model is the shared tiny random Qwen2 (tests/conftest.py), saved with ``save_pretrained``.
The vLLM tests start real engines (a few seconds each for this model) and are marked slow.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.train.helpers import generate_hf, generate_vllm, onednn_gemm_available
from train import cpu, rollout_engine
from train.cpu import vllm_colocate

PROMPTS = ["the quick brown", "count down to", "reach a target", "42 with + - * /"]


def length_reward(completions: list[str], **_: Any) -> list[float]:
    return [len(c) / 50 for c in completions]


def grpo_trainer(model_dir: Path, out: Path, rollout_kwargs: dict[str, Any]) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(out),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        learning_rate=5e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=0,
        **rollout_kwargs,
    )
    return GRPOTrainer(
        model=str(model_dir),
        reward_funcs=length_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
    )


def test_choose_rollout_explicit_and_invalid() -> None:
    assert rollout_engine.choose_rollout("hf") == "hf"
    with pytest.raises(ValueError, match="auto, vllm or hf"):
        rollout_engine.choose_rollout("sglang")


def test_choose_rollout_without_vllm(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(rollout_engine, "vllm_available", lambda: False)
    assert rollout_engine.choose_rollout("auto") == "hf"
    assert "make setup" in capsys.readouterr().out  # the fallback is announced, never silent
    with pytest.raises(RuntimeError, match="make setup"):
        rollout_engine.choose_rollout("vllm")


def test_grpo_vllm_kwargs_per_device() -> None:
    gpu_server = SimpleNamespace(vllm_mode="server", server_host="10.0.0.2", server_port=8001, server_timeout_s=60.0)
    kw = rollout_engine.grpo_vllm_kwargs("cuda", gpu_server)
    assert kw["vllm_mode"] == "server" and (kw["vllm_server_host"], kw["vllm_server_port"]) == ("10.0.0.2", 8001)
    gpu_colocate = SimpleNamespace(vllm_mode="colocate", gpu_memory_utilization=0.4, tensor_parallel_size=2)
    kw = rollout_engine.grpo_vllm_kwargs("cuda", gpu_colocate)
    assert kw["vllm_gpu_memory_utilization"] == 0.4 and kw["vllm_tensor_parallel_size"] == 2
    # GPUs run TRL unpatched: its vLLM log-probs stay on (train.cpu.without_sampler_logprobs is CPU-only)
    assert (
        "logprobs"
        not in rollout_engine.grpo_vllm_kwargs("cuda", gpu_colocate, sampler_logprobs=False)["generation_kwargs"]
    )
    with pytest.raises(ValueError, match="colocate on CPU"):
        rollout_engine.grpo_vllm_kwargs("cpu", gpu_server)


def test_choose_rollout_auto_picks_vllm_here() -> None:
    assert rollout_engine.vllm_available()
    assert rollout_engine.choose_rollout("auto") == "vllm"
    assert cpu.enable()  # idempotent: a second application changes nothing
    import trl.generation.vllm_generation as trl_vllm
    import vllm.model_executor.layers.utils as vllm_utils

    assert not hasattr(trl_vllm.LLM.__wrapped__, "__wrapped__")
    assert not hasattr(vllm_utils.dispatch_cpu_unquantized_gemm.__wrapped__, "__wrapped__")


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float32"])
def test_live_gemm_follows_load_weights(dtype_name: str) -> None:
    """vLLM's oneDNN GEMM computes with a packed copy; after load_weights it must see the new weight. Where this CPU
    cannot build the oneDNN primitive for the dtype (bf16 without AVX512-BF16), the live weight goes to F.linear."""
    import torch
    from vllm import _custom_ops as ops

    if not rollout_engine._on_cpu():
        pytest.skip("needs vLLM's CPU build")
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(96, 64, dtype=dtype), requires_grad=False)
    x = torch.randn(5, 64, dtype=dtype)
    gemm = vllm_colocate._live_gemm(weight)
    packed = onednn_gemm_available(dtype)
    assert packed == (getattr(ops, "_supports_onednn", False) and isinstance(gemm, vllm_colocate._LiveGemm))
    if not packed:
        assert gemm is torch.nn.functional.linear
    assert torch.allclose(gemm(x, weight, None), torch.nn.functional.linear(x, weight), rtol=1e-2, atol=1e-2)

    class Engine:  # what TRL's sync calls: model.load_weights([(name, tensor)]), copying in place
        def load_weights(self, weights: list) -> set[str]:
            for _, w in weights:
                weight.data.copy_(w)
            return {"w"}

    engine = Engine()
    vllm_colocate.mark_repack_on_load(engine)
    vllm_colocate.mark_repack_on_load(engine)  # idempotent
    new = torch.randn(96, 64, dtype=dtype)
    weight.data.copy_(new)
    if packed:  # a stale packed copy until load_weights marks it for repacking
        assert not torch.allclose(gemm(x, weight, None), torch.nn.functional.linear(x, new), rtol=1e-2, atol=1e-2)
    assert engine.load_weights([("w", new)]) == {"w"}
    assert torch.allclose(gemm(x, weight, None), torch.nn.functional.linear(x, new), rtol=1e-2, atol=1e-2)


def _vllm_logprobs(llm: Any, ids: list[int]) -> list[float]:
    from vllm import SamplingParams

    out = llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    return [lp[tok].logprob for lp, tok in zip(out[0].prompt_logprobs[1:], ids[1:], strict=True)]


def _hf_logprobs(model: Any, ids: list[int]) -> list[float]:
    import torch

    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
    return logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


@pytest.mark.slow
def test_grpo_vllm_colocate_syncs_weights(model_dir: Path, tmp_path: Path) -> None:
    import torch

    if not rollout_engine._on_cpu():
        pytest.skip("vLLM here is a GPU build: the CPU colocate path does not apply")
    kwargs = rollout_engine.grpo_vllm_kwargs("cpu", max_model_length=64)
    assert kwargs["use_vllm"] and kwargs["vllm_mode"] == "colocate"
    t = time.perf_counter()
    trainer = grpo_trainer(model_dir, tmp_path, kwargs)
    print(f"trainer with vLLM colocate engine built in {time.perf_counter() - t:.1f}s")
    llm = trainer.vllm_generation.llm
    engine_model = llm.llm_engine.model_executor.driver_worker.model_runner.model
    qkv = engine_model.model.layers[0].self_attn.qkv_proj
    assert hasattr(qkv.weight, "weight_loader") and qkv.weight.numel() > 0  # live weights stay in place
    # vLLM's packed oneDNN GEMM computes with a copy where this CPU has it for the engine's dtype, else F.linear
    if onednn_gemm_available(qkv.weight.dtype):
        assert isinstance(qkv.cpu_linear, vllm_colocate._LiveGemm)
    else:
        assert qkv.cpu_linear is torch.nn.functional.linear
    assert kwargs["generation_kwargs"] == rollout_engine.COLOCATE_SAMPLING
    # TRL sized the engine to one micro-batch (4); raised so a held-out evaluation runs in one wave
    assert llm.llm_engine.vllm_config.scheduler_config.max_num_seqs == vllm_colocate.COLOCATE_MIN_NUM_SEQS
    qkv_before = qkv.weight.detach().clone()
    ids = trainer.processing_class("the quick brown fox jumps over the lazy dog").input_ids
    before = _vllm_logprobs(llm, ids)

    t = time.perf_counter()
    trainer.train()
    print(f"2 GRPO steps with vLLM in {time.perf_counter() - t:.1f}s")
    assert trainer.state.global_step == 2
    assert all(r["sampling/sampling_logp_difference/mean"] < 0.05 for r in trainer.state.log_history if "loss" in r)

    # The step-2 sync pushed the step-1 weights into the engine, in place.
    assert (qkv.weight - qkv_before).abs().max() > 0
    trainer.vllm_generation.sync_weights()  # and now the final ones
    attn = trainer.model.model.layers[0].self_attn
    trained = [a.detach().to(qkv.weight.dtype) for a in (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight)]
    assert (qkv.weight - torch.cat(trained)).abs().max() == 0
    # Generation really uses them: vLLM's log-probs moved with training and match the trainer's.
    after, hf = _vllm_logprobs(llm, ids), _hf_logprobs(trainer.model, ids)
    gap = max(abs(a - h) for a, h in zip(after, hf, strict=True))
    moved = max(abs(a - b) for a, b in zip(after, before, strict=True))
    print(f"vLLM vs trainer log-prob gap {gap:.4f}; moved by training {moved:.4f}")
    assert gap < 0.05 < moved


def test_grpo_vllm_colocate_without_sampler_logprobs(model_dir: Path, tmp_path: Path) -> None:
    """With TRL's importance-sampling correction off nothing reads vLLM's per-token log-probs: not computed."""
    if not rollout_engine._on_cpu():
        pytest.skip("vLLM here is a GPU build: the CPU colocate path does not apply")
    kwargs = rollout_engine.grpo_vllm_kwargs("cpu", max_model_length=64, sampler_logprobs=False)
    assert kwargs["generation_kwargs"] == {**rollout_engine.COLOCATE_SAMPLING, "logprobs": None}
    trainer = grpo_trainer(model_dir, tmp_path, {**kwargs, "vllm_importance_sampling_correction": False})
    cpu.without_sampler_logprobs(trainer.vllm_generation)
    batches = []
    score = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: batches.append(score(inputs)) or batches[-1]
    trainer.train()
    assert trainer.state.global_step == 2 and len(batches) == 2
    for b in batches:  # every sampled token's log-prob is marked "not computed"
        sampled = b["completion_mask"].bool()
        assert sampled.any() and b["sampling_per_token_logps"][sampled].isnan().all()
    assert all(r["grad_norm"] > 0 for r in trainer.state.log_history if "loss" in r)  # and it still learns


def test_grpo_hf_fallback(model_dir: Path, tmp_path: Path) -> None:
    t = time.perf_counter()
    trainer = grpo_trainer(model_dir, tmp_path, {"use_vllm": False})
    trainer.train()
    print(f"2 GRPO steps with HF generate in {time.perf_counter() - t:.1f}s")
    assert trainer.state.global_step == 2
    assert getattr(trainer, "vllm_generation", None) is None


@pytest.mark.slow
def test_generate_vllm(model_dir: Path) -> None:
    out = generate_vllm(str(model_dir), PROMPTS[:3], n=2, temperature=1.0, max_tokens=8, seed=0)
    assert [len(x) for x in out] == [2, 2, 2] and all(isinstance(s, str) for x in out for s in x)
    assert out == generate_vllm(str(model_dir), PROMPTS[:3], n=2, temperature=1.0, max_tokens=8, seed=0)


def test_generate_hf(model_dir: Path) -> None:
    out = generate_hf(str(model_dir), PROMPTS[:3], n=2, temperature=1.0, max_tokens=8, seed=0)
    assert [len(x) for x in out] == [2, 2, 2] and all(isinstance(s, str) for x in out for s in x)
    greedy = generate_hf(str(model_dir), PROMPTS[:3], n=1, temperature=0.0, max_tokens=8, seed=0)
    assert all(len(x) == 1 for x in greedy)
