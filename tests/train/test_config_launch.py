"""Training config validation and the launch plan, checked on CPU (no GPU, nothing started)."""

from __future__ import annotations

import http.server
import re
import threading
import time
from pathlib import Path

import pytest

from tasks.config import ConfigError, dump_config, load_config
from train.__main__ import main
from train.config import TrainConfig, load_train_config, resolve_precision
from train.launch import PINNED, plan, under_launcher, wait_for_server

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ["tiny", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-3b-4gpu"]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_validate(preset: str) -> None:
    cfg = load_train_config(preset)
    assert cfg.run_name == preset
    if preset.startswith("qwen"):  # TinyZero's settings
        g = cfg.grpo
        assert (g.trl["learning_rate"], g.beta, g.max_completion_length, cfg.save_every) == (1e-6, 0.001, 1024, 100)
        assert (cfg.data.source, cfg.data.train_size, cfg.data.test_size) == ("hub", 327_680, 1_024)


def test_dry_run_plan_for_multi_gpu_server_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--preset", "qwen2.5-3b-4gpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "CUDA_VISIBLE_DEVICES=2,3 trl vllm-serve --model Qwen/Qwen2.5-3B --tensor-parallel-size 2" in out
    assert "accelerate launch --num_processes 2 --config_file configs/accelerate/zero3.yaml -m train" in out
    assert "64 prompts x 8 generations = 512 completions/step" in out
    assert "model: Qwen/Qwen2.5-3B" in out and "config OK" in out


def test_plan_single_process_colocate() -> None:
    cfg = load_train_config("qwen2.5-0.5b")
    p = plan(cfg, ["--preset", "qwen2.5-0.5b"])
    assert p.server_cmd is None and p.trainer_cmd[-3:] == ["train", "--preset", "qwen2.5-0.5b"]
    assert p.completions_per_step == 512 and p.per_device_batch == 16  # 32 accumulation steps of 16
    split = plan(load_train_config("qwen2.5-0.5b", ["grpo.steps_per_generation=4"]), [])
    assert split.completions_per_step == 512 and split.per_device_batch == 4  # 4 updates per generated batch


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["grpo.prompts_per_step=3", "grpo.num_generations=3", "launch.trainer_gpus=2"], "divide evenly"),
        (["grpo.num_generations=1"], "num_generations"),
        (["grpo.max_completion_length=16"], "too short for one attempt line"),
        (["grpo.top_entropy_quantile=0"], "top_entropy_quantile: expected in"),
        (["grpo.steps_per_generation=0"], "steps_per_generation: expected >= 1"),
        (["grpo.steps_per_generation=5"], "divide evenly into .* = 5 parts"),
        (["model=/no/such/dir"], "model:"),
        (["eval.problems=5000"], "eval.problems"),
        (["grpo.steps=ten"], "grpo.steps: expected an integer"),
        (["run_name=a/b"], "run_name"),
        (["base.length_buckets=-1"], "base.length_buckets: expected >= 0"),
        (["grpo.min_solutions=0"], "grpo.min_solutions: expected >= 1"),
    ],
)
def test_bad_config_fails_before_heavy_work(overrides: list[str], message: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        load_train_config("tiny", overrides)
    assert time.perf_counter() - t0 < 5


def test_grpo_section_passes_trl_options_through(tmp_path: Path) -> None:
    """A TRL option this project never declared reaches trl.GRPOConfig as written; the declared ones too."""
    from train.grpo import grpo_args

    cfg = load_train_config(
        "tiny", ["grpo.epsilon_high=0.28", "grpo.num_iterations=2", "grpo.beta=0.001", "grpo.lean_loss=false"]
    )
    assert cfg.grpo.trl["epsilon_high"] == 0.28 and "beta" not in cfg.grpo.trl
    args = grpo_args(resolve_precision(cfg, "cpu"), tmp_path, "cpu", {"use_vllm": False}, None)
    expected = (0.28, 2, 0.001, 3.0e-5)  # the tiny preset's learning rate, passed through as its own field
    assert (args.epsilon_high, args.num_iterations, args.beta, args.learning_rate) == expected
    assert (args.max_steps, args.per_device_train_batch_size) == (cfg.grpo.steps, cfg.per_device_batch)
    dumped = tmp_path / "config.yaml"  # the run directory's resolved config reloads to the same config
    dump_config(cfg, dumped)
    assert load_config(TrainConfig, dumped) == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("grpo.learning_rat=1", "unknown key 'grpo.learning_rat'.*Did you mean 'grpo.learning_rate'"),
        ("grpo.max_steps=5", "grpo.max_steps: set by this project from grpo.steps"),
        ("grpo.lr_scheduler_type=sometimes", "grpo: trl.GRPOConfig refused.*sometimes"),
        ("grpo.learning_rate=abc", "grpo.learning_rate: expected float .*got 'abc'"),
        ("grpo.num_iterations=2.5", "grpo.num_iterations: expected int .*got 2.5"),
        ("grpo.gradient_checkpointing=maybe", "grpo.gradient_checkpointing: expected bool .*got 'maybe'"),
    ],
)
def test_bad_trl_option_is_one_line_under_dry_run(override: str, message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["--preset", "tiny", "--dry-run", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


def test_numbers_written_as_strings_become_numbers(tmp_path: Path) -> None:
    from train.grpo import grpo_args

    cfg = load_train_config("tiny", ["grpo.learning_rate=1e-5", "grpo.weight_decay=0", "grpo.num_iterations=2"])
    args = grpo_args(resolve_precision(cfg, "cpu"), tmp_path, "cpu", {"use_vllm": False}, None)
    assert (args.learning_rate, args.weight_decay, args.num_iterations) == (1e-5, 0.0, 2)  # YAML reads 1e-5 as text


def test_a_bad_option_leaves_no_run_directory(tmp_path: Path) -> None:
    from train.run import train

    cfg = load_train_config("tiny", ["grpo.learning_rate=abc", f"output_root={tmp_path}"])
    with pytest.raises(ConfigError, match="grpo.learning_rate"):
        train(cfg)
    assert not any(tmp_path.iterdir())  # the corrected command is not refused as "already exists"


def test_cli_reports_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--preset", "nope"]) == 2
    assert "preset 'nope' not found" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-host error")
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["device=cuda"], "error: device: 'cuda' requested but no CUDA device is visible"),
        (["device=cpu", "model=nobody/no-such-model-here"], "error: model: 'nobody/no-such-model-here' cannot be"),
    ],
)
def test_gpu_preset_on_a_cpu_host_is_one_line(
    overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    import huggingface_hub.constants

    # the hub lookup fails at once instead of after DNS retries (the constant too: an earlier test imported the hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["--preset", "qwen2.5-0.5b", *overrides, f"output_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err[-2000:]
    assert not any(tmp_path.iterdir())  # nothing created: the fixed command is not refused as a rerun


def test_greedy_evaluation_takes_one_sample() -> None:
    """vLLM refuses ``n > 1`` at temperature 0 ("n must be 1 when using greedy sampling", seen from the server in
    tests/train/test_vllm_server.py): the config says so before a run starts, not at its first evaluation."""
    with pytest.raises(ConfigError, match="^eval.samples: expected 1 with eval.temperature=0 .* got 4$"):
        load_train_config("qwen2.5-0.5b", ["eval.samples=4"])
    assert load_train_config("qwen2.5-0.5b", ["eval.samples=4", "eval.temperature=0.6"]).eval.samples == 4
    with pytest.raises(ConfigError, match="^eval.samples: .* got 0$"):
        load_train_config("tiny", ["eval.samples=0"])


def test_server_mode_needs_server_gpus() -> None:
    cfg = load_train_config("qwen2.5-3b-4gpu", ["launch.vllm_gpus=0"])
    with pytest.raises(ValueError, match="vllm_gpus"):
        plan(cfg, [])


def test_server_mode_on_a_cpu_is_refused_in_one_line_and_its_dry_run_still_plans(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """TRL 1.16 sends weights to the server only over NCCL: a real CPU launch would start the server, train a step
    and fail at the first weight sync; it is refused before anything starts, and the dry run still prints the plan."""
    args = ["rollout.vllm_mode=server", "launch.vllm_gpus=1", "device=cpu", f"output_root={tmp_path}"]
    assert main(["--preset", "tiny", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: rollout.vllm_mode: server mode needs CUDA GPUs (TRL sends weights to the vLLM server over NCCL); "
        "on a CPU use rollout.vllm_mode=colocate"
    )
    assert not any(tmp_path.iterdir())  # nothing written
    assert main(["--preset", "tiny", "--dry-run", *args]) == 0
    assert "trl vllm-serve" in capsys.readouterr().out


def test_the_server_of_a_tiny_run_serves_the_built_base_and_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model: tiny`` is a build marker, not a model vLLM can load: the server gets the base's directory, and a real
    launch before the base exists says to build it (the server starts before the trainer would build it)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    base = tmp_path / "base-{precision}"
    args = ["device=cuda", "rollout.vllm_mode=server", "launch.vllm_gpus=1", f"base_dir={base}"]
    cfg = load_train_config("tiny", args)
    built = resolve_precision(cfg, "cpu").base_dir
    server = plan(cfg, []).server_cmd
    assert server is not None and server[server.index("--model") + 1] == built
    with pytest.raises(ValueError, match=f"{re.escape(built)} holds none yet: run `make base` first"):
        plan(cfg, [], check_gpus=True)
    Path(built).mkdir(parents=True)
    (Path(built) / "base.json").write_text("{}")
    assert plan(cfg, [], check_gpus=True).server_env == {"CUDA_VISIBLE_DEVICES": "1"}


def test_a_one_gpu_trainer_sees_only_its_gpu_where_several_are_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    """With several GPUs visible to one process, the Trainer wraps the model in DataParallel (its n_gpu counts them
    all) and TRL 1.16 refuses that: the one-GPU trainer runs as a child that sees only its GPU, while the launching
    process serves vLLM (if planned) on the next one; with one GPU visible it trains in this process."""
    monkeypatch.delenv(PINNED, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    cfg = load_train_config("qwen2.5-0.5b")
    p = plan(cfg, ["--preset", "qwen2.5-0.5b"], check_gpus=True)
    assert p.launches and p.trainer_cmd[1:] == ["-m", "train", "--preset", "qwen2.5-0.5b"]
    assert p.trainer_env == {"CUDA_VISIBLE_DEVICES": "3", PINNED: "1"}
    served = plan(load_train_config("qwen2.5-0.5b", ["rollout.vllm_mode=server", "launch.vllm_gpus=1"]), [], True)
    assert served.trainer_env["CUDA_VISIBLE_DEVICES"] == "3" and served.server_env == {"CUDA_VISIBLE_DEVICES": "5"}
    assert not under_launcher()
    monkeypatch.setenv(PINNED, "1")
    assert under_launcher()  # the child trains; it neither re-launches nor serves
    monkeypatch.delenv(PINNED)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    one = plan(cfg, [], check_gpus=True)
    assert not one.launches and one.trainer_env == {}


def test_a_server_started_outside_the_run_is_planned_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    """``rollout.start_server=false`` (the Slurm layout) uses a server on another node: the plan names it and its
    health URL, not a colocated engine."""
    args = ["rollout.start_server=false", "rollout.server_host=gpu5", "rollout.server_port=8123"]
    assert main(["--preset", "qwen2.5-3b-4gpu", "--dry-run", *args]) == 0
    out = capsys.readouterr().out
    assert "vLLM server: started outside this run (rollout.start_server=false), http://gpu5:8123/health/" in out
    assert "colocated" not in out and "trl vllm-serve" not in out


def test_unreachable_vllm_server_fails_after_timeout_with_advice() -> None:
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match="not healthy after 2s.*server_host/server_port"):
        wait_for_server("http://127.0.0.1:9/health/", 2.0)
    assert time.perf_counter() - t0 < 10


def test_wait_for_server_returns_when_healthy() -> None:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_for_server(f"http://127.0.0.1:{server.server_port}/health/", 5.0)
    finally:
        server.shutdown()


def test_grpo_args_split_batch_into_updates_and_skip_is_correction(tmp_path: Path) -> None:
    from train.grpo import grpo_args

    overrides = ["grpo.steps_per_generation=4", "grpo.vllm_importance_sampling_correction=false"]
    cfg = load_train_config("tiny", [*overrides, "grpo.temperature=0.7"])
    args = grpo_args(resolve_precision(cfg, "cpu"), tmp_path, "cpu", {"use_vllm": False}, [1.0])
    completions = cfg.grpo.prompts_per_step * cfg.grpo.num_generations
    assert args.generation_batch_size == completions  # one generation per 4 optimizer steps
    assert (args.steps_per_generation, args.per_device_train_batch_size) == (4, completions // 4)
    assert args.vllm_importance_sampling_correction is False and args.temperature == 0.7
    # with gradient accumulation, TRL counts micro-steps: one generation still feeds 4 updates of 3 micro-steps each
    accumulated = load_train_config("tiny", ["grpo.steps_per_generation=4", "grpo.gradient_accumulation_steps=3"])
    args = grpo_args(resolve_precision(accumulated, "cpu"), tmp_path, "cpu", {"use_vllm": False}, [1.0])
    assert (args.steps_per_generation, args.gradient_accumulation_steps) == (12, 3)
    assert args.generation_batch_size == completions and args.per_device_train_batch_size == completions // 12


def test_min_solutions_keeps_only_many_way_problems(capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.countdown.generate import Problem
    from tasks.countdown.solve import count_solutions
    from train.grpo import select_problems

    problems = [Problem((3, 4, 5), 12), Problem((5, 5, 3), 2), Problem((2, 2, 2), 8), Problem((1, 3, 4, 6), 24, "")]
    assert select_problems(problems, load_train_config("tiny-cue", ["grpo.min_solutions=1"])) == problems
    kept = select_problems(problems, load_train_config("tiny-cue", ["grpo.min_solutions=2"]))
    assert kept == [problems[0], problems[2]]
    assert all(count_solutions(p.numbers, p.target) >= 2 for p in kept)
    assert "training on 2 of 4 problems" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="grpo.min_solutions=9: none of the 4 training problems"):
        select_problems(problems, load_train_config("tiny-cue", ["grpo.min_solutions=9"]))


def test_plan_keeps_the_visible_gpus_and_refuses_too_few(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Slurm allocation (CUDA_VISIBLE_DEVICES=4,5,6,7) is split in order between trainer and server, not
    replaced by 0..n-1; a real launch on fewer GPUs than the preset needs is one line naming both counts."""
    import train.launch as launch

    cfg = load_train_config("qwen2.5-3b-4gpu")  # 2 trainer + 2 vLLM GPUs
    monkeypatch.setattr(launch, "runs_on_cpu", lambda cfg: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    p = launch.plan(cfg, [], check_gpus=True)
    assert p.trainer_env["CUDA_VISIBLE_DEVICES"] == "4,5" and p.server_env["CUDA_VISIBLE_DEVICES"] == "6,7"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(ValueError) as e:
        launch.plan(cfg, [], check_gpus=True)
    msg = str(e.value)
    assert "needs 4 GPUs (launch.trainer_gpus=2 + launch.vllm_gpus=2); visible: 1 (3)" in msg and "\n" not in msg
    dry = launch.plan(cfg, [])  # a dry run shows the plan on any host
    assert dry.trainer_env["CUDA_VISIBLE_DEVICES"] == "0,1" and dry.server_env["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_the_server_wait_ends_when_the_server_process_is_gone() -> None:
    """The Slurm script waits on a server started by a background srun: a dead pid ends the wait at once, not after
    the 900 s timeout."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"the vLLM server \(pid {gone.pid}\) exited before becoming healthy"):
        wait_for_server("http://127.0.0.1:9/health/", 900, pid=gone.pid)
    assert time.monotonic() - t0 < 30
