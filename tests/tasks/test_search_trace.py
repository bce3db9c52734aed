"""The search-trace corpus plants no verdict cue: position, stated target and oracle knowledge predict nothing.

The audit runs on the tiny preset's problem spec (3 operands in 1..20, + - * /, any positive target) with a fixed
seed, so its numbers are the same on every run; ``pytest -s`` prints them.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from tasks.countdown.degeneracy import count_lines, rates
from tasks.countdown.generate import Problem, ProblemSpec, generate_problems
from tasks.countdown.prompts import extract_answer
from tasks.countdown.search_trace import SearchStyle, audit_corpus, write_search_trace
from tasks.countdown.trace import parse_attempts

TINY_SPEC = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=20, target_min=1, target_max=None)
PROBLEMS = generate_problems(TINY_SPEC, 2000, seed=11)
# 2000 problems x 15 traces: ~2,050 verifying traces, so >= 1,400 verdict lines even at index 5 (a standard error
# of ~0.006 on a rate of ~0.06) in ~2 s
TRACES_PER_PROBLEM = 15
# high slip rates and half the traces verifying: every kind of line occurs often in a few hundred traces
NOISY = SearchStyle(verdict_rate=0.5, slip_rate=0.3, slip_target_share=0.5)


@pytest.fixture(scope="module")
def audit() -> dict[str, object]:
    report = audit_corpus(PROBLEMS, TRACES_PER_PROBLEM, SearchStyle(), seed=0, operators=TINY_SPEC.operators)
    print("\nsearch-trace audit (tiny spec, default SearchStyle, seed 0):")
    for key, value in report.items():
        shown = [None if v is None else round(v, 4) for v in value] if isinstance(value, list) else value
        print(f"  {key}: {round(shown, 4) if isinstance(shown, float) else shown}")
    return report


def test_line_index_does_not_predict_the_verdict(audit: dict[str, object]) -> None:
    p, n = audit["p_this_by_k"], audit["n_by_k"]
    assert min(n) >= 1000, n  # enough verdict lines at every index for the comparison to mean something
    assert max(p) - min(p) <= 0.05, p
    # tighter than asked (~2.5 standard errors of a difference at k = 5): no trend hides inside the 0.05
    assert max(p) - min(p) <= 0.025, p
    # the hazard is the chance that a random expression is right: the first line's hit rate less its slips
    assert p[0] == pytest.approx(audit["hit_rate_first_line"], abs=0.01)


def test_slips_that_state_the_target_are_rejected(audit: dict[str, object]) -> None:
    assert audit["n_slip_target"] >= 100
    assert audit["p_this_slip_target"] <= 0.02
    assert audit["p_this_slip_target"] == 0.0  # the verdict is the arithmetic: a fabricated equality never passes
    assert audit["p_this_stated_target"] < 0.9  # the stated number alone does not decide the verdict


def test_rates_match_the_style(audit: dict[str, object]) -> None:
    assert 0.05 <= audit["verdict_share"] <= 0.10
    assert audit["slip_rate"] == pytest.approx(0.05, abs=0.01)
    expected_plain = sum(0.7**j for j in range(8))  # stop hazard 0.3, cut at 8 lines
    assert audit["mean_lines_plain"] == pytest.approx(expected_plain, abs=0.15)
    # verifying traces solve what their search finds; plain ones only what a random answer hits
    assert audit["success_verifying"] == pytest.approx(audit["accepted_share"], abs=0.02)
    assert audit["success_plain"] == pytest.approx(audit["hit_rate_first_line"], abs=0.015)
    assert audit["success_verifying"] > 3 * audit["success_plain"]


def test_parser_recovers_every_line() -> None:
    rng = random.Random(4)
    traces = [write_search_trace(p, rng, NOISY, TINY_SPEC.operators) for p in PROBLEMS[:600]]
    kinds = set()
    for tr in traces:
        p = tr.problem
        attempts = parse_attempts(tr.completion, p.numbers, p.target)
        assert len(attempts) == len(tr.lines), tr.completion
        for a, t in zip(attempts, tr.lines, strict=True):
            assert a.parsed, (tr.completion, a.reason)
            assert a.line_span == t.line_span
            got = (a.stated_value, a.true_value, a.uses_numbers, a.correct)
            assert got == (t.stated_value, t.true_value, t.uses_numbers, t.correct), tr.completion
            if t.verdict:
                assert (a.verdict, a.paren_span[0], a.verdict_span) == (t.verdict, t.paren_pos, t.verdict_span)
            else:
                assert (a.verdict, a.paren_span, a.accepted) == (None, None, None), tr.completion
            kinds.add((a.correct, a.stated_is_target, a.verdict))
        assert extract_answer(tr.completion) == tr.answer == tr.lines[-1].expression
    # right and accepted, right but misstated (rejected), fabricated target (rejected), plain lines of each kind
    assert {(True, True, "this"), (True, False, "not"), (False, True, "not"), (False, False, "not")} <= kinds
    assert {(True, True, None), (False, True, None), (False, False, None)} <= kinds
    counted = rates(count_lines(tr.completion, tr.problem.numbers, tr.problem.target) for tr in traces)
    verifying = sum(bool(tr.lines[0].verdict) for tr in traces) / len(traces)
    assert counted["verdict_share"] == pytest.approx(verifying)  # the project's own counter agrees


def test_verdicts_follow_the_arithmetic_and_stop_at_the_first_real_hit() -> None:
    rng = random.Random(5)
    for p in PROBLEMS[:600]:
        tr = write_search_trace(p, rng, NOISY, TINY_SPEC.operators)
        right = [t.correct and t.stated_value == p.target for t in tr.lines]
        if tr.lines[0].verdict:
            assert [t.verdict == "this" for t in tr.lines] == right
            assert not any(right[:-1]) and (right[-1] or len(tr.lines) == NOISY.max_lines)
        else:
            assert all(t.verdict == "" for t in tr.lines)
            assert "(not" not in tr.completion and "(this" not in tr.completion
        assert len({t.expression for t in tr.lines}) == len(tr.lines)  # no attempt repeated within a trace


def test_plain_traces_stop_blind_to_the_value() -> None:
    style = dataclasses.replace(SearchStyle(), verdict_rate=0.0)
    rng = random.Random(6)
    stops = {True: [0, 0], False: [0, 0]}  # hit the target -> [stopped after the line, lines that could stop]
    for p in PROBLEMS:
        for _ in range(5):
            lines = write_search_trace(p, rng, style, TINY_SPEC.operators).lines
            for k, t in enumerate(lines[: style.max_lines - 1]):
                stops[t.correct][0] += k == len(lines) - 1
                stops[t.correct][1] += 1
    assert stops[True][1] > 1000
    for hit, (stopped, n) in stops.items():
        assert stopped / n == pytest.approx(style.stop_rate, abs=0.03), (hit, stopped, n)


def test_the_writer_needs_no_solution_and_is_deterministic() -> None:
    bare = [Problem(p.numbers, p.target) for p in PROBLEMS[:300]]
    a = [write_search_trace(p, random.Random(7), NOISY).completion for p in PROBLEMS[:300]]
    b = [write_search_trace(p, random.Random(7), NOISY).completion for p in bare]
    assert a == b  # the reference solution changes nothing: the writer never reads it
    assert audit_corpus(PROBLEMS[:200], 3, NOISY, seed=3) == audit_corpus(PROBLEMS[:200], 3, NOISY, seed=3)
    assert audit_corpus(PROBLEMS[:200], 3, NOISY, seed=3) != audit_corpus(PROBLEMS[:200], 3, NOISY, seed=4)


def test_operators_that_cannot_combine_the_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot combine"):
        write_search_trace(Problem((7, 3, 5), 1), random.Random(0), SearchStyle(), ("/",))


def test_chain_lines_state_one_binary_step_per_equals_and_parse_back() -> None:
    """``chain``: each "=" of an attempt line states one addition or subtraction's value; the parser folds the chain
    into the line's expression and reads back its stated value, truth and verdict."""
    import random

    from tasks.countdown.generate import ProblemSpec, generate_problems
    from tasks.countdown.search_trace import SearchStyle, write_search_trace
    from tasks.countdown.trace import parse_attempts

    spec = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=20, target_max=None, operators=("+", "-"))
    rng = random.Random(0)
    for p in generate_problems(spec, 50, seed=3):
        tr = write_search_trace(p, rng, SearchStyle(verdict_rate=1.0, chain=True), ("+", "-"))
        got = parse_attempts(tr.completion, p.numbers, p.target)
        assert len(got) == len(tr.lines)
        for a, want in zip(got, tr.lines, strict=True):
            assert len(a.eq_positions) == 2 and a.true_value == want.true_value
            assert a.stated_value == want.stated_value and a.verdict == want.verdict


