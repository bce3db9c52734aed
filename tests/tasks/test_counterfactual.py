"""Counterfactual lines: the 2 x 2 of stated == target x truth, both verdicts, identical texts up to "("."""

from __future__ import annotations

from collections import Counter

from tasks.countdown.counterfactual import CATEGORIES, counterfactual_texts
from tasks.countdown.generate import Problem, ProblemSpec, generate_problems
from tasks.countdown.trace import parse_attempts


def _problems(n: int = 40) -> list[Problem]:
    return generate_problems(ProblemSpec(num_operands=(3, 4), operand_min=1, operand_max=30), n, seed=5)


def test_every_cell_is_written_with_both_verdicts_and_parses_to_its_labels() -> None:
    problems = _problems()
    texts = counterfactual_texts(problems, seed=1)
    assert Counter((t.category, t.verdict) for t in texts) == {(c, v): 40 for c in CATEGORIES for v in ("this", "not")}
    for t in texts:
        p = problems[t.problem]
        attempts = parse_attempts(t.completion, p.numbers, p.target)
        assert all(a.parsed for a in attempts)
        line = attempts[-1]
        assert line.verdict == t.verdict
        assert line.stated_is_target == t.stated_is_target == (t.category in ("right", "slip"))
        assert line.correct == t.correct == (t.category in ("right", "misstated"))
        assert len(attempts) - 1 == t.position
        assert all(a.verdict == "not" and not a.correct for a in attempts[:-1])


def test_pairs_share_the_text_up_to_the_paren_and_positions_vary() -> None:
    texts = counterfactual_texts(_problems(), seed=2, max_prior=2)
    pairs: dict[tuple[int, str], list[str]] = {}
    for t in texts:
        pairs.setdefault((t.problem, t.category), []).append(t.completion)
    for a, b in pairs.values():
        cut = a.rindex("(") + 1
        assert a[:cut] == b[:cut] and a != b
    assert {t.position for t in texts} == {0, 1, 2}


def test_seeded_and_problems_without_a_solution_get_one_found() -> None:
    problems = [Problem(p.numbers, p.target, "") for p in _problems(10)]
    a, b = counterfactual_texts(problems, seed=3), counterfactual_texts(problems, seed=3)
    assert a == b
    assert {t.category for t in a} == set(CATEGORIES)
