"""Several trainer processes: the CPU plan (DDP over gloo under accelerate's torchrun launcher), a real two-process
micro run with its resume (slow), and the multi-node Slurm plan printed by ``DRY_RUN=1`` (no Slurm needed)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.config import ConfigError
from tests.e2e import MICRO, ROOT, assert_complete_run, free_port, micro_overrides, run_train
from train import dist
from train.__main__ import main
from train.config import load_train_config
from train.launch import plan

SBATCH = ROOT / "scripts" / "slurm" / "train.sbatch"


def accelerate_args(cmd: list[str]) -> object:
    """``cmd`` (``accelerate launch ...``) as accelerate itself resolves it, without launching anything."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    assert cmd[:2] == ["accelerate", "launch"] or cmd[0].endswith("/accelerate") and cmd[1] == "launch", cmd
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(cmd[2:]))
    return args


def test_cpu_plan_is_n_gloo_processes_without_cuda_devices(tmp_path: Path) -> None:
    cfg = load_train_config(str(MICRO), [*micro_overrides(tmp_path, "ddp", "hf"), "launch.trainer_gpus=2"])
    p = plan(cfg, ["--preset", str(MICRO), "launch.trainer_gpus=2"])
    assert p.on_cpu and "CUDA_VISIBLE_DEVICES" not in p.trainer_env and int(p.trainer_env["OMP_NUM_THREADS"]) >= 1
    assert p.trainer_cmd[-4:] == ["train", "--preset", str(MICRO), "launch.trainer_gpus=2"]
    assert "--cpu" not in p.trainer_cmd and "--config_file" not in p.trainer_cmd
    assert p.per_device_batch == 4 and p.completions_per_step == 8  # 2 prompts x 4 generations over 2 processes
    # accelerate's own resolution: its torchrun launcher with 2 processes (`--cpu` would start a single one)
    args = accelerate_args(p.trainer_cmd)
    assert args.multi_gpu and not args.cpu and args.num_processes == 2 and args.num_machines == 1
    single = accelerate_args(["accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "train"])
    assert single.cpu and not single.multi_gpu  # what the plan avoids: launch_command runs one simple process
    assert "2 trainer process(es) on CPU (DDP over gloo)" in p.describe(cfg)


def test_gpu_plan_keeps_cuda_devices_and_the_zero_config() -> None:
    p = plan(load_train_config("qwen2.5-3b-4gpu"), ["--preset", "qwen2.5-3b-4gpu"])
    assert not p.on_cpu and p.trainer_env == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert p.server_env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert p.trainer_cmd[:6] == [
        "accelerate",
        "launch",
        "--num_processes",
        "2",
        "--config_file",
        "configs/accelerate/zero3.yaml",
    ]


def test_one_gpu_with_a_deepspeed_config_still_launches_through_accelerate() -> None:
    """One trainer GPU under ZeRO-3 (gpu_check.sh's rehearsal, or a 1 x GPU offload recipe): the config would be
    ignored by an in-process run, so the plan launches one accelerate process with it."""
    zero3 = "launch.accelerate_config=configs/accelerate/zero3.yaml"
    p = plan(load_train_config("qwen2.5-0.5b", [zero3]), ["--preset", "qwen2.5-0.5b", zero3])
    assert p.trainer_cmd[:6] == ["accelerate", "launch", "--num_processes", "1", "--config_file", zero3.split("=")[1]]
    assert p.trainer_env == {"CUDA_VISIBLE_DEVICES": "0"} and p.launches
    args = accelerate_args(p.trainer_cmd)
    assert args.num_processes == 1 and args.use_deepspeed and args.zero_stage == 3
    plain = plan(load_train_config("qwen2.5-0.5b"), ["--preset", "qwen2.5-0.5b"])
    assert plain.trainer_cmd[1:3] == ["-m", "train"] and plain.trainer_env == {} and not plain.launches  # in-process
    with pytest.raises(ValueError, match="is for GPUs; a one-process CPU run takes none"):
        plan(load_train_config(str(MICRO), [zero3]), ["--preset", str(MICRO), zero3])


def test_cpu_run_refuses_a_deepspeed_config_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--preset", str(MICRO), "launch.trainer_gpus=2", "launch.accelerate_config=configs/accelerate/zero2.yaml"]
    assert main([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: launch.accelerate_config:") and "\n" not in err


def test_process_count_must_match_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="launch.trainer_gpus: the config plans 2 trainer process"):
        dist.init("cpu", 2)
    assert not dist.is_main() and "WORLD_SIZE" not in dist.single_process_env()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    assert dist.is_main() and dist.shared_map(lambda xs: [x * 2 for x in xs], [1, 2, 3]) == [2, 4, 6]


def test_finish_leaves_the_process_group_in_every_process() -> None:
    """Two gloo processes join, all-gather and finish: each leaves the group (an undestroyed gloo group can abort
    the process at exit after a finished run, which the launcher reports as a failed run) and exits 0."""
    port = free_port()
    code = (
        "import torch.distributed as d; from train import dist; dist.init('cpu', 2); "
        "print(dist.shared_map(lambda xs: [x * 10 for x in xs], [1, 2, 3])); dist.finish(); "
        "print('initialized', d.is_initialized())"
    )
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
            assert out.splitlines()[-2:] == ["[10, 20, 30]", "initialized False"], out
    finally:  # a hung or failed peer is not left waiting on the group
        for p in procs:
            p.kill()


@pytest.mark.slow
def test_two_cpu_processes_write_once_resume_and_match_one_process(tmp_path: Path) -> None:
    """2 gloo processes train the micro preset (hf rollouts) 2 steps, then a resume continues to step 4: every
    checkpoint, metric and evaluation is written once, both processes' RNG states are kept, and the steps, batch
    shapes and checkpoints are those of the single-process run of the same config."""
    two = [*micro_overrides(tmp_path, "ddp", "hf", steps=2, save_every=2), "launch.trainer_gpus=2"]
    first = run_train(two, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.count("run directory:") == 1  # one report, from the main process
    resumed = run_train([*two, "grpo.steps=4", "--resume"], timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming") == 1
    run = tmp_path / "ddp"
    assert_complete_run(run, 4, 2)  # checkpoints 0, 2, 4; metrics for steps 1..4 once; evals at 0, 2, 4 once
    # each rank's RNG state in the newest checkpoint; step 2 had them for the resume, then kept the model only
    assert sorted(p.name for p in (run / "step_4").glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert not list((run / "step_2").glob("rng_state*")) and not list((run / "step_2").glob("optimizer.pt"))
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("step_")) == ["step_0", "step_2", "step_4"]
    assert len(list((run / "tb").glob("events.*"))) == 2  # one writer per part, none from the second process
    state = json.loads((run / "step_4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["train_batch_size"] == 4  # 4 completions per process per step

    one = run_train(micro_overrides(tmp_path, "single", "hf", steps=4, save_every=2), timeout=600)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    single = json.loads((tmp_path / "single" / "step_4" / "trainer_state.json").read_text())
    assert single["global_step"] == state["global_step"] and single["train_batch_size"] == 8
    states = {"ddp": state, "single": single}
    rows = {
        name: [json.loads(x) for x in (tmp_path / name / "eval.jsonl").read_text().splitlines()]
        for name in ("ddp", "single")
    }
    assert [r["completions"] for r in rows["ddp"]] == [r["completions"] for r in rows["single"]] == [32, 32, 32]
    # each step took the whole 2 x 4 batch over both processes: TRL's token count (gathered) grows as in one process
    tokens = {name: [r["num_tokens"] for r in s["log_history"] if "num_tokens" in r] for name, s in states.items()}
    assert len(tokens["ddp"]) == len(tokens["single"]) == 4
    assert all(0.9 < a / b < 1.1 for a, b in zip(tokens["ddp"], tokens["single"], strict=True)), tokens
    lines = {name: (tmp_path / name / "samples.jsonl").read_text().count("\n") for name in states}
    assert lines["ddp"] == lines["single"] > 0  # sample completions written once, by the main process
    summary = json.loads((run / "summary.json").read_text())
    assert summary["checkpoints"] == json.loads((tmp_path / "single" / "summary.json").read_text())["checkpoints"]


def slurm_plan(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``scripts/slurm/train.sbatch`` run outside Slurm with ``env`` (``DRY_RUN=1`` unless given)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run(
        ["bash", str(SBATCH), *args],
        cwd=ROOT,
        env={**clean, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def plan_lines(out: str) -> dict[str, list[str]]:
    """The printed commands by label (``server:``, ``wait:``, ``trainers:``), each split as a shell would."""
    return {
        line.split(":", 1)[0]: shlex.split(line.split(":", 1)[1].rstrip(" &"))
        for line in out.splitlines()
        if line.split(":", 1)[0] in ("server", "wait", "trainers")
    }


def option(cmd: list[str], name: str) -> str:
    """The value of ``--name=value`` or ``--name value`` in ``cmd``."""
    for i, word in enumerate(cmd):
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
        if word == name:
            return cmd[i + 1]
    raise AssertionError(f"{name} not in {cmd}")


def vllm_serve_args(trl_args: object, extra: list[str]) -> object:
    """What ``trl vllm-serve`` execs (TRL's ``build_command``), read by vLLM's own ``vllm serve`` parser and
    validator: an option vLLM does not know, or a combination it rejects, fails here rather than on a cluster."""
    pytest.importorskip("vllm")
    from trl.scripts.vllm_serve import build_command
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cmd = build_command(trl_args, extra)
    assert cmd[1:4] == ["-m", "vllm.entrypoints.cli.main", "serve"]
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(cmd[4:])
    validate_parsed_serve_args(args)
    return args


def test_slurm_dry_run_prints_trainer_nodes_and_a_separate_vllm_node() -> None:
    proc = slurm_plan("grpo.steps=10", "run_name=two nodes", NODES="gpu1 gpu2 gpu3 gpu4 gpu5", GPUS_PER_NODE="4")
    assert proc.returncode == 0, proc.stderr
    cmds = plan_lines(proc.stdout)
    server, trainers = cmds["server"], cmds["trainers"]
    assert "dry run: nothing was started" in proc.stdout
    # the server: one srun task on the last node, `trl vllm-serve` on all of its GPUs
    assert server[0] == "srun" and option(server, "--nodelist") == "gpu5" and option(server, "--ntasks") == "1"
    serve = server[server.index("vllm-serve") - 1 :]
    assert serve[0].endswith("/trl") and option(serve, "--model") == "Qwen/Qwen2.5-3B"
    # read by TRL's own `trl vllm-serve` parser: data parallel 1 (more errors out on a dense model), TP within the node
    from trl.scripts.vllm_serve import make_parser

    parsed, extra = make_parser().parse_args_and_config(serve[2:], return_remaining_strings=True)
    assert parsed.data_parallel_size == 1 and 1 <= parsed.tensor_parallel_size <= 4
    assert parsed.model == "Qwen/Qwen2.5-3B"
    vllm_args = vllm_serve_args(parsed, extra)
    assert (vllm_args.model_tag, vllm_args.data_parallel_size, vllm_args.weight_transfer_config.backend) == (
        "Qwen/Qwen2.5-3B",
        1,
        "nccl",
    )
    port = option(serve, "--port")
    assert cmds["wait"][-1].endswith(f'wait_for_server("http://gpu5:{port}/health/", 900, pid=$server_pid)')
    # the trainers: one accelerate launch per node on the other four, 4 x 4 = 16 processes, rank from Slurm
    assert option(trainers, "--nodelist").split(",") == ["gpu1", "gpu2", "gpu3", "gpu4"]
    assert option(trainers, "--ntasks") == "4" and option(trainers, "--ntasks-per-node") == "1"
    assert trainers[-3] == "bash" and trainers[-2] == "-c"
    launch = shlex.split(trainers[-1].replace("$SLURM_PROCID", "1"))  # as the bash on the second node sees it
    args = accelerate_args(launch)
    assert (args.num_machines, args.num_processes, args.machine_rank) == (4, 16, 1)
    assert (args.main_process_ip, args.main_process_port, args.use_deepspeed) == ("gpu1", 29500, True)
    overrides = launch[launch.index("train") + 1 :]
    assert overrides[:2] == ["--preset", "qwen2.5-3b"]
    assert {"launch.trainer_gpus=16", "rollout.vllm_mode=server", "rollout.start_server=false"} <= set(overrides)
    assert {"rollout.server_host=gpu5", f"rollout.server_port={port}", "run_name=two nodes"} <= set(overrides)
    cfg = load_train_config("qwen2.5-3b", overrides[2:])  # what every trainer process loads
    assert cfg.launch.trainer_gpus == 16 and cfg.per_device_batch == 512 // (16 * 16) and cfg.run_name == "two nodes"


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"NODES": "gpu1"}, [], "need at least one trainer node and one vLLM node"),
        ({"NODES": "a b c d", "GPUS_PER_NODE": "5"}, [], "grpo.prompts_per_step x grpo.num_generations = 512"),
        ({}, ["nonsense=1"], "unknown key 'nonsense'"),
        ({"DRY_RUN": "0"}, [], "not inside a Slurm job"),
    ],
)
def test_slurm_plan_refuses_bad_setups_in_one_line(env: dict[str, str], args: list[str], message: str) -> None:
    proc = slurm_plan(*args, **env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not proc.stdout