def test_the_testbed_presets_own_corpus_passes_the_audit() -> None:
    """configs/tiny.yaml's problems and search style, audited as the issue asks: P("this" | line k) for
    k = 0..5 within 0.05 of each other, a slip stating the target accepted at most 2% of the time, 5-10% of traces
    verifying. Read from the preset itself, so a change there is audited here."""
    from pathlib import Path

    from tasks.config import read_preset

    cfg = read_preset(Path(__file__).parents[2] / "configs" / "tiny.yaml")
    d = cfg["data"]
    spec = ProblemSpec(
        num_operands=tuple(d["num_operands"]),
        operand_min=d["operand_min"],
        operand_max=d["operand_max"],
        target_min=d["target_min"],
        target_max=d["target_max"],
        operators=tuple(d["operators"]),
    )
    style = SearchStyle(**cfg["base"]["search"])
    report = audit_corpus(generate_problems(spec, 1000, seed=11), 40, style, seed=0, operators=spec.operators)
    print(f"\ntiny preset corpus audit (1000 problems x 40 traces): {report}")
    p = report["p_this_by_k"]
    assert min(report["n_by_k"]) > 800 and max(p) - min(p) <= 0.05
    assert report["n_slip_target"] > 100 and report["p_this_slip_target"] <= 0.02
    assert 0.05 <= report["verdict_share"] <= 0.10 + 0.005  # 1 trace in 10 drawn: 0.100 +- 0.0015 over 40,000
    assert report["success_verifying"] > 3 * report["success_plain"]  # checking pays for a writer that can check
    # the priming corpus (every trace verifying, its own slips): verdicts still follow the arithmetic, and the stated
    # number alone predicts "(this" worse than in the corpus, so the check it teaches must read the line
    from train.base_pretrain import priming
    from train.config import load_train_config

    primer = priming(load_train_config("tiny").base).search  # exactly the style the base builder primes with
    primed = audit_corpus(generate_problems(spec, 1000, seed=11), 10, primer, seed=0, operators=spec.operators)
    print(f"priming corpus audit: {primed}")
    assert primed["verdict_share"] == 1.0 and primed["p_this_slip_target"] == 0.0
    assert primed["p_this_stated_target"] <= 0.9 < report["p_this_stated_target"]
