"""Synthetic search traces in the structured R1-Zero format, each with the ground truth of every attempt line.

Two users: the tiny preset pre-trains its base model on these traces (a small model learns the format, the
search and imperfect checking from them), and the parser's tests round-trip them (every span, value and
verdict the writer put in must come back out of :func:`tasks.countdown.trace.parse_attempts`).

The knobs in :class:`TraceStyle` make the checking imperfect on purpose, because the analysis needs RL to
have something to fix: ``slip_rate`` writes a wrong value for an attempt, ``verdict_noise`` accepts a wrong
line ("(this works)") and ends the trace with that wrong answer, ``reject_noise`` rejects the right line and
searches on, ``wrong_numbers_rate`` uses an operand that was not given.

``verdict_rate`` < 1 mixes styles as a pre-trained model's text would: only that share of traces writes structured
verdict lines; the others commit without any verdict, half of them with a single guess ("Let me try ..."), half
with attempt lines that state a value but never judge it, stopping at the first line whose value is the target.
At 1 (the default) no random number is drawn for it, so existing corpora are unchanged bit for bit.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from tasks.countdown import arith
from tasks.countdown.generate import Expr, Problem, combine, leaf, random_expression
from tasks.countdown.prompts import make_prompt

Span = tuple[int, int]


@dataclass(frozen=True)
class TraceStyle:
    """How synthetic traces are written (see the module docstring for what each rate does)."""

    max_wrong: int = 4
    slip_rate: float = 0.0
    verdict_noise: float = 0.0
    reject_noise: float = 0.0
    chain_rate: float = 0.0
    wrong_numbers_rate: float = 0.0
    verdict_rate: float = 1.0


@dataclass(frozen=True)
class LineTruth:
    """What the writer put on one attempt line, in the same terms as :class:`trace.Attempt`."""

    line_span: Span
    expression: str
    stated_value: arith.Number
    true_value: arith.Number
    uses_numbers: bool
    correct: bool
    verdict: str
    paren_pos: int
    verdict_span: Span


@dataclass(frozen=True)
class SynthTrace:
    """A completion (the text after the prompt's ``<think>``) and the truth of each of its attempt lines."""

    problem: Problem
    completion: str
    lines: tuple[LineTruth, ...]
    answer: str

    @property
    def prompt(self) -> str:
        return make_prompt(self.problem.numbers, self.problem.target)


def _chain(numbers: list[int], ops: list[str]) -> tuple[str, Expr] | None:
    """Left-deep chained steps ``a o b = v1 o c = v2 ...`` with integer intermediate values."""
    expr = leaf(numbers[0])
    text = str(numbers[0])
    for k, (op, n) in enumerate(zip(ops, numbers[1:], strict=True)):
        made = combine(expr, op, leaf(n))
        if made is None or not isinstance(made.value, int):
            return None
        text += f" {op} {n}" if k == 0 else f" = {expr.value} {op} {n}"
        expr = made
    return text, expr


def _chained_hit(
    numbers: tuple[int, ...], target: int, rng: random.Random, operators: tuple[str, ...]
) -> tuple[str, Expr] | None:
    """A chained left-deep route to ``target``, if one exists (at most 4! x 4^3 orderings to try)."""
    orders = list(itertools.permutations(numbers))
    rng.shuffle(orders)
    for order in orders:
        for ops in itertools.product(operators, repeat=len(numbers) - 1):
            made = _chain(list(order), list(ops))
            if made is not None and made[1].value == target:
                return made
    return None


def _attempt(
    problem: Problem, rng: random.Random, style: TraceStyle, operators: tuple[str, ...], right: bool
) -> tuple[str, Expr] | None:
    """(text before the last "= value", expression) for one attempt; right ones reach the target."""
    numbers = list(problem.numbers)
    chained = len(numbers) > 2 and rng.random() < style.chain_rate
    if right:
        if chained:
            hit = _chained_hit(problem.numbers, problem.target, rng, operators)
            if hit is not None:
                return hit
        expr = _solution_expr(problem, rng)
        return expr.text, expr
    if rng.random() < style.wrong_numbers_rate:
        numbers[rng.randrange(len(numbers))] = rng.randint(1, max(9, *numbers))
    for _ in range(20):
        rng.shuffle(numbers)
        if chained:
            made = _chain(numbers, [rng.choice(operators) for _ in numbers[1:]])
        else:
            expr = random_expression(numbers, rng, operators)
            made = None if expr is None else (expr.text, expr)
        if made is not None and made[1].value != problem.target:
            return made
    return None


def _solution_expr(problem: Problem, rng: random.Random) -> Expr:
    """The reference solution as an :class:`Expr` (its value re-computed exactly)."""
    return Expr(problem.solution, arith.evaluate(problem.solution), 0, problem.numbers)


def write_trace(
    problem: Problem,
    rng: random.Random,
    style: TraceStyle = TraceStyle(),
    operators: tuple[str, ...] = ("+", "-", "*", "/"),
) -> SynthTrace:
    """One trace for ``problem``: some wrong attempts, then the right one (unless noise intervenes).

    ``operators`` are those the attempts may use (the problems' own, so the traces match the task).
    """
    if not problem.solution:
        raise ValueError("write_trace needs a problem with a reference solution (a generated problem)")
    if style.verdict_rate < 1.0 and rng.random() >= style.verdict_rate:
        return _plain_trace(problem, rng, style, operators)
    t = problem.target
    nums = ", ".join(str(n) for n in problem.numbers)
    text = f"\nWe have the numbers {nums} and need to reach {t}. Let's try different combinations:\n"
    lines: list[LineTruth] = []
    plan = ["wrong"] * rng.randint(0, style.max_wrong) + ["right"]
    answer = ""
    k = 0
    while k < len(plan):
        right = plan[k] == "right"
        k += 1
        made = _attempt(problem, rng, style, operators, right)
        if made is None:
            continue
        head, expr = made
        true_value = expr.value
        stated = true_value
        if rng.random() < style.slip_rate:
            stated = true_value + rng.choice([d for d in range(-10, 11) if d])
        accept = stated == t
        if not right and rng.random() < style.verdict_noise:
            accept = True
        if right and accept and rng.random() < style.reject_noise:
            accept = False
        if right and not accept and len(plan) < style.max_wrong + 8:
            plan[k:k] = ["wrong"] * rng.randint(0, 2) + ["right"]  # rejected the right line: search on
        verdict_text = "(this works)" if accept else f"(not {t})"
        start = len(text)
        line = f"- {head} = {stated} "
        paren = start + len(line)
        word = "this" if accept else "not"
        text += line + verdict_text + "\n"
        lines.append(
            LineTruth(
                line_span=(start, start + len(line) + len(verdict_text)),
                expression=expr.text,
                stated_value=stated,
                true_value=true_value,
                uses_numbers=arith.same_multiset(expr.operands, problem.numbers),
                correct=true_value == t,
                verdict=word,
                paren_pos=paren,
                verdict_span=(paren + 1, paren + 1 + len(word)),
            )
        )
        if accept:
            answer = expr.text
            break
    if not answer:  # the search gave up: answer with the last attempt, as a model out of budget would
        answer = lines[-1].expression if lines else problem.solution
    text += f"So the equation is {answer}.\n</think>\n<answer> {answer} </answer>"
    return SynthTrace(problem, text, tuple(lines), answer)


def _plain_trace(problem: Problem, rng: random.Random, style: TraceStyle, operators: tuple[str, ...]) -> SynthTrace:
    """A trace without verdicts: a single guess, or attempt lines ("- expr = value") that stop at the target."""
    t = problem.target
    nums = ", ".join(str(n) for n in problem.numbers)
    text = f"\nWe have the numbers {nums} and need to reach {t}.\n"
    if rng.random() < 0.5:
        made = _attempt(problem, rng, style, operators, rng.random() < 0.5)
        answer = made[1].text if made is not None else problem.solution
        text += f"Let me try {answer}.\n"
    else:
        answer = ""
        for k in range(rng.randint(1, style.max_wrong + 1)):
            made = _attempt(problem, rng, style, operators, k == style.max_wrong or rng.random() < 0.35)
            if made is None:
                continue
            head, expr = made
            stated = expr.value
            if rng.random() < style.slip_rate:
                stated = expr.value + rng.choice([d for d in range(-10, 11) if d])
            text += f"- {head} = {stated}\n"
            answer = expr.text
            if stated == t:
                break
        answer = answer or problem.solution
    text += f"So the equation is {answer}.\n</think>\n<answer> {answer} </answer>"
    return SynthTrace(problem, text, (), answer)
