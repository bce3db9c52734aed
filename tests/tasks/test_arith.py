"""The shared exact evaluator: Python's precedence, exact rationals, the grammar's limits."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.countdown import arith


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 + 2 * 3", 7),  # * binds tighter than +
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),  # left associative
        ("8 / 4 / 2", 1),
        ("7 / 2", Fraction(7, 2)),  # exact, not 3.5 as a float
        ("1 / 3 * 3", 1),  # exactly 1, an int
        ("-3 * 2", -6),
        ("2 * -3", -6),
        ("2 - -3", 5),
        ("--3", 3),
        ("+3", 3),
        ("0", 0),
        ("00", 0),  # Python accepts all-zero literals
        ("  12\t+ 3 ", 15),
    ],
)
def test_evaluate_values(text: str, value: arith.Number) -> None:
    got = arith.evaluate(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1 +",
        "* 2",
        "2 ** 3",
        "6 // 3",
        "7 % 2",
        "1 2",
        "2(3)",
        "(1",
        "1)",
        "()",
        "1.5",
        "07",
        "x",
        "\u0663",
        "1 = 1",
        "1,2",
        "(" * 201 + "1" + ")" * 201,
        "-" * 1001 + "1",
        "9" * 31,
    ],
)
def test_evaluate_rejects(text: str) -> None:
    with pytest.raises(arith.ExprSyntaxError):
        arith.evaluate(text)


def test_division_by_zero_is_its_own_error() -> None:
    with pytest.raises(arith.ExprZeroDivision):
        arith.evaluate("1 / (2 - 2)")


def test_limits_match_cpython() -> None:
    assert arith.evaluate("(" * 200 + "1" + ")" * 200) == 1
    assert arith.evaluate("-" * 1000 + "1") == 1
    with pytest.raises(arith.ExprSyntaxError):
        arith.evaluate(" " * 20_000 + "1" + "+1" * 10_000)


def test_literals_and_multisets() -> None:
    assert arith.literals("(12 + 3) * -4") == [12, 3, 4]
    assert arith.literals("1 2 3 4 5", limit=2) == [1, 2, 3]
    with pytest.raises(arith.ExprSyntaxError):
        arith.literals("9" * 100)
    assert arith.same_multiset([3, 1, 3], [3, 3, 1])
    assert not arith.same_multiset([3, 1], [3, 3, 1])
    assert arith.is_sub_multiset([3, 3], [3, 1, 3])
    assert not arith.is_sub_multiset([3, 3], [3, 1])


@st.composite
def expressions(draw: st.DrawFn) -> str:
    def expr(depth: int) -> str:
        if depth == 0 or draw(st.integers(0, 2)) == 0:
            return ("-" if draw(st.booleans()) else "") + str(draw(st.integers(0, 99)))
        left, right = expr(depth - 1), expr(depth - 1)
        op = draw(st.sampled_from("+-*/"))
        return f"({left} {op} {right})" if draw(st.booleans()) else f"{left} {op} {right}"

    return expr(4)


@settings(max_examples=500, deadline=None)
@given(expressions())
def test_evaluate_agrees_with_python(text: str) -> None:
    try:
        expected = eval(text)  # noqa: S307 - oracle over generated grammar only
    except ZeroDivisionError:
        with pytest.raises(arith.ExprZeroDivision):
            arith.evaluate(text)
        return
    got = arith.evaluate(text)
    assert abs(float(got) - expected) <= 1e-9 * max(1.0, abs(expected))
