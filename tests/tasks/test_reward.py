"""TinyZero reward parity: table-driven cases, a differential check against eval, and never-raise fuzzing."""

from __future__ import annotations

import re
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.countdown.generate import ProblemSpec, generate_problems
from tasks.countdown.prompts import make_prompt
from tasks.countdown.reward import breakdown, score

N3 = (1, 2, 3)
MB = 1 << 20

CASES = [
    # correct answer on the last line
    ("<answer> 1 + 2 + 3 </answer>", N3, 6, 1.0),
    # correct with TinyZero's own example form, parentheses and division
    ("<answer> (1 + 2) / 3 </answer>", N3, 1, 1.0),
    # exact rationals: 1/3*3 is exactly 1 (TinyZero: float within 1e-5)
    ("<answer>1/3*3</answer>", (1, 3, 3), 1, 1.0),
    # value misses the target
    ("<answer>1 + 2 * 3</answer>", N3, 9, 0.1),
    # a number used twice
    ("<answer>1 + 2 + 3 + 3</answer>", N3, 9, 0.1),
    # a number missing
    ("<answer>1 + 2</answer>", N3, 3, 0.1),
    # a number that was not given
    ("<answer>1 + 2 + 4</answer>", N3, 7, 0.1),
    # two answers on the last line: the last one wins (correct)
    ("<answer>1 + 2</answer> no, <answer>1 * 2 * 3</answer>", N3, 6, 1.0),
    # two answers on the last line: the last one wins (wrong)
    ("<answer>1 * 2 * 3</answer> no, <answer>1 + 2</answer>", N3, 6, 0.1),
    # answer not on the last line
    ("<think>ok</think>\n<answer>1 + 2 + 3</answer>\nDone.", N3, 6, 0.0),
    # trailing newline: the last line is empty
    ("<answer>1 + 2 + 3</answer>\n", N3, 6, 0.0),
    # answer after the think block on the last line, TinyZero's usual shape
    ("reasoning\n</think>\n<answer> 3 * 2 * 1 </answer>", N3, 6, 1.0),
    # ** is outside the grammar (TinyZero would eval it): invalid, format score
    ("<answer>2 ** 3 * 1</answer>", (2, 3, 1), 8, 0.1),
    # // is outside the grammar: invalid
    ("<answer>(6 // 3) * 1</answer>", (6, 3, 1), 2, 0.1),
    # % is outside the grammar: invalid
    ("<answer>7 % 4 + 1</answer>", (7, 4, 1), 4, 0.1),
    # division by zero
    ("<answer>1 / (2 - 2)</answer>", (1, 2, 2), 0, 0.1),
    # code injection is never executed, only rejected
    ("<answer>__import__('os').system('echo 1 2 3')</answer>", N3, 6, 0.1),
    # statement injection
    ("<answer>1 + 2 + 3; import os</answer>", N3, 6, 0.1),
    # an equation instead of an expression
    ("<answer>1 + 2 + 3 = 6</answer>", N3, 6, 0.1),
    # empty completion
    ("", N3, 6, 0.0),
    # empty answer: no numbers
    ("<answer></answer>", N3, 6, 0.1),
    # unclosed answer tag
    ("<answer>1 + 2 + 3", N3, 6, 0.0),
    # unicode digits are not numbers to eval
    ("<answer>\u0661 + 2 + 3</answer>", N3, 6, 0.1),
    # a leading zero is a syntax error (as in Python)
    ("<answer>01 + 2 + 3</answer>", N3, 6, 0.1),
    # a decimal point could glue given numbers together: invalid (deliberate deviation)
    ("<answer>1.2 * 3 + 2.4</answer>", (1, 2, 3, 2, 4), 6, 0.1),
    # unary minus and plus are fine
    ("<answer>-1 + 2 + +3</answer>", N3, 4, 1.0),
    # tabs and extra spaces are fine
    ("<answer>\t1+2 *\t3 </answer>", N3, 7, 1.0),
    # nesting at CPython's limit (200) is fine
    ("<answer>" + "(" * 200 + "1 + 2 + 3" + ")" * 200 + "</answer>", N3, 6, 1.0),
    # nesting beyond it is invalid, and quick
    ("<answer>" + "(" * 10_000 + "1 + 2 + 3" + ")" * 10_000 + "</answer>", N3, 6, 0.1),
    # a 1 MB line of prose before a correct answer
    ("x" * MB + " <answer>1 + 2 + 3</answer>", N3, 6, 1.0),
    # a 1 MB line of unclosed tags (a quadratic trap for a lazy regex)
    ("<answer>" * (MB // 8), N3, 6, 0.0),
    # 1 MB of digits inside the answer
    ("<answer>" + "9" * MB + "</answer>", N3, 6, 0.1),
    # 1 MB of whitespace-padded unary signs
    ("<answer>" + "- " * (MB // 2) + "1 + 2 + 3</answer>", N3, 6, 0.1),
]


@pytest.mark.parametrize(("completion", "numbers", "target", "expected"), CASES)
def test_reward_table(completion: str, numbers: tuple[int, ...], target: int, expected: float) -> None:
    t0 = time.perf_counter()
    assert score(completion, numbers, target) == expected
    assert time.perf_counter() - t0 < 2.0  # bounded time even on megabyte inputs (loose: CI noise)


def test_reward_weights_are_parameters() -> None:
    assert score("<answer>1+2+3</answer>", N3, 6, correct_score=2.0) == 2.0
    assert score("<answer>1+2</answer>", N3, 6, format_score=0.25) == 0.25
    assert score("no answer", N3, 6, format_score=0.25) == 0.0


def test_breakdown_fields() -> None:
    b = breakdown("<answer> 1 / 3 + 2 </answer>", N3, 3)
    assert (b.has_answer, b.answer, b.numbers_ok, b.value, b.correct, b.score) == (
        True,
        "1 / 3 + 2",
        True,
        Fraction(7, 3),
        False,
        0.1,
    )
    b = breakdown("<answer>1+1</answer>", N3, 2)
    assert (b.has_answer, b.numbers_ok, b.value, b.correct) == (True, False, None, False)
    b = breakdown("nothing", N3, 2)
    assert (b.has_answer, b.answer, b.score) == (False, None, 0.0)


def test_qwen_template_cuts_at_assistant_marker_like_tinyzero() -> None:
    text = "<answer>1+2+3</answer> Assistant: <answer>1+2</answer>"
    assert score(text, N3, 6, template="base") == 0.1  # last answer wins
    text = "<answer>1+2+3</answer> Assistant: nothing"
    assert score(text, N3, 6, template="qwen-instruct") == 0.0  # cut after the marker: no answer left
    assert score(text, N3, 6, template="base") == 1.0


# --- differential check against a restatement of TinyZero's scoring that uses eval -------------------------


def _eval_reference(full_text: str, numbers: tuple[int, ...], target: int) -> float:
    """Behavioural restatement of TinyZero's compute_score (whitelist + eval), for expressions in our grammar."""
    text = full_text.split("Assistant:", 1)[1].split("\n")[-1]
    found = re.findall(r"<answer>(.*?)</answer>", text)
    if not found:
        return 0.0
    answer = found[-1].strip()
    if sorted(int(n) for n in re.findall(r"\d+", answer)) != sorted(numbers):
        return 0.1
    try:
        value = eval(answer, {"__builtins__": None}, {})  # noqa: S307 - oracle over generated grammar only
    except ZeroDivisionError:
        return 0.1
    return 1.0 if abs(value - target) < 1e-5 else 0.1


@st.composite
def expressions(draw: st.DrawFn) -> tuple[str, tuple[int, ...]]:
    nums = draw(st.lists(st.integers(1, 99), min_size=1, max_size=5))
    parts = [str(nums[0])]
    for n in nums[1:]:
        op = draw(st.sampled_from(["+", "-", "*", "/"]))
        atom = ("-" if draw(st.booleans()) else "") + str(n)
        if draw(st.integers(0, 3)) == 0:
            parts = ["(", *parts, ")"]
        parts += [f" {op} ", atom]
    return "".join(parts), tuple(nums)


@settings(max_examples=400, deadline=None)
@given(expressions(), st.integers(-50, 200), st.booleans())
def test_reward_matches_eval_reference(expr_nums: tuple[str, tuple[int, ...]], target: int, exact: bool) -> None:
    expr, nums = expr_nums
    if exact:  # make the target the true value when it is an integer, so correct answers are exercised
        try:
            v = eval(expr)  # noqa: S307
            if abs(v - round(v)) < 1e-9:
                target = round(v)
        except ZeroDivisionError:
            pass
    completion = f"\nsome thinking\n</think>\n<answer> {expr} </answer>"
    prompt = make_prompt(nums, target)
    assert score(completion, nums, target) == _eval_reference(prompt + completion, nums, target)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_score_never_raises_on_arbitrary_text(text: str) -> None:
    assert score(text, N3, 6) in (0.0, 0.1, 1.0)
    wrapped = score(f"<answer>{text}</answer>", N3, 6)
    assert wrapped in ((0.0,) if "\n" in text else (0.1, 1.0))


_PIECES = [
    "<answer>",
    "</answer>",
    "\n",
    "(",
    ")",
    "1",
    "2",
    "3",
    "+",
    "-",
    "*",
    "/",
    "**",
    " ",
    "9" * 40,
    "\u0663",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_score_never_raises_on_adversarial_pieces(pieces: list[str]) -> None:
    assert score("".join(pieces), N3, 6) in (0.0, 0.1, 1.0)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([(3,), (4,), (3, 4)]),
    st.sampled_from(["base", "qwen-instruct"]),
)
def test_reference_solution_always_scores_one(seed: int, ops: tuple[int, ...], template: str) -> None:
    spec = ProblemSpec(num_operands=ops, operand_min=1, operand_max=99, target_min=1, target_max=100)
    for p in generate_problems(spec, 20, seed):
        completion = f"\nthinking\n</think>\n<answer> {p.solution} </answer>"
        assert score(completion, p.numbers, p.target, template=template) == 1.0, p
