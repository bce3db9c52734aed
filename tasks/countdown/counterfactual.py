"""Counterfactual attempt lines for probing every checkpoint on identical text: the three labels set independently.

A model's own rollouts tie its verdict to what it wrote, and the tiny base is pre-trained on traces whose verdict
follows "stated value == target", so on rollouts "verdict", "stated == target" and "the arithmetic is true" move
together. These texts pull them apart. Each problem gets one attempt line per cell of the 2 x 2 of
(stated value == target) x (true value == target):

* ``right``: a correct expression, stated as the target;
* ``wrong``: a wrong expression, stated as its true value (not the target);
* ``slip``: a wrong expression stated as the target (the equality is fabricated);
* ``misstated``: a correct expression stated as a value off the target (an arithmetic slip on a right line);

each after 0..``max_prior`` earlier wrong lines that were rejected (the position in the completion varies, so a
verdict that only counts lines can be told apart from one that reads the line), and each written twice, once with
"(this works)" and once with "(not <target>)". The two texts of a pair are identical up to and including the "(",
so at "(" and before, a probe can only read the content (stated, truth), never the written verdict: a verdict
probe there scoring above chance on these pairs would mean the verdict word leaked, which is the built-in check.
The checkpoint's own verdict is its next-token preference at "(", read by the analysis.

Pure Python: the analysis turns these records into activations.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.countdown.generate import Problem, random_expression

CATEGORIES = ("right", "wrong", "slip", "misstated")


@dataclass(frozen=True)
class CounterfactualText:
    """One completion prefix ending with the tested line and its written verdict."""

    problem: int  # index into the problem list given to :func:`counterfactual_texts`
    category: str  # one of CATEGORIES
    verdict: str  # "this" | "not": the verdict written after the tested line
    position: int  # number of attempt lines before the tested one
    completion: str
    stated_is_target: bool
    correct: bool


def _expression(numbers: Sequence[int], rng: random.Random, operators: Sequence[str], hit: int | None, miss: int):
    """A random full expression over ``numbers`` whose value is ``hit`` (when given) or not ``miss``; None if 200
    draws find none."""
    for _ in range(200):
        e = random_expression(list(numbers), rng, operators)
        if e is None:
            continue
        if (hit is not None and e.value == hit) or (hit is None and e.value != miss):
            return e
    return None


def _right(problem: Problem, rng: random.Random, operators: Sequence[str]) -> str | None:
    if problem.solution:
        return problem.solution
    e = _expression(problem.numbers, rng, operators, problem.target, problem.target)
    return None if e is None else e.text


def counterfactual_texts(
    problems: Sequence[Problem],
    seed: int = 0,
    max_prior: int = 2,
    operators: Sequence[str] = ("+", "-", "*", "/"),
) -> list[CounterfactualText]:
    """For each problem, the four categories x two verdicts (8 texts; fewer when no right expression is found)."""
    rng = random.Random(seed)
    out: list[CounterfactualText] = []
    for i, p in enumerate(problems):
        t = p.target
        right = _right(p, rng, operators)
        wrong = _expression(p.numbers, rng, operators, None, t)
        if wrong is None:
            continue
        nums = ", ".join(str(n) for n in p.numbers)
        position = rng.randint(0, max_prior)
        head = f"\nWe have the numbers {nums} and need to reach {t}. Let's try different combinations:\n"
        for _ in range(position):
            prior = _expression(p.numbers, rng, operators, None, t)
            if prior is not None:
                head += f"- {prior.text} = {prior.value} (not {t})\n"
        position = head.count("\n- ")
        off = t + rng.choice([d for d in range(-10, 11) if d])
        cells = {
            "right": (right, t, True),
            "wrong": (wrong.text, wrong.value, False),
            "slip": (wrong.text, t, False),
            "misstated": (right, off, True),
        }
        for category, (expr, stated, correct) in cells.items():
            if expr is None:
                continue
            line = f"- {expr} = {stated} "
            for verdict, text in (("this", "(this works)"), ("not", f"(not {t})")):
                out.append(
                    CounterfactualText(
                        problem=i,
                        category=category,
                        verdict=verdict,
                        position=position,
                        completion=head + line + text + "\n",
                        stated_is_target=stated == t,
                        correct=correct,
                    )
                )
    return out
