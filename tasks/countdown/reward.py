"""TinyZero's Countdown reward as a pure function, plus the breakdown that training logs.

``score`` returns what TinyZero's ``compute_score`` returns for ``prompt + completion`` with the base
template: 0 when the last line holds no ``<answer>...</answer>``; the format score (0.1) when the answer's
integer literals are not exactly the given multiset, or it does not evaluate, or its value misses the
target; the correct score (1.0) when ``|value - target| < 1e-5``.

Deliberate deviations, all on answers TinyZero would pass to ``eval``:
- Only ``+ - * /``, parentheses, unary signs, spaces and tabs are evaluated (:mod:`tasks.countdown.arith`).
  ``**``, ``//``, ``%``, decimal points and anything else are invalid (format score). TinyZero's whitelist
  lets ``**`` (a hang on ``9**9**9``), ``//`` and decimals through; a decimal point would let a policy glue
  two given numbers into one (``1.5`` from 1 and 5).
- Arithmetic is exact (rationals), so the 1e-5 tolerance is applied to the exact value, not a float.
- Inputs beyond CPython's own limits (200 nested parentheses, very long expressions) are invalid rather than
  interpreter-dependent; so are non-ASCII digits, which Python's ``eval`` rejects as well.
Nothing here raises on any string, and time is linear in the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from tasks.countdown import arith
from tasks.countdown.prompts import extract_answer

FORMAT_SCORE = 0.1
CORRECT_SCORE = 1.0
TOLERANCE = Fraction(1, 100_000)


@dataclass(frozen=True)
class RewardBreakdown:
    """Why a completion got its score; every field is cheap to log."""

    score: float
    has_answer: bool
    answer: str | None
    numbers_ok: bool
    value: arith.Number | None
    correct: bool


def breakdown(
    completion: str,
    numbers: Sequence[int],
    target: int,
    *,
    format_score: float = FORMAT_SCORE,
    correct_score: float = CORRECT_SCORE,
    template: str = "base",
) -> RewardBreakdown:
    """Score one completion and say why: has answer, numbers ok, exact value, correct."""
    answer = extract_answer(completion, template)
    if answer is None:
        return RewardBreakdown(0.0, False, None, False, None, False)
    try:
        used = arith.literals(answer, limit=len(numbers))
    except arith.ArithError:
        used = None
    numbers_ok = used is not None and arith.same_multiset(used, numbers)
    if not numbers_ok:
        return RewardBreakdown(format_score, True, answer, False, None, False)
    try:
        value = arith.evaluate(answer)
    except arith.ArithError:
        return RewardBreakdown(format_score, True, answer, True, None, False)
    correct = abs(value - target) < TOLERANCE
    return RewardBreakdown(correct_score if correct else format_score, True, answer, True, value, correct)


def score(
    completion: str,
    numbers: Sequence[int],
    target: int,
    *,
    format_score: float = FORMAT_SCORE,
    correct_score: float = CORRECT_SCORE,
    template: str = "base",
) -> float:
    """TinyZero's Countdown reward for ``completion`` (the text generated after the prompt)."""
    return breakdown(
        completion, numbers, target, format_score=format_score, correct_score=correct_score, template=template
    ).score
