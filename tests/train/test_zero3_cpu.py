"""DeepSpeed ZeRO-3 through the real TRL trainer, on the CPU: two processes over gloo (DeepSpeed's CPU accelerator)
shard every parameter as ``configs/accelerate/zero3.yaml`` shards them over GPUs, and what a GPU run under ZeRO-3
relies on is checked in the files the run wrote: step 0 saved whole through the Trainer on every process (a
main-process ``save_pretrained`` wrote 0-element partitions, which the analysis then refused), DeepSpeed's resume
state (``global_step<N>``) in the newest checkpoint only, a resume from it, and, with vLLM colocated as in the
``qwen2.5-3b`` recipe, TRL's weight sync from the shards and a clean exit."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e import MICRO, ROOT, free_port, micro_overrides, run_train
from train.checkpoints import list_checkpoints

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow


def zero3_cpu_config(tmp: Path) -> Path:
    """``configs/accelerate/zero3.yaml`` for two CPU processes: its ZeRO settings as a DeepSpeed JSON file with
    every parameter partitioned (``stage3_param_persistence_threshold: 0``: by default DeepSpeed keeps parameters of
    under 100k elements whole on every process, which is every parameter of the micro model and would hide the
    bug), mixed precision off (bf16 autocast is the GPU's)."""
    acc = yaml.safe_load((ROOT / "configs" / "accelerate" / "zero3.yaml").read_text())
    z = acc["deepspeed_config"]
    assert (z["zero_stage"], z["zero3_save_16bit_model"]) == (3, True)
    assert (z["offload_param_device"], z["offload_optimizer_device"]) == ("none", "none")
    zero = {"stage": 3, "stage3_param_persistence_threshold": 0, "stage3_gather_16bit_weights_on_model_save": True}
    auto = ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps", "gradient_clipping")
    ds = {"zero_optimization": zero, **dict.fromkeys(auto, "auto"), "bf16": {"enabled": False}}
    (tmp / "ds.json").write_text(json.dumps({**ds, "zero_allow_untested_optimizer": True}))
    cpu = {k: v for k, v in acc.items() if k not in ("deepspeed_config", "mixed_precision", "downcast_bf16")}
    cpu["deepspeed_config"] = {"deepspeed_config_file": str(tmp / "ds.json"), "zero3_init_flag": z["zero3_init_flag"]}
    cpu.update(num_processes=2, main_process_port=free_port())
    path = tmp / "zero3-cpu.yaml"
    path.write_text(yaml.safe_dump(cpu))
    return path


def launch_zero3(config: Path, args: list[str]) -> subprocess.CompletedProcess:
    """What ``make train`` runs for a ZeRO-3 preset (``accelerate launch --config_file ... -m train``), on 2 CPUs."""
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--config_file", str(config), "-m", "train", "--preset", str(MICRO), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_zero3_saves_step_0_whole_keeps_resume_state_last_and_resumes(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from analysis.checkpoint_stages import check_checkpoint

    engine = "vllm" if importlib.util.find_spec("vllm") else "hf"  # the 3B recipe's colocated vLLM where installed
    run_args = [*micro_overrides(tmp_path, "zero3", engine, steps=2, save_every=2), "launch.trainer_gpus=2"]
    base = run_train([*run_args, "--base-only"], timeout=600)  # as `make train` builds it before launching
    assert base.returncode == 0, base.stdout[-2000:] + base.stderr[-2000:]
    config = zero3_cpu_config(tmp_path)
    first = launch_zero3(config, run_args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    resumed = launch_zero3(config, [*run_args, "grpo.steps=4", "--resume"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming") == 1
    for proc in (first, resumed):  # a clean exit: vLLM's groups torn down before the launch's (train.dist.finish)
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]

    run = tmp_path / "zero3"
    assert [s for s, _ in list_checkpoints(run)] == [0, 2, 4]
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert [json.loads(x)["step"] for x in (run / "eval.jsonl").read_text().splitlines()] == [0, 2, 4]
    for step in (0, 2, 4):
        check_checkpoint(run / f"step_{step}")  # refuses a 0-element tensor by name
    saved, built = (load_file(str(d / "model.safetensors")) for d in (run / "step_0", tmp_path / "micro-base"))
    assert set(saved) == set(built) and all(saved[k].equal(built[k].to(saved[k].dtype)) for k in built)
    assert (run / "step_4" / "global_step4").is_dir()  # DeepSpeed's partitions, for the next resume
    # resume_state: last; the earlier checkpoint keeps the model and what the analysis reads, none of DeepSpeed's files
    assert sorted(p.name for p in (run / "step_2").iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "state.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "trainer_state.json",
        "training_args.bin",
    ]
