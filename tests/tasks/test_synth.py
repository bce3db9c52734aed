"""The trace writer's knobs do what they say: clean traces solve the problem, noise shows up where asked."""

from __future__ import annotations

import random

import pytest

from tasks.countdown.generate import Problem, ProblemSpec, generate_problems
from tasks.countdown.reward import score
from tasks.countdown.synth import TraceStyle, write_trace

PROBLEMS = generate_problems(ProblemSpec(num_operands=(3,), operand_max=20, target_max=None), 300, seed=2)


def test_clean_traces_end_with_the_right_answer() -> None:
    rng = random.Random(0)
    for p in PROBLEMS:
        tr = write_trace(p, rng, TraceStyle(max_wrong=3))
        assert score(tr.completion, p.numbers, p.target) == 1.0, tr.completion
        assert tr.lines[-1].verdict == "this" and tr.lines[-1].correct
        assert all(t.verdict == "not" and not t.correct for t in tr.lines[:-1])
        assert tr.prompt.endswith("<think>")


def test_verdict_noise_accepts_wrong_lines_and_costs_reward() -> None:
    rng = random.Random(1)
    traces = [write_trace(p, rng, TraceStyle(max_wrong=3, verdict_noise=1.0)) for p in PROBLEMS]
    with_wrong = [tr for tr in traces if not tr.lines[0].correct]
    assert len(with_wrong) > 100
    for tr in with_wrong:  # the first wrong line is accepted and ends the trace with its wrong answer
        assert len(tr.lines) == 1 and tr.lines[0].verdict == "this"
        assert score(tr.completion, tr.problem.numbers, tr.problem.target) == pytest.approx(0.1)


def test_reject_noise_rejects_the_right_line_and_searches_on() -> None:
    rng = random.Random(2)
    traces = [write_trace(p, rng, TraceStyle(max_wrong=0, reject_noise=0.5)) for p in PROBLEMS]
    rejected = [tr for tr in traces if tr.lines[0].correct and tr.lines[0].verdict == "not"]
    assert 90 < len(rejected) < 210
    assert all(len(tr.lines) > 1 for tr in rejected)


def test_slips_and_chains_and_invented_operands_appear_at_their_rates() -> None:
    rng = random.Random(3)
    style = TraceStyle(max_wrong=4, slip_rate=0.3, chain_rate=0.5, wrong_numbers_rate=0.3)
    lines = [t for p in PROBLEMS for t in write_trace(p, rng, style).lines]
    slip = sum(t.stated_value != t.true_value for t in lines) / len(lines)
    invented = sum(not t.uses_numbers for t in lines) / len(lines)
    assert 0.2 < slip < 0.4
    assert 0.1 < invented < 0.4


def test_problem_without_solution_is_refused() -> None:
    with pytest.raises(ValueError, match="reference solution"):
        write_trace(Problem((1, 2, 3), 6), random.Random(0))


def test_verdict_rate_mixes_plain_traces_and_keeps_the_default_corpus() -> None:
    from tasks.countdown.degeneracy import count_lines, rates

    style = TraceStyle(max_wrong=3, verdict_rate=0.15)
    rng = random.Random(3)
    traces = [write_trace(p, rng, style) for p in PROBLEMS for _ in range(3)]
    r = rates([count_lines(t.completion, t.problem.numbers, t.problem.target) for t in traces])
    assert 0.10 < r["verdict_share"] < 0.20  # only the structured share writes a verdict in any form
    plain = [t for t in traces if not t.lines]
    assert all("<answer>" in t.completion and "(not" not in t.completion for t in plain)
    assert any("Let me try" in t.completion for t in plain) and any("\n- " in t.completion for t in plain)
    # the default draws no extra random number: the same traces as an explicit verdict_rate of 1
    a = [write_trace(p, random.Random(9), TraceStyle(max_wrong=3)).completion for p in PROBLEMS[:50]]
    b = [write_trace(p, random.Random(9), TraceStyle(max_wrong=3, verdict_rate=1.0)).completion for p in PROBLEMS[:50]]
    assert a == b
