"""Seeded Countdown problems whose target is reachable by construction, with one reference solution each.

A problem is drawn the way a person sets one: pick the operands, combine *all* of them in a random order with
random operators (TinyZero's reward requires every given number exactly once), and the value becomes the
target if it lies in the target range. Keeping the expression gives a reference solution for free, so every
problem is solvable and tests can check the reward against it. Problems are unique by (operand multiset,
target); the train and test splits are consecutive slices of one unique stream, hence disjoint.

Pure Python and stdlib ``random`` only: the same seed gives the same problems on any machine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from tasks.countdown import arith

OPERATORS = ("+", "-", "*", "/")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3


class GenerationError(ValueError):
    """The requested problems cannot be generated with these settings."""


@dataclass(frozen=True)
class Problem:
    """One Countdown problem: reach ``target`` using each of ``numbers`` exactly once."""

    numbers: tuple[int, ...]
    target: int
    solution: str = ""

    def key(self) -> tuple[tuple[int, ...], int]:
        """Identity for de-duplication: the operand multiset and the target."""
        return tuple(sorted(self.numbers)), self.target


@dataclass(frozen=True)
class Expr:
    """An expression under construction: its text, exact value and precedence (for minimal parentheses)."""

    text: str
    value: arith.Number
    prec: int = _ATOM
    operands: tuple[int, ...] = field(default=())


def leaf(n: int) -> Expr:
    return Expr(str(n), n, _ATOM, (n,))


def combine(a: Expr, op: str, b: Expr) -> Expr | None:
    """``a op b`` with the fewest parentheses that keep its value; None for division by zero."""
    p = _PREC[op]
    if op == "+":
        value = a.value + b.value
    elif op == "-":
        value = a.value - b.value
    elif op == "*":
        value = a.value * b.value
    else:
        if b.value == 0:
            return None
        value = Fraction(a.value) / b.value
        if value.denominator == 1:
            value = value.numerator
    left = f"({a.text})" if a.prec < p else a.text
    right_needs = b.prec < p or (b.prec == p and op in "-/")
    right = f"({b.text})" if right_needs else b.text
    return Expr(f"{left} {op} {right}", value, p, a.operands + b.operands)


def random_expression(
    numbers: Sequence[int],
    rng: random.Random,
    operators: Sequence[str] = OPERATORS,
    integer_steps: bool = True,
) -> Expr | None:
    """Combine all ``numbers`` in a random order with random operators; None when no step was possible.

    With ``integer_steps`` every intermediate value is an integer (division only when exact), as a person
    playing Countdown would work.
    """
    pool = [leaf(n) for n in numbers]
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        a, b = pool[i], pool[j]
        ops = list(operators)
        rng.shuffle(ops)
        made = None
        for op in ops:
            made = combine(a, op, b)
            if made is not None and (not integer_steps or isinstance(made.value, int)):
                break
            made = None
        if made is None:
            return None
        pool = [e for k, e in enumerate(pool) if k not in (i, j)] + [made]
    return pool[0]


@dataclass(frozen=True)
class ProblemSpec:
    """What problems to draw (the data stage's config carries these fields)."""

    num_operands: tuple[int, ...] = (3, 4)
    operand_min: int = 1
    operand_max: int = 99
    target_min: int = 1
    target_max: int | None = 100
    operators: tuple[str, ...] = OPERATORS
    integer_steps: bool = True


def check_spec(spec: ProblemSpec) -> None:
    """Reject settings that cannot produce a problem, naming the field."""
    if not spec.num_operands or any(k < 2 or k > 6 for k in spec.num_operands):
        raise GenerationError(f"num_operands: expected values in 2..6, got {list(spec.num_operands)}")
    if spec.operand_min > spec.operand_max:
        raise GenerationError(f"operand_min ({spec.operand_min}) must not exceed operand_max ({spec.operand_max})")
    if spec.target_max is not None and spec.target_min > spec.target_max:
        raise GenerationError(f"target_min ({spec.target_min}) must not exceed target_max ({spec.target_max})")
    bad = [op for op in spec.operators if op not in OPERATORS]
    if bad or not spec.operators:
        raise GenerationError(f"operators: expected a non-empty subset of {list(OPERATORS)}, got {bad}")


def generate_problems(
    spec: ProblemSpec, count: int, seed: int, max_stall: int = 200_000, progress: bool = False
) -> list[Problem]:
    """``count`` unique problems drawn with ``seed``; raises GenerationError if the space runs out.

    ``max_stall`` bounds the draws in a row that yield nothing new: a small operand range holds few unique
    problems, and asking for more than exist must fail with a clear message rather than loop forever.
    """
    check_spec(spec)
    rng = random.Random(seed)
    seen: set[tuple[tuple[int, ...], int]] = set()
    out: list[Problem] = []
    stall = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, desc="problems", unit="pb", mininterval=0.5)
    while len(out) < count:
        k = rng.choice(spec.num_operands)
        nums = [rng.randint(spec.operand_min, spec.operand_max) for _ in range(k)]
        expr = random_expression(nums, rng, spec.operators, spec.integer_steps)
        if expr is not None and isinstance(expr.value, int):
            t = expr.value
            if t >= spec.target_min and (spec.target_max is None or t <= spec.target_max):
                problem = Problem(tuple(nums), t, expr.text)
                key = problem.key()
                if key not in seen:
                    seen.add(key)
                    out.append(problem)
                    stall = 0
                    if bar is not None:
                        bar.update(1)
                    continue
        stall += 1
        if stall > max_stall:
            raise GenerationError(
                f"found only {len(out)} unique problems of the {count} requested: {max_stall} draws in a row "
                f"gave nothing new with num_operands={list(spec.num_operands)}, operands "
                f"{spec.operand_min}..{spec.operand_max}, targets {spec.target_min}..{spec.target_max}. "
                "Widen operand_min/operand_max or the target range, or ask for fewer problems."
            )
    if bar is not None:
        bar.close()
    return out
