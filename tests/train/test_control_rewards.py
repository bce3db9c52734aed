"""The study's control rewards: shuffled within each prompt's group (same distribution, no signal), format-only."""

from __future__ import annotations

from dataclasses import replace

from train.config import TrainConfig
from train.grpo import control_rewards

RIGHT = "\n- 1 + 2 = 3 (this works)\n</think>\n<answer> 1 + 2 </answer>"
WRONG = "\n- 1 * 2 = 2 (not 3)\n</think>\n<answer> 1 * 2 </answer>"
NONE = "\nno answer"


def _cfg(reward: str, k: int = 4) -> TrainConfig:
    cfg = TrainConfig()
    return replace(cfg, grpo=replace(cfg.grpo, reward=reward, num_generations=k))


def test_shuffled_permutes_within_groups_only_and_is_seeded() -> None:
    cfg = _cfg("shuffled")
    rewards = [1.0, 0.0, 0.0, 0.1, 0.0, 0.1, 1.0, 1.0]
    comps = [RIGHT] * 8
    a = control_rewards(rewards, comps, [[1, 2]] * 8, [3] * 8, cfg.grpo, 5, cfg)
    b = control_rewards(rewards, comps, [[1, 2]] * 8, [3] * 8, cfg.grpo, 5, cfg)
    assert a == b
    assert sorted(a[:4]) == sorted(rewards[:4]) and sorted(a[4:]) == sorted(rewards[4:])
    steps = {tuple(control_rewards(rewards, comps, [[1, 2]] * 8, [3] * 8, cfg.grpo, s, cfg)) for s in range(20)}
    assert len(steps) > 1  # the permutation changes from step to step


def test_format_only_pays_the_answer_tag_not_correctness() -> None:
    cfg = _cfg("format", k=3)
    out = control_rewards([1.0, 0.1, 0.0], [RIGHT, WRONG, NONE], [[1, 2]] * 3, [3] * 3, cfg.grpo, 0, cfg)
    assert out == [0.1, 0.1, 0.0]
    assert control_rewards(
        [1.0, 0.1, 0.0], [RIGHT, WRONG, NONE], [[1, 2]] * 3, [3] * 3, _cfg("countdown").grpo, 0, cfg
    ) == [
        1.0,
        0.1,
        0.0,
    ]
