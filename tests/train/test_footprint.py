"""What DRY_RUN says a run needs (train/footprint.py): GPU memory per trainer GPU and disk, on hand-computed cases;
and intermediate checkpoints that keep the model only (train/checkpoints.py:prune_resume_state)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from train.checkpoints import STATE_FILE, prune_resume_state
from train.config import load_train_config
from train.footprint import GIB, KNOWN, describe, disk_plan, gpu_plan, zero_stage


def test_the_2_gpu_3b_recipe_shards_its_states_and_fits_80_gb() -> None:
    cfg = load_train_config("qwen2.5-3b")
    p = KNOWN["Qwen/Qwen2.5-3B"].params
    assert zero_stage(cfg) == 3 and (cfg.launch.trainer_gpus, cfg.launch.vllm_gpus) == (2, 0)
    assert cfg.per_device_batch == 16
    mem = gpu_plan(cfg, KNOWN["Qwen/Qwen2.5-3B"], cfg.per_device_batch)
    assert mem["optimizer"] == pytest.approx(12 * p / 2 / GIB) and mem["weights"] == pytest.approx(p / GIB)
    assert mem["vLLM (colocated)"] == pytest.approx(0.3 * 80)
    assert mem["logits"] == pytest.approx(16 * 1024 * 151_936 * 4 / GIB)  # one micro-batch's completions, float32
    assert 55 < sum(mem.values()) < 76  # fits an 80 GB card with room
    micro_128 = gpu_plan(cfg, KNOWN["Qwen/Qwen2.5-3B"], 128)
    assert sum(micro_128.values()) > 80  # the old 4-step accumulation (micro-batch 128 on one GPU) would not


def test_zero_stage_decides_what_is_sharded() -> None:
    cfg = load_train_config("qwen2.5-3b")
    shape = KNOWN["Qwen/Qwen2.5-3B"]
    zero2 = dataclasses.replace(cfg.launch, accelerate_config="configs/accelerate/zero2.yaml")
    z2 = dataclasses.replace(cfg, launch=zero2)
    m3, m2 = gpu_plan(cfg, shape, 16), gpu_plan(z2, shape, 16)
    assert zero_stage(z2) == 2 and m2["weights"] == pytest.approx(2 * m3["weights"])  # ZeRO-2 keeps full weights
    assert m2["optimizer"] == pytest.approx(m3["optimizer"]) and m2["gradients"] == pytest.approx(m3["gradients"])


def test_a_one_gpu_run_without_deepspeed_holds_and_saves_float32() -> None:
    """Without DeepSpeed the policy is float32 (train.run.load_policy) under bf16 autocast: its gradients, the
    reference model TRL copies from it and every saved checkpoint are float32 too, and Adam keeps two moments."""
    cfg = load_train_config("qwen2.5-1.5b")
    shape = KNOWN["Qwen/Qwen2.5-1.5B"]
    p = shape.params
    assert zero_stage(cfg) == 0 and cfg.launch.trainer_gpus == 1
    mem = gpu_plan(cfg, shape, cfg.per_device_batch)
    assert mem["weights"] == mem["gradients"] == mem["reference model"] == pytest.approx(4 * p / GIB)
    assert mem["optimizer"] == pytest.approx(8 * p / GIB)
    assert 60 < sum(mem.values()) < 76
    d = disk_plan(cfg, shape)
    assert (d["model"], d["resume state"]) == (pytest.approx(4 * p / GIB), pytest.approx(8 * p / GIB))


def test_disk_keeps_resume_state_in_the_last_checkpoint_only_by_default() -> None:
    cfg = load_train_config("qwen2.5-3b")
    p = KNOWN["Qwen/Qwen2.5-3B"].params
    last = disk_plan(cfg, KNOWN["Qwen/Qwen2.5-3B"])
    every = disk_plan(dataclasses.replace(cfg, resume_state="all"), KNOWN["Qwen/Qwen2.5-3B"])
    assert last["checkpoints"] == 11  # steps 0, 100, ..., 1000
    assert last["total"] == pytest.approx((11 * 2 * p + 14 * p) / GIB)
    assert every["total"] == pytest.approx(11 * 16 * p / GIB) and every["total"] > 4 * last["total"]
    lines = describe(cfg, cfg.per_device_batch, on_cpu=False)
    assert lines[0].startswith("GPU memory per trainer GPU (estimate, ZeRO-3)") and "(fits)" in lines[0]
    assert lines[1].startswith("disk: 103.5 GiB for 11 checkpoints")


def test_pruning_keeps_the_model_everywhere_and_resume_state_in_the_newest(tmp_path: Path) -> None:
    resume = ["optimizer.pt", "scheduler.pt", "rng_state_0.pth", "latest", "zero_to_fp32.py", "zero_to_torch.py"]
    kept = ["model.safetensors", "config.json", "trainer_state.json", STATE_FILE]
    for step in (0, 6, 12):
        d = tmp_path / f"step_{step}"
        (d / "global_step12").mkdir(parents=True)
        (d / "global_step12" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x" * 10)
        for name in resume + kept:
            (d / name).write_text("{}")
    removed = prune_resume_state(tmp_path, keep=12)
    assert len(removed) == 2 * (len(resume) + 1)
    for step in (0, 6):
        assert sorted(p.name for p in (tmp_path / f"step_{step}").iterdir()) == sorted(kept)
    assert len(list((tmp_path / "step_12").iterdir())) == len(resume) + len(kept) + 1  # the newest: untouched
