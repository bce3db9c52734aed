"""Sample completions: the reward hands them over, the run callback writes them at the end of the step."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from train.config import load_train_config
from train.grpo import reward_functions
from train.run_callback import RunCallback, SampleLog


def test_reward_offers_samples_and_the_callback_writes_them(tmp_path: Path) -> None:
    cfg = load_train_config("tiny", [f"output_root={tmp_path}", "grpo.sample_every=5"])
    samples = SampleLog(cfg.grpo.sample_every)
    reward = reward_functions(cfg, samples)[0][0]
    completions = [" 3 + 5 = 8 (this works)</think> <answer>3 + 5</answer>", "no answer"] * 3
    numbers, target = [[3, 5]] * 6, [8] * 6
    for step in (5, 6):  # step 6 is not a sampling step
        rewards = reward(completions, numbers, target, trainer_state=SimpleNamespace(global_step=step))
    assert rewards[0] > rewards[1]
    assert not (tmp_path / "samples.jsonl").exists()  # the reward itself writes nothing
    callback = RunCallback(cfg, tmp_path, None, lambda trainer: None, samples)
    callback.on_step_end(None, None, None)
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [5] * 4 and lines[0]["reward"] == rewards[0]
    assert lines[0]["completion"] == completions[0] and lines[0]["target"] == 8
    callback.on_step_end(None, None, None)  # flushed once: nothing written twice
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 4
