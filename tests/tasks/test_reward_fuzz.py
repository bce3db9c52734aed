"""Hardening: the reward and the parser over >= 100k fuzzed inputs never raise, and no call is slow.

Inputs are seeded and generated, not hand-picked: random sequences of answer tags, digits (ASCII and other unicode
digits), operators, ``**`` chains, deep parentheses, huge numbers and megabyte lines, wrapped or not in
``<answer>``. A worst case above 50 ms per call fails the test (the GRPO reward runs on every completion).
"""

from __future__ import annotations

import random
import time

import pytest

from tasks.countdown.reward import score
from tasks.countdown.trace import parse_attempts

N3 = (1, 2, 3)
PIECES = [
    "<answer>", "</answer>", "<think>", "</think>", "\n", "(", ")", "+", "-", "*", "/", "**", " ", "=", ".",
    "1", "2", "3", "7", "0", "\u0663", "\uff13", "\u2212", "\u00d7", "(not 6)", "(this works)", "- 1 + 2 = 3",
]  # fmt: skip
MB = 1 << 20


def fuzz_inputs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.85:
            text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 60)))
        elif r < 0.95:
            text = (
                "<answer>"
                + "".join(rng.choice(["1", "2", "3", "+", "*", "**", "(", ")"]) for _ in range(200))
                + "</answer>"
            )
        elif r < 0.999:
            k = rng.randint(100, 5000)
            text = rng.choice(
                [
                    "<answer>" + "9" * k + "</answer>",
                    "<answer>" + "(" * k + "1" + ")" * k + "</answer>",
                    "<answer>" + "2**" * (k // 10) + "2</answer>",
                    "<answer>" + "1+" * k + "1</answer>",
                    "- " + "9" * k + " + 1 = 3 (not 6)\n",
                ]
            )
        else:  # the rare giants: 10k nested parentheses, 1 MB lines
            text = rng.choice(
                [
                    "<answer>" + "(" * 10_000 + "1 + 2 + 3" + ")" * 10_000 + "</answer>",
                    "<answer>" + "1 + " * (MB // 4) + "1</answer>",
                    "x" * MB + "<answer>1 + 2 + 3</answer>",
                    "- " + "1 + " * (MB // 8) + "2 = 3 (not 6)\n</think>",
                ]
            )
        out.append(text)
    return out


@pytest.mark.slow
def test_reward_and_parser_survive_100k_fuzzed_inputs() -> None:
    inputs = fuzz_inputs(100_000)
    worst_reward = worst_parse = 0.0
    for text in inputs:
        t0 = time.perf_counter()
        s = score(text, N3, 6)
        t1 = time.perf_counter()
        parse_attempts(text, N3, 6)
        t2 = time.perf_counter()
        assert s in (0.0, 0.1, 1.0)
        worst_reward, worst_parse = max(worst_reward, t1 - t0), max(worst_parse, t2 - t1)
    assert worst_reward < 0.05, f"worst reward call {worst_reward * 1000:.1f} ms"
    assert any(len(t) >= MB for t in inputs) and any(t.count("(") >= 10_000 for t in inputs)
    # the parser sees the same inputs; it must not raise (its budget is throughput, measured by make bench)
    assert worst_parse < 5.0, f"worst parse {worst_parse:.2f} s"
