"""Counterfactual lines: the 2 x 2 of stated == target x truth, at every position of one problem (nested earlier
lines, the same tested line), one written verdict each plus a this/not pair identical up to "("."""

from __future__ import annotations

from collections import Counter

from tasks.countdown.counterfactual import CATEGORIES, counterfactual_texts
from tasks.countdown.generate import Problem, ProblemSpec, generate_problems
from tasks.countdown.trace import parse_attempts

MAX_PRIOR = 5


def _problems(n: int = 40) -> list[Problem]:
    return generate_problems(ProblemSpec(num_operands=(3, 4), operand_min=1, operand_max=30), n, seed=5)


def _tested(completion: str) -> str:
    """The tested (last) line up to and including its "("."""
    line = completion.rstrip("\n").rsplit("\n", 1)[-1]
    return line[: line.rindex("(") + 1]


def test_every_kept_problem_has_every_category_at_every_position_and_parses_to_its_labels() -> None:
    problems = _problems()
    texts = counterfactual_texts(problems, seed=1, max_prior=MAX_PRIOR)
    kept = {t.problem for t in texts}
    assert len(kept) >= 30
    cells = Counter((t.problem, t.category, t.position) for t in texts)
    for p in kept:
        for c in CATEGORIES:
            for k in range(MAX_PRIOR + 1):
                assert cells[(p, c, k)] == (2 if k == p % (MAX_PRIOR + 1) else 1)
    assert Counter(t.problem for t in texts) == {p: 4 * (MAX_PRIOR + 1) + 4 for p in kept}
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


def test_a_slip_states_the_target_over_wrong_arithmetic() -> None:
    problems = _problems()
    for t in counterfactual_texts(problems, seed=1, max_prior=MAX_PRIOR):
        if t.category == "slip":
            p = problems[t.problem]
            a = parse_attempts(t.completion, p.numbers, p.target)[-1]
            assert a.stated_is_target and not a.correct


def test_the_tested_line_is_the_same_at_every_position_and_earlier_lines_are_nested() -> None:
    texts = counterfactual_texts(_problems(), seed=2, max_prior=MAX_PRIOR)
    lines: dict[tuple[int, str], set[str]] = {}
    heads: dict[int, dict[int, str]] = {}
    for t in texts:
        lines.setdefault((t.problem, t.category), set()).add(_tested(t.completion))
        head = t.completion[: t.completion.rstrip("\n").rindex("\n") + 1]  # everything before the tested line
        assert heads.setdefault(t.problem, {}).setdefault(t.position, head) == head
    assert all(len(v) == 1 for v in lines.values())
    for by_pos in heads.values():
        assert sorted(by_pos) == list(range(MAX_PRIOR + 1))
        for k in range(MAX_PRIOR):
            assert by_pos[k + 1].startswith(by_pos[k]) and by_pos[k + 1].count("\n- ") == k + 1
        earlier = by_pos[MAX_PRIOR].split("\n- ")[1:]
        assert len(set(earlier)) == MAX_PRIOR  # distinct earlier lines


def test_pairs_share_the_text_up_to_the_paren_and_differ_after() -> None:
    texts = counterfactual_texts(_problems(), seed=2, max_prior=MAX_PRIOR)
    pairs: dict[tuple[int, str, int], list] = {}
    for t in texts:
        pairs.setdefault((t.problem, t.category, t.position), []).append(t)
    n_pairs = 0
    for group in pairs.values():
        assert all(t.paired == (len(group) == 2) for t in group)
        if len(group) == 2:
            n_pairs += 1
            a, b = (t.completion for t in group)
            cut = a.rindex("(") + 1
            assert a[:cut] == b[:cut] and a != b
            assert {t.verdict for t in group} == {"this", "not"}
    assert n_pairs == 4 * len({t.problem for t in texts})
    singles = [t for g in pairs.values() if len(g) == 1 for t in g]
    assert {t.verdict for t in singles} == {"this", "not"}  # the single texts alternate
    for t in singles:
        assert t.verdict == ("this" if (t.position + CATEGORIES.index(t.category)) % 2 == 0 else "not")


def test_seeded_and_problems_without_a_solution_get_one_found() -> None:
    problems = [Problem(p.numbers, p.target, "") for p in _problems(10)]
    a, b = counterfactual_texts(problems, seed=3), counterfactual_texts(problems, seed=3)
    assert a == b and a
    assert {t.category for t in a} == set(CATEGORIES)
    assert {t.position for t in a} == set(range(MAX_PRIOR + 1))  # max_prior defaults to 5
    assert a != counterfactual_texts(problems, seed=4)


def test_a_problem_without_enough_distinct_wrong_lines_is_skipped() -> None:
    """1 and 1 can only make a handful of distinct expressions (1 + 1, 1 - 1, 1 * 1, 1 / 1): not max_prior + 1."""
    problems = [Problem((1, 1), 2, "1 + 1"), *_problems(3)]
    texts = counterfactual_texts(problems, seed=0, max_prior=MAX_PRIOR)
    assert 0 not in {t.problem for t in texts} and {t.problem for t in texts} == {1, 2, 3}
    assert len(counterfactual_texts(problems[:1], seed=0, max_prior=2)) == 4 * 3 + 4
