"""How a run is launched: the resolved plan (``DRY_RUN=1``), multi-process re-launch under accelerate, the vLLM server.

On one device without a DeepSpeed config ``python -m train`` trains in-process. With ``launch.trainer_gpus > 1``, or
one GPU with ``launch.accelerate_config`` (ZeRO-3 or offload on one GPU), it re-executes itself under ``accelerate
launch`` with that config, pinned to the first N GPUs; in ``rollout.vllm_mode=server`` it first starts ``trl
vllm-serve`` on the next M GPUs (or uses a given host:port) and waits for its health endpoint with a timeout, so a
dead server is a clear error, not a hang.
The plan printed by ``DRY_RUN=1`` is exactly what would be run, and validating it needs no GPU.

On a CPU run (``device=cpu``, or ``auto`` where no CUDA device is visible) the same field counts trainer
*processes*: DDP over gloo, one process per share of the batch, as on GPUs. accelerate starts several processes
only through its torchrun launcher, which it names ``--multi_gpu``; its ``--cpu`` flag (and no flag, without GPUs)
starts a single process. So the CPU plan is ``accelerate launch --multi_gpu`` with no config file (the ZeRO
configs are DeepSpeed, GPU only), a free rendezvous port, no ``CUDA_VISIBLE_DEVICES``, and each process given
its share of the cores (``OMP_NUM_THREADS``); the trainer's ``use_cpu`` then makes accelerate choose gloo.
The GPU plan is as it was. Multi-node launches are in ``scripts/slurm/train.sbatch``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.config import to_dict
from train.config import TrainConfig


@dataclass(frozen=True)
class LaunchPlan:
    """Commands and batch shapes of one run."""

    trainer_cmd: list[str]
    trainer_env: dict[str, str]
    server_cmd: list[str] | None
    server_env: dict[str, str]
    health_url: str | None
    completions_per_step: int
    per_device_batch: int
    on_cpu: bool = False  # several trainer processes on the CPU: DDP over gloo

    @property
    def launches(self) -> bool:
        """Whether the trainer runs in child processes (``accelerate launch``: several processes, or one with a
        DeepSpeed config; or one process pinned to its GPU) rather than in this process."""
        return Path(self.trainer_cmd[0]).name == "accelerate" or PINNED in self.trainer_env

    def describe(self, cfg: TrainConfig) -> str:
        lines = ["# resolved config", yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip(), "", "# launch plan"]
        g = cfg.grpo
        where = " on CPU (DDP over gloo)" if self.on_cpu else ""
        lines.append(
            f"GRPO: {g.prompts_per_step} prompts x {g.num_generations} generations = {self.completions_per_step} "
            f"completions/step over {cfg.launch.trainer_gpus} trainer process(es){where} "
            f"({self.per_device_batch} per device per micro-step, {g.gradient_accumulation_steps} accumulation, "
            f"{g.steps_per_generation} update(s) per generated batch), "
            f"{g.steps} steps, checkpoint every {cfg.save_every}"
        )
        if self.server_cmd:
            env = " ".join(f"{k}={v}" for k, v in self.server_env.items())
            lines.append(f"vLLM server: {env} {shlex.join(self.server_cmd)}")
            lines.append(f"  health check: {self.health_url} (timeout {cfg.rollout.server_timeout_s:.0f}s)")
        elif self.health_url:
            lines.append(f"vLLM server: started outside this run (rollout.start_server=false), {self.health_url}")
        elif cfg.rollout.engine != "hf":
            lines.append(f"vLLM: colocated with the trainer ({cfg.rollout.gpu_memory_utilization:.0%} of GPU memory)")
        env = " ".join(f"{k}={v}" for k, v in self.trainer_env.items())
        lines.append(f"trainer: {env} {shlex.join(self.trainer_cmd)}".replace("  ", " "))
        from train.footprint import describe

        lines += describe(cfg, self.per_device_batch, self.on_cpu or runs_on_cpu(cfg))
        return "\n".join(lines)


def runs_on_cpu(cfg: TrainConfig) -> bool:
    """Whether the trainer processes of ``cfg`` run on the CPU (``device=cpu``, or ``auto`` without CUDA)."""
    if cfg.device != "auto":
        return cfg.device == "cpu"
    import torch

    return not torch.cuda.is_available()


def visible_gpus() -> list[str] | None:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES``'s entries when it is set (a Slurm allocation or the
    user's choice, kept as given), else ``0..count-1`` from torch; None when no CUDA device is visible."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None and listed.strip():
        return [x.strip() for x in listed.split(",") if x.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else None


def _assign_gpus(n: int, m: int, check: bool) -> tuple[list[str], list[str]]:
    """(trainer GPUs, vLLM server GPUs) from the visible ones, in order. ``check``: refuse, in one line naming what
    the preset needs and what is visible, when there are too few; otherwise (a dry run on any host) fall back to
    0..n+m-1 to show the plan."""
    seen = visible_gpus()
    # one GPU for one process: the device check (train.config) names a missing one better
    if check and n + m > 1 and (seen is None or len(seen) < n + m):
        found = "no CUDA device" if seen is None else f"{len(seen)} ({','.join(seen)})"
        raise ValueError(
            f"launch: this preset needs {n + m} GPUs (launch.trainer_gpus={n} + launch.vllm_gpus={m}); visible: "
            f"{found}. Use a host or allocation with {n + m}, or lower launch.trainer_gpus / launch.vllm_gpus"
        )
    ids = seen if seen is not None and len(seen) >= n + m else [str(i) for i in range(n + m)]
    return ids[:n], ids[n : n + m]


# set in the environment of the one-GPU trainer process a launch starts (train.launch.plan)
PINNED = "R1ZERO_PINNED_TRAINER"


def served_model(cfg: TrainConfig) -> str:
    """What ``trl vllm-serve`` loads: the hub id or directory, or for ``model: tiny`` the built base's directory (the
    server starts before the trainer, so the base must exist: :func:`_check_server_mode` says so)."""
    if cfg.model != "tiny":
        return cfg.model
    from train.precision import resolve

    return cfg.base_dir.replace("{precision}", resolve(cfg.base.precision, "cpu", "base.precision"))


def _check_server_mode(cfg: TrainConfig, on_cpu: bool, real_launch: bool, no_server_gpu: bool) -> None:
    """Refuse, in one line, a server-mode run that cannot work: no GPU for the server it starts; a real launch on
    the CPU (TRL 1.16 pushes the trainer's weights to the server only through vLLM's NCCL weight-transfer engine,
    which needs CUDA); a tiny base the server would load before the trainer has built it. A dry run on any host
    still prints the plan."""
    if no_server_gpu:
        raise ValueError("launch.vllm_gpus: server mode with start_server needs >= 1 GPU for `trl vllm-serve`")
    if not real_launch:
        return
    if on_cpu:
        raise ValueError(
            "rollout.vllm_mode: server mode needs CUDA GPUs (TRL sends weights to the vLLM server over NCCL); "
            "on a CPU use rollout.vllm_mode=colocate"
        )
    if cfg.rollout.start_server and cfg.model == "tiny" and not (Path(served_model(cfg)) / "base.json").is_file():
        raise ValueError(
            f"rollout.vllm_mode: the vLLM server loads the tiny base before training starts, and {served_model(cfg)} "
            "holds none yet: run `make base` first (or use rollout.vllm_mode=colocate)"
        )


def plan(cfg: TrainConfig, cli_args: list[str], check_gpus: bool = False) -> LaunchPlan:
    """The launch plan for ``cfg``; ``cli_args`` are re-passed to the trainer processes. GPUs are taken in order
    from the visible ones (an existing ``CUDA_VISIBLE_DEVICES`` is kept); ``check_gpus`` (a real launch) refuses
    a preset that needs more than are visible."""
    n, m = cfg.launch.trainer_gpus, cfg.launch.vllm_gpus
    on_cpu = runs_on_cpu(cfg)
    serve = cfg.rollout.engine != "hf" and cfg.rollout.vllm_mode == "server" and cfg.rollout.start_server
    trainer_ids, server_ids = ([], []) if on_cpu else _assign_gpus(n, m if serve else 0, check_gpus)
    if cfg.rollout.vllm_mode == "server" and cfg.rollout.engine != "hf":
        _check_server_mode(cfg, on_cpu, check_gpus, serve and m < 1)
    if on_cpu and n == 1 and cfg.launch.accelerate_config:
        raise ValueError(
            f"launch.accelerate_config: {cfg.launch.accelerate_config} is for GPUs; a one-process CPU run takes none "
            "(set launch.accelerate_config=null)"
        )
    trainer_cmd, trainer_env = _trainer_command(cfg, cli_args, on_cpu, trainer_ids)
    server_cmd, server_env, health = _server_command(cfg, on_cpu, server_ids)
    completions = cfg.grpo.prompts_per_step * cfg.grpo.num_generations
    cpu = n > 1 and on_cpu  # several trainer processes on the CPU (DDP over gloo)
    return LaunchPlan(trainer_cmd, trainer_env, server_cmd, server_env, health, completions, cfg.per_device_batch, cpu)


def _trainer_command(
    cfg: TrainConfig, cli_args: list[str], on_cpu: bool, trainer_ids: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The trainer's command and extra environment: accelerate for several processes (DDP over gloo on the CPU)
    or a DeepSpeed config; a child pinned to its GPU where several are visible; else this interpreter."""
    n = cfg.launch.trainer_gpus
    module = [sys.executable, "-m", "train", *cli_args]
    if n > 1 and on_cpu:
        if cfg.launch.accelerate_config:
            raise ValueError(
                f"launch.accelerate_config: {cfg.launch.accelerate_config} is for GPUs; a CPU run with "
                "launch.trainer_gpus > 1 runs DDP over gloo without one (set launch.accelerate_config=null)"
            )
        cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1"]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
        return [*cmd, "-m", "train", *cli_args], {"OMP_NUM_THREADS": threads}
    if n > 1 or cfg.launch.accelerate_config:  # one GPU with a DeepSpeed config (ZeRO-3, offload) needs it too
        cmd = ["accelerate", "launch", "--num_processes", str(n)]
        if cfg.launch.accelerate_config:
            if not Path(cfg.launch.accelerate_config).is_file():
                raise FileNotFoundError(f"launch.accelerate_config: {cfg.launch.accelerate_config} does not exist")
            cmd += ["--config_file", cfg.launch.accelerate_config]
        return [*cmd, "-m", "train", *cli_args], {"CUDA_VISIBLE_DEVICES": ",".join(trainer_ids)}
    if not on_cpu and len(visible_gpus() or []) > 1:
        # one GPU process where several are visible: a child that sees only its GPU. In this process CUDA already
        # counted them all, and with several the Trainer wraps the model in DataParallel, which TRL refuses
        return module, {"CUDA_VISIBLE_DEVICES": trainer_ids[0], PINNED: "1"}
    return module, {}


