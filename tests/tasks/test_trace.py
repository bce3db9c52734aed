"""The chain-of-thought parser: exact values and spans on the forms trained models write, never a guess."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.countdown.acceptance import ACCEPT_WORDS, REJECT_WORDS
from tasks.countdown.accepted import accepted_attempts
from tasks.countdown.generate import ProblemSpec, generate_problems
from tasks.countdown.synth import TraceStyle, write_trace
from tasks.countdown.trace import Attempt, parse_attempts

N4 = (90, 67, 60, 12)


def one(text: str, numbers: tuple[int, ...] = N4, target: int = 49) -> Attempt:
    attempts = parse_attempts(text, numbers, target)
    assert len(attempts) == 1, attempts
    return attempts[0]


def test_rejected_wrong_attempt_with_exact_spans() -> None:
    text = "- 90 - 67 + 60 - 12 = 71 (not 49)"
    a = one(text)
    assert a.parsed and a.verdict == "not" and a.verdict_word == "not"
    assert (a.stated_value, a.true_value, a.uses_numbers, a.correct) == (71, 71, True, False)
    assert a.expression == "90 - 67 + 60 - 12" and text[slice(*a.expr_span)] == a.expression
    assert text[slice(*a.paren_span)] == "(" and a.paren_span == (25, 26)
    assert text[slice(*a.verdict_span)] == "not"
    assert text[slice(*a.stated_span)] == "71" and a.eq_positions == (20,)
    assert a.line_span == (0, len(text)) and a.arithmetic_ok and not a.stated_is_target


def test_accepted_right_attempt() -> None:
    a = one("- 67 + 60 + 12 - 90 = 49 (this works)")
    assert (a.verdict, a.stated_value, a.true_value, a.correct, a.stated_is_target) == (
        "this",
        49,
        49,
        True,
        True,
    )


def test_arithmetic_slip_reports_written_and_true_separately() -> None:
    a = one("90 - 67 - 60 + 12 = -15 (not 49)")
    assert (a.stated_value, a.true_value, a.arithmetic_ok, a.verdict) == (-15, -25, False, "not")


def test_right_attempt_wrongly_rejected() -> None:
    a = one("- 67 + 60 + 12 - 90 = 49 (not 49)")
    assert a.correct and a.verdict == "not"


def test_chained_continuation() -> None:
    text = "- 87 - 38 = 49 + 3 = 52 (not 50)"
    a = one(text, (87, 38, 3), 50)
    assert a.expression == "(87 - 38) + 3"
    assert a.stated_values == (49, 52) and a.stated_value == 52 and a.true_value == 52
    assert a.uses_numbers and not a.correct
    assert [text[slice(*s)] for s in a.stated_spans] == ["49", "52"]
    assert [text[q] for q in a.eq_positions] == ["=", "="]


def test_chained_continuation_with_a_slip_still_folds() -> None:
    a = one("- 87 - 38 = 48 + 3 = 51 (not 50)", (87, 38, 3), 50)
    assert a.expression == "(87 - 38) + 3" and a.true_value == 52 and a.stated_value == 51


def test_chained_restatement_is_not_folded() -> None:
    a = one("87 - 38 + 3 = 49 + 3 = 52 (this works)", (87, 38, 3), 52)
    assert a.expression == "87 - 38 + 3" and a.true_value == 52 and a.correct and a.verdict == "this"


def test_yes_we_got_it_ending_is_an_other_verdict() -> None:
    text = "- 87 - 38 + 3 = 52! Yes, we got it!"
    a = one(text, (87, 38, 3), 52)
    assert a.parsed and a.verdict is None and a.verdict_word == "Yes" and a.paren_span is None
    assert text[slice(*a.verdict_span)] == "Yes" and a.correct


def test_other_verdict_word_in_parentheses() -> None:
    a = one("- 1 + 2 + 3 = 6 (close, try again)", (1, 2, 3), 7)
    assert a.verdict is None and a.verdict_word == "close" and a.paren_span is not None


def test_invented_operand_and_division_by_zero() -> None:
    a = one("- 90 - 67 + 61 - 12 = 72 (not 49)")
    assert not a.uses_numbers and a.true_value == 72
    b = one("- 5 / (3 - 3) = 0 (not 4)", (5, 3, 3), 4)
    assert b.parsed and b.true_value is None and not b.correct


def test_fractional_values() -> None:
    a = one("- 7 / 2 = 3.5 (not 4)", (7, 2), 4)
    assert a.true_value == Fraction(7, 2) and a.stated_value == Fraction(7, 2) and a.arithmetic_ok


@pytest.mark.parametrize(
    "line",
    [
        "1. 90 - 67 + 60 - 12 = 71 (not 49)",
        "* 90 - 67 + 60 - 12 = 71 (not 49)",
        "  90 - 67 + 60 - 12 = 71 (not 49)",
        "Step 1: 90 - 67 + 60 - 12 = 71 (not 49)",
        "\u2022 90 - 67 + 60 - 12 = 71. (not 49)",
    ],
)
def test_bullets_labels_and_punctuation(line: str) -> None:
    a = one(line)
    assert a.parsed and a.expression == "90 - 67 + 60 - 12" and a.stated_value == 71 and a.verdict == "not"
    assert line[slice(*a.paren_span)] == "("


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("Let's try 44 + 19 = 63", "expression"),
        ("- 44 + = 63 (not 5)", "expression"),
        ("(not 49)", "without '='"),
        ("- 1 + 2 = (not 3)", "no number"),
        ("= 49 (this works)", "no expression"),
        ("- 1 + 2 = 3 + = 3 (not 5)", "segment"),
        ("- 2 ** 3 = 8 (not 5)", "expression"),
    ],
)
def test_malformed_lines_are_kept_unparsed(line: str, reason: str) -> None:
    a = one(line, (1, 2, 3), 5)
    assert not a.parsed and reason in a.reason
    assert a.verdict is None and a.stated_value is None and a.true_value is None and a.line_span == (0, len(line))


def test_only_reasoning_lines_are_attempts() -> None:
    text = (
        "\nWe have 1, 2, 3. Let's try:\n- 1 + 2 + 3 = 6 (not 7)\r\nno equals here (just prose)\n"
        "- 1 * 2 + 3 = 5 (not 7)\nSo the equation is 1 + 2 * 3.\n</think>\n<answer> 1 + 2 * 3 </answer>\n"
        "- 3 + 2 + 1 = 6 (not 7)"
    )
    attempts = parse_attempts(text, (1, 2, 3), 7)
    assert [a.stated_value for a in attempts] == [6, 5]
    first = attempts[0]
    assert text[slice(*first.line_span)] == "- 1 + 2 + 3 = 6 (not 7)"  # "\r" excluded


def test_answer_line_inside_reasoning_is_skipped() -> None:
    assert parse_attempts("<answer> 1 + 2 = 3 </answer>", (1, 2), 3) == []


def test_round_trip_on_generated_traces() -> None:
    style = TraceStyle(
        max_wrong=5,
        slip_rate=0.25,
        verdict_noise=0.15,
        reject_noise=0.15,
        chain_rate=0.3,
        wrong_numbers_rate=0.2,
    )
    rng = random.Random(0)
    problems = generate_problems(ProblemSpec(num_operands=(3, 4), operand_max=50, target_max=None), 800, seed=5)
    lines = 0
    kinds = set()
    for p in problems:
        tr = write_trace(p, rng, style)
        attempts = parse_attempts(tr.completion, p.numbers, p.target)
        assert len(attempts) == len(tr.lines)
        for a, t in zip(attempts, tr.lines, strict=True):
            assert a.parsed, (tr.completion, a.reason)
            assert a.line_span == t.line_span
            assert (a.stated_value, a.true_value, a.uses_numbers, a.correct) == (
                t.stated_value,
                t.true_value,
                t.uses_numbers,
                t.correct,
            ), tr.completion
            assert (a.verdict, a.paren_span[0], a.verdict_span) == (t.verdict, t.paren_pos, t.verdict_span)
            kinds.add((a.correct, a.verdict, a.arithmetic_ok, a.uses_numbers, len(a.eq_positions) > 1))
            lines += 1
    assert lines > 2000
    # every combination the analysis labels on occurs: right/wrong x accepted/rejected, slips, chains
    assert {(c, v) for c, v, *_ in kinds} == {(True, "this"), (True, "not"), (False, "this"), (False, "not")}
    assert any(not k[2] for k in kinds) and any(k[4] for k in kinds) and any(not k[3] for k in kinds)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(list("0123456789 +-*/()=\n.!:abnotisw<>") + ["(not ", "(this works)", "</think>"])))
def test_parse_never_raises_and_spans_stay_in_bounds(pieces: list[str]) -> None:
    text = "".join(pieces)
    for a in parse_attempts(text, (1, 2, 3), 6):
        assert 0 <= a.line_span[0] <= a.line_span[1] <= len(text)
        if a.parsed:
            assert text[a.paren_span[0]] == "(" if a.paren_span else True
            assert all(text[q] == "=" for q in a.eq_positions)


# acceptance: (line, numbers, target, accepted, verdict, stated_value, correct)
ACCEPTANCE = [
    ("- 67 + 60 + 12 - 90 = 49 (this works)", N4, 49, True, "this", 49, True),
    ("- 90 - 67 + 60 - 12 = 71 (not 49)", N4, 49, False, "not", 71, False),
    ("- 67 + 60 + 12 - 90 = 49 (not 49)", N4, 49, False, "not", 49, True),  # right answer wrongly rejected
    ("- 44 + 19 - 35 = 28! Yes, we got it!", (44, 19, 35), 28, True, None, 28, True),
    ("- 8 * 8 + 2 = 66 exactly!", (8, 8, 2), 66, True, None, 66, True),
    ("- 87 - 38 + 3 = 52!", (87, 38, 3), 52, True, None, 52, True),
    ("- 87 - 38 + 3 = 52 exactly", (87, 38, 3), 52, True, None, 52, True),
    ("- 8 * 3 = 24 yes", (8, 3), 24, True, None, 24, True),
    ("- 8 * 3 = 24, which is the target", (8, 3), 24, True, None, 24, True),
    ("- 87 - 38 + 3 = 52 (correct)", (87, 38, 3), 52, True, None, 52, True),
    ("- 87 - 38 + 3 = 52 (Correct!)", (87, 38, 3), 52, True, None, 52, True),
    ("- 87 - 38 + 3 = 52 (wrong)", (87, 38, 3), 46, False, None, 52, False),
    ("- 87 - 38 + 3 = 52 (close, try again)", (87, 38, 3), 46, False, None, 52, False),
    ("- 87 - 38 + 3 = 52", (87, 38, 3), 52, None, None, 52, True),
    ("- 87 - 38 + 3 = 52, no", (87, 38, 3), 46, False, None, 52, False),
    ("- 87 - 38 + 3 = 52 not 46", (87, 38, 3), 46, False, "not", 52, False),  # bare "not": verdict as before
    ("- 87 - 38 - 3 = 50 wrong", (87, 38, 3), 52, False, None, 50, False),  # slip: true value 46
    ("- 87 - 38 - 3 = 46, too low!", (87, 38, 3), 52, False, None, 46, False),  # "!" loses to a rejection
    ("- 87 - 38 - 3 = 46, not correct", (87, 38, 3), 52, False, "not", 46, False),
    ("- 87 - 38 - 3 = 46, which is not the target", (87, 38, 3), 52, False, None, 46, False),
    ("- 87 - 38 + 3 = 52 (hmm", (87, 38, 3), 52, None, None, 52, True),
    ("- 87 - 38 + 3 = 52 ( 87 - 35 )", (87, 38, 3), 52, None, None, 52, True),  # "(" with no word
    ("- 87 - 38 + 3 = 52, yes... no wait", (87, 38, 3), 52, None, None, 52, True),  # says both
    ("- 87 - 38 + 3 = 52, let me check", (87, 38, 3), 52, None, None, 52, True),
    ("- 87 - 38 = 49 + 3 = 52 (this works)", (87, 38, 3), 52, True, "this", 52, True),  # chained
    ("- 87 - 38 = 49 + 3 = 52 (not 50)", (87, 38, 3), 50, False, "not", 52, False),
    ("- 87 - 38 + 3 = 52, so (this works)", (87, 38, 3), 52, True, None, 52, True),
]


@pytest.mark.parametrize(("line", "numbers", "target", "accepted", "verdict", "stated", "correct"), ACCEPTANCE)
def test_accepted_in_any_form(
    line: str, numbers: tuple[int, ...], target: int, accepted: bool | None, verdict: str | None, stated, correct
) -> None:
    a = one(line, numbers, target)
    assert a.parsed and a.accepted is accepted
    assert (a.verdict, a.stated_value, a.correct) == (verdict, stated, correct)  # the old fields are untouched


@pytest.mark.parametrize("line", ["Let's try 44 + 19 = 63 (this works)", "(not 49)", "- 1 + 2 = (this works)"])
def test_unparsed_lines_are_not_judged(line: str) -> None:
    a = one(line, (1, 2, 3), 5)
    assert not a.parsed and a.accepted is None


def test_acceptance_vocabularies_are_disjoint() -> None:
    assert not ACCEPT_WORDS & REJECT_WORDS and "this" not in REJECT_WORDS and "not" in REJECT_WORDS


NUM3 = (87, 38, 3)


@pytest.mark.parametrize(
    ("completion", "judged"),
    [
        # the answer repeats the last line: accepted though the line has no verdict
        ("- 87 - 38 - 3 = 46 (not 52)\n- 87 - 38 + 3 = 52\n</think>\n<answer> 87 - 38 + 3 </answer>", [False, True]),
        # spaces and prose between the line and the answer do not matter
        ("- 87 - 38 + 3 = 52\nSo that is it.\n</think>\n<answer>87-38+3</answer>", [True]),
        # a continuation chain matches its folded expression too
        ("- 87 - 38 = 49 + 3 = 52\n</think>\n<answer> (87 - 38) + 3 </answer>", [True]),
        # the answer after a rejected line does not overturn the rejection
        ("- 87 - 38 + 3 = 52 (not 50)\n</think>\n<answer> 87 - 38 + 3 </answer>", [False]),
        # the answer repeats an earlier line, not the one right before it: nothing changes
        ("- 87 - 38 + 3 = 52\n- 87 + 38 - 3 = 122\n</think>\n<answer> 87 - 38 + 3 </answer>", [None, None]),
        # a different expression, or no answer at all
        ("- 87 - 38 + 3 = 52\n</think>\n<answer> 3 + 87 - 38 </answer>", [None]),
        ("- 87 - 38 + 3 = 52\n</think>\n", [None]),
        # an unparsed last line sits between: no carry-over
        ("- 87 - 38 + 3 = 52\nthen 87 + 38 = x\n</think>\n<answer> 87 - 38 + 3 </answer>", [None, None]),
        # an already-accepted line stays accepted
        ("- 87 - 38 + 3 = 52!\n</think>\n<answer> 87 - 38 + 3 </answer>", [True]),
    ],
)
def test_accepted_attempts_counts_the_answer(completion: str, judged: list[bool | None]) -> None:
    pairs = accepted_attempts(completion, NUM3, 52)
    assert [j for _, j in pairs] == judged
    assert [a for a, _ in pairs] == parse_attempts(completion, NUM3, 52)  # the attempts themselves are unchanged
