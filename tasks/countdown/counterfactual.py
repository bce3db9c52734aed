"""Counterfactual attempt lines for probing every checkpoint on identical text: the three labels set independently.

A model's own rollouts tie its verdict to what it wrote, and the tiny base is pre-trained on traces whose verdict
follows "stated value == target", so on rollouts "verdict", "stated == target" and "the arithmetic is true" move
together. These texts pull them apart. Each problem gets one tested attempt line per cell of the 2 x 2 of
(stated value == target) x (true value == target):

* ``right``: a correct expression, stated as the target;
* ``wrong``: a wrong expression, stated as its true value (not the target);
* ``slip``: a wrong expression stated as the target (the equality is fabricated);
* ``misstated``: a correct expression stated as a value off the target (an arithmetic slip on a right line).

Position, paired within a problem: each problem draws ``max_prior`` earlier wrong lines once (each rejected,
"- <expr> = <its value> (not <target>)"), and every tested line is written after the first 0, 1, ..., ``max_prior``
of them. The earlier lines at position k are a prefix of those at k + 1 and the tested line is the same text at
every position, so "accepted after 5 rejected lines vs after 0" compares the *same* line of the *same* problem and
only the count of rejected lines before it differs (a verdict that only counts lines is told apart from one that
reads the line, without mixing in which problem happened to land at which position).

Written verdict: each (problem, category, position) is written once, the verdict alternating deterministically
("this" when position + category index is even, else "not"), which keeps the set small. For the leak check, at one
position per problem (problem index mod (``max_prior`` + 1)) each category is written twice, once with
"(this works)" and once with "(not <target>)" (``paired``). The two texts of a pair are identical up to and
including the "(", so at "(" and before, a probe can only read the content (stated, truth), never the written
verdict: a verdict probe there scoring above chance on these pairs would mean the verdict word leaked. The
checkpoint's own verdict is its next-token preference at "(", read by the analysis.

A problem that cannot supply a right expression or ``max_prior`` distinct earlier wrong lines is skipped, so every
kept problem has all four categories at every position: 4 x (``max_prior`` + 1) + 4 texts per problem.

Pure Python: the analysis turns these records into activations.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.countdown.generate import Problem
from tasks.countdown.search_trace import random_attempt
from tasks.countdown.synth import _chained_hit

CATEGORIES = ("right", "wrong", "slip", "misstated")


@dataclass(frozen=True)
class LineStyle:
    """How a run writes its attempt lines, so tested lines look like its own: its data's operators, and whether its
    base corpus chains one binary step per "=" (tasks/countdown/search_trace.py ``chain``)."""

    operators: tuple[str, ...] = ("+", "-", "*", "/")
    chain: bool = False


PLAIN_LINES = LineStyle()  # whole expressions over + - * /: the tiny preset's lines


DRAWS = 200  # random expressions tried before a problem is given up on


@dataclass(frozen=True)
class CounterfactualText:
    """One completion prefix ending with the tested line and its written verdict."""

    problem: int  # index into the problem list given to :func:`counterfactual_texts`
    category: str  # one of CATEGORIES
    verdict: str  # "this" | "not": the verdict written after the tested line
    position: int  # number of (rejected) attempt lines before the tested one
    completion: str
    stated_is_target: bool
    correct: bool
    paired: bool = False  # one of the two texts of a leak-check pair (same line, both verdicts)


def _expression(
    numbers: Sequence[int], rng: random.Random, operators: Sequence[str], hit: int | None, miss: int, chain: bool
) -> tuple[str, int] | None:
    """A random attempt (:func:`~tasks.countdown.search_trace.random_attempt`) whose value is ``hit`` (when
    given) or not ``miss``; None if ``DRAWS`` draws find none."""
    for _ in range(DRAWS):
        made = random_attempt(numbers, rng, operators, chain)
        if made is None:
            continue
        text, expr = made
        if (hit is not None and expr.value == hit) or (hit is None and expr.value != miss):
            return text, expr.value
    return None


def _right(problem: Problem, rng: random.Random, operators: Sequence[str], chain: bool) -> str | None:
    if chain:
        made = _chained_hit(problem.numbers, problem.target, rng, tuple(operators))
        return None if made is None else made[0]
    if problem.solution:
        return problem.solution
    e = _expression(problem.numbers, rng, operators, problem.target, problem.target, chain)
    return None if e is None else e[0]


def _priors(
    problem: Problem, rng: random.Random, operators: Sequence[str], n: int, avoid: str, chain: bool
) -> list[str] | None:
    """``n`` distinct rejected wrong lines (none the tested wrong expression ``avoid``), or None if ``DRAWS`` draws
    do not find them. Why distinct: a repeated line would let a model match the earlier verdict, not judge."""
    lines: list[str] = []
    seen = {avoid}
    for _ in range(DRAWS):
        if len(lines) == n:
            break
        made = random_attempt(problem.numbers, rng, operators, chain)
        if made is None or made[1].value == problem.target or made[0] in seen:
            continue
        seen.add(made[0])
        lines.append(f"- {made[0]} = {made[1].value} (not {problem.target})\n")
    return lines if len(lines) == n else None


def _problem_texts(
    i: int, p: Problem, rng: random.Random, operators: Sequence[str], max_prior: int, chain: bool = False
) -> list[CounterfactualText]:
    """Every text of problem ``i`` (see the module docstring), or [] when the problem is skipped."""
    t = p.target
    right = _right(p, rng, operators, chain)
    wrong = _expression(p.numbers, rng, operators, None, t, chain)
    if right is None or wrong is None:
        return []
    priors = _priors(p, rng, operators, max_prior, wrong[0], chain)
    if priors is None:
        return []
    off = t + rng.choice([d for d in range(-10, 11) if d])
    cells = {
        "right": (right, t, True),
        "wrong": (wrong[0], wrong[1], False),
        "slip": (wrong[0], t, False),
        "misstated": (right, off, True),
    }
    nums = ", ".join(str(n) for n in p.numbers)
    head = f"\nWe have the numbers {nums} and need to reach {t}. Let's try different combinations:\n"
    leak = i % (max_prior + 1)
    written = {"this": "(this works)", "not": f"(not {t})"}
    out: list[CounterfactualText] = []
    for ci, (category, (expr, stated, correct)) in enumerate(cells.items()):
        line = f"- {expr} = {stated} "
        for position in range(max_prior + 1):
            verdicts = ("this", "not") if position == leak else ("this" if (position + ci) % 2 == 0 else "not",)
            for verdict in verdicts:
                out.append(
                    CounterfactualText(
                        problem=i,
                        category=category,
                        verdict=verdict,
                        position=position,
                        completion=head + "".join(priors[:position]) + line + written[verdict] + "\n",
                        stated_is_target=stated == t,
                        correct=correct,
                        paired=position == leak,
                    )
                )
    return out


def counterfactual_texts(
    problems: Sequence[Problem],
    seed: int = 0,
    max_prior: int = 5,
    operators: Sequence[str] = ("+", "-", "*", "/"),
    chain: bool = False,
) -> list[CounterfactualText]:
    """For each kept problem, the four categories at positions 0..``max_prior`` (one written verdict each) plus a
    this/not pair per category at one position: 4 x (``max_prior`` + 1) + 4 texts. ``operators`` and ``chain``
    should be the run's (its data's operators; chained lines where its base corpus wrote them), so the tested lines
    are written as the model writes its own."""
    rng = random.Random(seed)
    out: list[CounterfactualText] = []
    for i, p in enumerate(problems):
        out += _problem_texts(i, p, rng, operators, max_prior, chain)
    return out
