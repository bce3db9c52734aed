"""Hardening: five SIGKILLs of a micro training run at random moments, some while a checkpoint is being written;
after each kill every listed checkpoint loads, and the final resume ends at the planned step with every step
logged exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e import ROOT, assert_complete_run, micro_overrides, run_train, train_cmd
from train.checkpoints import STAGING, list_checkpoints


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        train_cmd(args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _writing(run: Path) -> bool:
    staging = run / STAGING
    return staging.is_dir() and any(p.name.startswith(("checkpoint-", "manual-")) for p in staging.iterdir())


@pytest.mark.slow
def test_five_random_kills_then_resume_lose_nothing(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    steps, save_every = 16, 1  # room for five kills: a resumed run must not finish before its kill lands
    args = micro_overrides(tmp_path, "kills", "hf", steps=steps, save_every=save_every)
    run = tmp_path / "kills"
    rng = random.Random(0)
    during_write = kills = 0
    for kill in range(5):
        resume = ["--resume"] if list_checkpoints(run) else []
        before = [s for s, _ in list_checkpoints(run)]
        proc = _start([*args, *resume])
        deadline = time.monotonic() + 600
        # kills 0, 2, 4 strike while a checkpoint is being staged; 1, 3 after a random delay past a new checkpoint
        while time.monotonic() < deadline and proc.poll() is None:
            if kill % 2 == 0 and _writing(run) and [s for s, _ in list_checkpoints(run)] != before:
                during_write += 1
                break
            if kill % 2 == 1 and [s for s, _ in list_checkpoints(run)] != before:
                time.sleep(rng.uniform(0.0, 1.5))
                break
            time.sleep(0.005)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        listed = list_checkpoints(run)
        assert listed, "no checkpoint survived"
        for _, path in listed:  # every checkpoint the resume could pick is complete and loads
            AutoModelForCausalLM.from_pretrained(path)
    assert kills == 5 and during_write >= 1, (kills, during_write)
    done = run_train([*args, "--resume"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_complete_run(run, steps, save_every)
