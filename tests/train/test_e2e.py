"""End-to-end micro runs of `python -m train`: real TRL GRPOTrainer, real vLLM colocate (and the HF fallback),
real checkpoints on disk, and a SIGKILL mid-run followed by a resume that loses and repeats nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e import ROOT, assert_complete_run, micro_overrides, run_train, train_cmd
from train.checkpoints import list_checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["vllm", "hf"])
def test_micro_run_end_to_end(tmp_path: Path, engine: str) -> None:
    proc = run_train(micro_overrides(tmp_path, f"micro-{engine}", engine))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "success" in proc.stdout and "run directory" in proc.stdout
    assert "base model:" in proc.stdout  # the missing micro base was built by a child `--base-only` process
    # the tiny preset's prompt filter ran on the real split: only problems with two or more ways are trained on
    kept = re.search(r"grpo.min_solutions=2: training on (\d+) of 200 problems", proc.stdout)
    assert kept is not None and 50 < int(kept.group(1)) < 200, proc.stdout[-2000:]
    run = tmp_path / f"micro-{engine}"
    assert_complete_run(run, 4, 2)
    split = json.loads((run / "summary.json").read_text())["success_by_ways"]
    assert sum(row["problems"] for row in split.values()) == 8  # every held-out problem, by its number of ways
    assert any(line.startswith("success, ") for line in proc.stdout.splitlines())
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("rewards/countdown_reward/mean" in m and "time/generation_s" in m for m in metrics)
    if engine == "vllm":  # the checkpoint also loads in vLLM
        from tests.train.helpers import generate_vllm

        outs = generate_vllm(
            run / "step_4", ["Using the numbers [1, 2, 3]"], n=2, temperature=1.0, max_tokens=8, seed=0
        )
        assert len(outs) == 1 and len(outs[0]) == 2
    # a second start of the same run is refused, not overwritten
    again = run_train(micro_overrides(tmp_path, f"micro-{engine}", engine))
    assert again.returncode == 2 and "RESUME=1" in again.stderr


def test_failed_base_build_stops_training_with_a_clear_error(tmp_path: Path) -> None:
    stale = tmp_path / "micro-base"  # a base directory built from other inputs: the child build must refuse it
    stale.mkdir()
    (stale / "base.json").write_text(json.dumps({"config_hash": "other"}))
    proc = run_train(micro_overrides(tmp_path, "refused", "hf"), timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "holds a base built from another config" in proc.stderr  # the child's own error
    assert "building the tiny base failed (exit 2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "refused" / "step_0").exists()


@pytest.mark.slow
def test_sigkill_then_resume_loses_and_repeats_nothing(tmp_path: Path) -> None:
    args = micro_overrides(tmp_path, "killed", "hf", steps=6, save_every=2)
    proc = subprocess.Popen(
        train_cmd(args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    run = tmp_path / "killed"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not (run / "step_2" / "state.json").is_file():
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [s for s, _ in list_checkpoints(run)][-1] < 6
    resumed = run_train([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    assert_complete_run(run, 6, 2)
