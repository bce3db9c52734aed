"""The logged-only reward functions that say what RL rewards: the share of rollouts that verify and the group
advantage each style receives (the training reward's, after any control permutation)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from train.config import load_train_config
from train.grpo import group_advantages, reward_functions

ANSWER = "So the equation is 3 + 5.\n</think>\n<answer> 3 + 5 </answer>"
VERIFY = "\n- 3 + 4 = 7 (not 8)\n- 3 + 5 = 8 (this works)\n" + ANSWER
PLAIN_RIGHT = "\n- 3 + 5 = 8\nSo the equation is 3 + 5.\n</think>\n<answer> 3 + 5 </answer>"
PLAIN_WRONG = "\n- 3 + 4 = 7\nSo the equation is 3 + 4.\n</think>\n<answer> 3 + 4 </answer>"


def test_group_advantages_are_trls() -> None:
    rewards = [1.0, 0.1, 0.1, 0.0, 1.0, 1.0, 1.0, 1.0]
    out = group_advantages(rewards, 4)
    grp = torch.tensor(rewards[:4])
    want = (grp - grp.mean()) / (grp.std() + 1e-4)  # TRL: unbiased std per group, + 1e-4
    assert out[:4] == pytest.approx(want.tolist(), rel=1e-6)
    assert out[4:] == [0.0] * 4  # a group with one reward gives no advantage
    assert group_advantages(rewards, 4, "none")[:4] == pytest.approx((grp - grp.mean()).tolist(), rel=1e-6)


def test_style_functions_split_the_advantage_by_style(tmp_path: Path) -> None:
    cfg = load_train_config("tiny", [f"output_root={tmp_path}", "grpo.num_generations=4"])
    funcs, weights = reward_functions(cfg)
    by = {f.__name__: (f, w) for f, w in zip(funcs, weights, strict=True)}
    assert by["countdown_reward"][1] == 1.0 and by["advantage_verifying"][1] == by["verifying"][1] == 0.0
    completions = [VERIFY, PLAIN_RIGHT, PLAIN_WRONG, PLAIN_WRONG]
    args = (completions, [[3, 5]] * 4, [8] * 4)
    state = SimpleNamespace(global_step=3)
    assert by["verifying"][0](*args) == [1.0, 0.0, 0.0, 0.0]
    v = by["advantage_verifying"][0](*args, trainer_state=state)
    p = by["advantage_plain"][0](*args, trainer_state=state)
    assert v[1:] == [None] * 3 and p[0] is None
    both = [v[0], *p[1:]]
    assert both == pytest.approx(group_advantages([1.0, 1.0, 0.1, 0.1], 4))  # 0.1: a well-formed wrong answer
    assert v[0] > 0 and p[2] < 0 and math.isclose(sum(both), 0.0, abs_tol=1e-9)


def test_advantage_by_style_averages_the_logged_steps_skipping_nan(tmp_path: Path) -> None:
    import json

    from train.run_summary import advantage_by_style

    assert advantage_by_style(tmp_path) is None
    rows = [
        {
            "step": s,
            "rewards/verifying/mean": v,
            "rewards/advantage_verifying/mean": a,
            "rewards/advantage_plain/mean": -0.1,
        }
        for s, v, a in [(1, 0.0, float("nan")), (2, 0.1, 1.0), (3, 0.3, 0.5), (4, 0.5, 0.2)]
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = advantage_by_style(tmp_path, window=2)
    assert out["first"] == {"verifying": 1.0, "plain": -0.1, "share_verifying": 0.05, "steps": 2}
    assert out["last"]["verifying"] == pytest.approx(0.35) and out["last"]["share_verifying"] == pytest.approx(0.4)
