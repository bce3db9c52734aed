"""count_solutions: exact counts on hand-checked problems, every generated problem solvable, clear errors."""

from __future__ import annotations

import pytest

from tasks.countdown import arith
from tasks.countdown.generate import ProblemSpec, generate_problems
from tasks.countdown.solve import count_solutions


@pytest.mark.parametrize(
    ("numbers", "target", "ways"),
    [
        ([3, 4, 5], 12, 3),  # (3+4)+5, (3+5)+4, (4+5)+3: pairings count, operand order does not
        ([3, 4, 5], 60, 3),
        ([5, 5, 3], 2, 1),  # only 3 - 5/5; the two 5s are one number, not two ways
        ([2, 2, 2], 8, 2),  # 2*2*2 and (2+2)*2
        ([1, 1, 1], 100, 0),
        ([7], 7, 1),
    ],
)
def test_hand_checked_counts(numbers: list[int], target: int, ways: int) -> None:
    assert count_solutions(numbers, target) == ways


def test_operators_and_integer_steps_restrict_the_ways() -> None:
    assert count_solutions([3, 4, 5], 60, operators=("+", "-")) == 0
    # 6 / (1 - 3/4) = 24 passes through 1/4: the only way, and one only without integer_steps
    assert count_solutions([1, 3, 4, 6], 24, integer_steps=False) == 1
    assert count_solutions([1, 3, 4, 6], 24) == 0


def test_every_generated_problem_has_its_reference_solution_among_the_ways() -> None:
    problems = generate_problems(ProblemSpec(num_operands=(3, 4), operand_min=1, operand_max=20), 300, seed=5)
    counts = [count_solutions(p.numbers, p.target) for p in problems]
    assert min(counts) >= 1
    for p in problems:
        assert arith.evaluate(p.solution) == p.target
    # the measure separates problems: unique solutions and many-way problems both occur
    assert counts.count(1) > 30 and sum(c >= 3 for c in counts) > 30


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="at most 6 numbers"):
        count_solutions(list(range(1, 8)), 10)
    with pytest.raises(ValueError, match="unknown operators"):
        count_solutions([1, 2], 3, operators=("+", "^"))
