"""Problem generation: reproducible, unique, solvable by construction, clear failure when the space runs out."""

from __future__ import annotations

import ast
import time
from fractions import Fraction

import pytest

from tasks.countdown import arith
from tasks.countdown.generate import GenerationError, ProblemSpec, generate_problems

SPEC = ProblemSpec(num_operands=(3, 4), operand_min=1, operand_max=99, target_min=1, target_max=100)


def test_same_seed_same_problems_other_seed_others() -> None:
    a = generate_problems(SPEC, 300, seed=7)
    assert a == generate_problems(SPEC, 300, seed=7)
    b = generate_problems(SPEC, 300, seed=8)
    assert len({p.key() for p in a} & {p.key() for p in b}) < 30


def test_problems_respect_the_spec_and_are_solvable() -> None:
    problems = generate_problems(SPEC, 2000, seed=1)
    assert len({p.key() for p in problems}) == 2000  # no duplicates
    assert {len(p.numbers) for p in problems} == {3, 4}  # both operand counts occur
    for p in problems:
        assert all(1 <= n <= 99 for n in p.numbers)
        assert 1 <= p.target <= 100
        assert arith.same_multiset(arith.literals(p.solution), p.numbers)  # uses every number once
        assert arith.evaluate(p.solution) == p.target


def _node_values(node: ast.AST) -> list[Fraction]:
    """Exact value of every sub-expression of a parsed solution, children first."""
    if isinstance(node, ast.Constant):
        return [Fraction(node.value)]
    if isinstance(node, ast.UnaryOp):
        inner = _node_values(node.operand)
        return [*inner, -inner[-1]]
    assert isinstance(node, ast.BinOp)
    left, right = _node_values(node.left), _node_values(node.right)
    a, b = left[-1], right[-1]
    ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
    value = ops[type(node.op)] if type(node.op) in ops else a / b
    return [*left, *right, value]


@pytest.mark.parametrize("integer_steps", [True, False])
def test_integer_steps_keeps_every_intermediate_integral(integer_steps: bool) -> None:
    spec = ProblemSpec(
        num_operands=(4,),
        operand_min=1,
        operand_max=12,
        target_min=1,
        target_max=None,
        integer_steps=integer_steps,
    )
    values = [
        v for p in generate_problems(spec, 500, seed=3) for v in _node_values(ast.parse(p.solution, mode="eval").body)
    ]
    fractional = sum(v.denominator != 1 for v in values)
    assert (fractional == 0) if integer_steps else (fractional > 0)


def test_unbounded_target_range_and_small_operands() -> None:
    spec = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=20, target_min=1, target_max=None)
    problems = generate_problems(spec, 500, seed=0)
    assert max(p.target for p in problems) > 100


def test_impossible_request_fails_fast_with_a_clear_message() -> None:
    spec = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=2, target_min=1, target_max=10)
    t0 = time.perf_counter()
    with pytest.raises(GenerationError, match=r"found only \d+ unique problems of the 1000 requested.*Widen"):
        generate_problems(spec, 1000, seed=0, max_stall=20_000)
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (ProblemSpec(num_operands=()), "num_operands"),
        (ProblemSpec(num_operands=(1,)), "num_operands"),
        (ProblemSpec(operand_min=5, operand_max=4), "operand_min"),
        (ProblemSpec(target_min=50, target_max=10), "target_min"),
        (ProblemSpec(operators=("^",)), "operators"),
    ],
)
def test_bad_spec_names_the_field(spec: ProblemSpec, field: str) -> None:
    with pytest.raises(GenerationError, match=field):
        generate_problems(spec, 1, seed=0)