def _server_command(
    cfg: TrainConfig, on_cpu: bool, server_ids: list[str]
) -> tuple[list[str] | None, dict[str, str], str | None]:
    """(``trl vllm-serve`` command to start, its environment, health URL) in server mode; the health URL alone
    when the server is started outside the run; nothing in colocate mode."""
    if cfg.rollout.engine == "hf" or cfg.rollout.vllm_mode != "server":
        return None, {}, None
    r = cfg.rollout
    health = f"http://{r.server_host}:{r.server_port}/health/"
    if not r.start_server:
        return None, {}, health
    m = str(cfg.launch.vllm_gpus)
    cmd = ["trl", "vllm-serve", "--model", served_model(cfg), "--tensor-parallel-size", m, "--host", r.server_host]
    cmd += ["--port", str(r.server_port), "--gpu-memory-utilization", "0.9"]
    return cmd, ({} if on_cpu else {"CUDA_VISIBLE_DEVICES": ",".join(server_ids)}), health


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_server(url: str, timeout_s: float, proc: subprocess.Popen | None = None, pid: int | None = None) -> None:
    """Poll ``url`` until it answers 200; raise with what to check after ``timeout_s``, or as soon as the server
    died: ``proc`` (a child of this process) or ``pid`` (a process started elsewhere, e.g. the Slurm script's
    background ``srun``)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with code {proc.returncode} before becoming healthy")
        if pid is not None and not _pid_alive(pid):
            raise RuntimeError(f"the vLLM server (pid {pid}) exited before becoming healthy; see its output above")
        try:
            with urllib.request.urlopen(url, timeout=min(5.0, max(0.1, deadline - time.monotonic()))) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    raise TimeoutError(
        f"vLLM server at {url} not healthy after {timeout_s:.0f}s ({last}). Start it with `trl vllm-serve` or set "
        "rollout.start_server=true, check rollout.server_host/server_port, or raise rollout.server_timeout_s."
    )


def under_launcher() -> bool:
    """True inside a process started by accelerate/torchrun or as the pinned one-GPU trainer (then we train, not
    re-launch, and the launching process serves vLLM if planned)."""
    return "LOCAL_RANK" in os.environ or "ACCELERATE_PROCESS_ID" in os.environ or os.environ.get(PINNED) == "1"


def _local(cmd: list[str]) -> list[str]:
    """``cmd`` with a console script (``accelerate``, ``trl``) not on PATH taken from this interpreter's bin/: the
    plan names them as a user types them, and `make train` runs the virtual environment's python unactivated."""
    beside = Path(sys.executable).parent / cmd[0]
    return [str(beside), *cmd[1:]] if shutil.which(cmd[0]) is None and beside.is_file() else cmd


@contextlib.contextmanager
def serving(p: LaunchPlan, cfg: TrainConfig) -> Iterator[None]:
    """Start the planned vLLM server (if any), wait until healthy, and stop it on exit."""
    server = subprocess.Popen(_local(p.server_cmd), env={**os.environ, **p.server_env}) if p.server_cmd else None
    try:
        if p.health_url:
            wait_for_server(p.health_url, cfg.rollout.server_timeout_s, server)
        yield
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)


def execute(p: LaunchPlan, cfg: TrainConfig) -> int:
    """Several processes: serve vLLM if planned, then run the trainer processes under accelerate."""
    with serving(p, cfg):
        return subprocess.run(_local(p.trainer_cmd), env={**os.environ, **p.trainer_env}).returncode
