"""Count the ways a Countdown problem can be solved: a cheap, exact difficulty measure for choosing RL prompts.

Why: GRPO learns nothing from a prompt whose sampled completions all get the same reward, and on the tiny preset
that is mostly a prompt the policy never solves. Sampling the tiny base 16 times at T=0.7 on 1,000 training
problems (3 operands in 1..20, all four operators) showed the number of solutions predicts this well: problems
with a single way (40% of them) succeeded 5.0% of the time and half of them never once in 16 samples, problems
with two or more ways 23.4% and only 9% never (README, "Choosing RL prompts"). Counting is exact and costs
microseconds for three or four operands, so a training set can be filtered before any model runs.

A *way* is a binary expression tree over all the given numbers whose value is the target, counted up to the
commutativity of ``+`` and ``*`` (``3 + 4`` and ``4 + 3`` are one way; ``(3 + 4) + 5`` and ``3 + (4 + 5)`` are
two). With ``integer_steps`` (the generator's default) every intermediate value must be an integer, as a person
playing Countdown works and as the corpus writes its attempts. Pure Python, no dependencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

Number = int | Fraction


def _combine(a: Number, op: str, b: Number) -> Number | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None
    q = Fraction(a) / b
    return q.numerator if q.denominator == 1 else q


@lru_cache(maxsize=65536)
def _values(pool: tuple[Number, ...], operators: tuple[str, ...], integer_steps: bool) -> dict[Number, int]:
    """Every value reachable by combining all of ``pool`` (sorted), with the number of ways to reach it."""
    if len(pool) == 1:
        return {pool[0]: 1}
    out: dict[Number, int] = {}
    n = len(pool)
    seen: set[tuple[Number, str, Number]] = set()  # equal numbers are one number: no duplicate ways from them
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            rest = pool[: min(i, j)] + pool[min(i, j) + 1 : max(i, j)] + pool[max(i, j) + 1 :]
            for op in operators:
                if (op in "+*" and i > j) or (pool[i], op, pool[j]) in seen:  # commutative: one order only
                    continue
                seen.add((pool[i], op, pool[j]))
                v = _combine(pool[i], op, pool[j])
                if v is None or (integer_steps and not isinstance(v, int)):
                    continue
                for value, ways in _values(tuple(sorted((*rest, v))), operators, integer_steps).items():
                    out[value] = out.get(value, 0) + ways
    return out


def count_solutions(
    numbers: Sequence[int],
    target: int,
    operators: Sequence[str] = ("+", "-", "*", "/"),
    integer_steps: bool = True,
) -> int:
    """Ways to reach ``target`` using every one of ``numbers`` exactly once (0 when unsolvable).

    Raises ValueError for more than 6 numbers (the count grows factorially) or an unknown operator.
    """
    if len(numbers) > 6:
        raise ValueError(f"count_solutions: at most 6 numbers, got {len(numbers)}")
    bad = [op for op in operators if op not in "+-*/"]
    if bad:
        raise ValueError(f"count_solutions: unknown operators {bad}; expected a subset of + - * /")
    pool = tuple(sorted(int(x) for x in numbers))
    return _values(pool, tuple(operators), integer_steps).get(target, 0)
