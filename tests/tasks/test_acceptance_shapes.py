"""Acceptance on the line shapes of the original verification-vector study's steered outputs.

Steered models often accept a wrong line and then write the equation again on the same line
(``= 28! Yes, we got it! 44 + 19 - 35 = 28.``); the flip test counts such a line only if it parses and
its ``accepted`` is True, so every shape below is pinned with its stated value.
"""

from __future__ import annotations

import pytest

from tasks.countdown.accepted import accepted_attempts
from tasks.countdown.trace import parse_attempts

N3 = (44, 19, 35)  # target 28: 44 + 19 - 35
N4 = (90, 67, 60, 12)  # target 49: 67 + 60 + 12 - 90
C3 = (87, 38, 3)  # target 52: 87 - 38 + 3

# (line, numbers, target, accepted, stated value, parsed)
SHAPES = [
    # the equation restated after the acceptance words, "." or "!" ending, with and without a bullet
    ("- 44 + 19 - 35 = 28! Yes, we got it! 44 + 19 - 35 = 28.", N3, 28, True, 28, True),
    ("- 44 + 19 - 35 = 28! Yes, we got it! 44 + 19 - 35 = 28!", N3, 28, True, 28, True),
    ("44 + 19 - 35 = 28! Yes, we got it! 44 + 19 - 35 = 28.", N3, 28, True, 28, True),
    ("- 44 + 35 - 19 = 60! Yes, we got it! 44 + 35 - 19 = 60.", N3, 28, True, 60, True),  # wrong line accepted
    ("- 67 + 60 + 12 - 90 = 49! Yes, we got it! 67 + 60 + 12 - 90 = 49.", N4, 49, True, 49, True),
    ("- 87 - 38 = 49 + 3 = 52! Yes! 87 - 38 + 3 = 52", C3, 52, True, 52, True),  # after a continued chain
    ("- 87 - 38 + 3 = 52, not 46. 87 - 38 + 3 = 52", C3, 46, False, 52, True),  # restated but rejected
    # "!" and acceptance words after the number
    ("- 44 + 19 - 35 = 28!", N3, 28, True, 28, True),
    ("- 44 + 19 - 35 = 28! Yes, we got it!", N3, 28, True, 28, True),
    ("- 8 * 8 + 2 = 66 exactly!", (8, 8, 2), 66, True, 66, True),
    ("- 87 - 38 + 3 = 52. This works!", C3, 52, True, 52, True),
    ("- 87 - 38 + 3 = 52! Yes! It works! Yes! It works!", C3, 52, True, 52, True),
    ("- 87 - 38 + 3 = 52!! That's the target", C3, 52, True, 52, True),
    ("- 87 - 38 + 3 = 52!! That\u2019s the target", C3, 52, True, 52, True),  # typographic apostrophe
    # parentheses: the first word decides, else the words inside
    ("- 87 - 38 + 3 = 52 (this works)", C3, 52, True, 52, True),
    ("- 87 - 38 + 3 = 52 (maybe it works!)", C3, 52, True, 52, True),
    ("- 87 - 38 + 3 = 52 (not 46)", C3, 46, False, 52, True),
    ("- 87 - 38 + 3 = 52 (maybe not)", C3, 46, False, 52, True),
    ("- 87 - 38 + 3 = 52 (maybe!)", C3, 46, None, 52, True),  # a "!" inside a parenthesis claims nothing
    ("- 87 - 38 + 3 = 52 (maybe it works, maybe not)", C3, 46, None, 52, True),
    # rejections stay rejections
    ("- 87 - 38 + 3 = 52, not 46", C3, 46, False, 52, True),
    ("- 87 - 38 + 3 = 52! No, wrong", C3, 46, False, 52, True),
    ("- 87 - 38 + 3 = 52! No wait, that's wrong", C3, 46, False, 52, True),
    # no claim, and the shapes that parsed before
    ("- 87 - 38 + 3 = 52", C3, 52, None, 52, True),
    ("87 - 38 = 49 + 3 = 52 (not 50)", C3, 50, False, 52, True),
    ("- 87 - 38 = 49 + 3 = 52 (this works)", C3, 52, True, 52, True),
    ("- 44 + 19 = 63, then 63 - 35 = 28", N3, 28, None, 63, True),  # a step line ends at its first number
    # still no attempt: a bad middle segment, "x" as a times sign, no expression before "="
    ("- 1 + 2 = 3 + = 3 (not 5)", (1, 2, 3), 5, None, None, False),
    ("- 8 * 3 = 24 x 2 = 48", (8, 3, 2), 48, None, None, False),
    ("= 28! Yes, we got it! 44 + 19 - 35 = 28.", N3, 28, None, None, False),
]


@pytest.mark.parametrize(("line", "numbers", "target", "accepted", "stated", "parsed"), SHAPES)
def test_acceptance_shapes(
    line: str, numbers: tuple[int, ...], target: int, accepted: bool | None, stated: int | None, parsed: bool
) -> None:
    attempts = parse_attempts(line, numbers, target)
    assert len(attempts) == 1
    a = attempts[0]
    assert (a.parsed, a.accepted, a.stated_value) == (parsed, accepted, stated), a.reason


def test_restated_equation_ends_the_attempt_at_its_number() -> None:
    line = "- 44 + 35 - 19 = 60! Yes, we got it! 44 + 35 - 19 = 60."
    a = parse_attempts(line, N3, 28)[0]
    assert a.restated and a.expression == "44 + 35 - 19" and a.true_value == 60 and not a.correct
    assert a.eq_positions == (line.index("="),) and a.stated_values == (60,)
    assert line[slice(*a.stated_span)] == "60" and a.stated_span[0] == line.index("60")
    assert a.paren_span is None and a.verdict is None and line[slice(*a.verdict_span)] == "Yes"


@pytest.mark.parametrize(
    ("line", "restated"),
    [
        ("- 44 + 19 - 35 = 28. This works! 19 + 44 - 35 = 28", True),  # same operands and value, reordered
        ("- 44 + 19 - 35 = 28! Yes! 44 + 19 - 35 = 29", False),  # another stated number
        ("- 44 + 19 - 35 = 28! Yes! 44 + 19 = 63", False),  # another equation
        ("- 44 + 19 - 35 = 28! Yes, we got it!", False),  # nothing written again
    ],
)
def test_restated_means_the_same_equation_again(line: str, restated: bool) -> None:
    a = parse_attempts(line, N3, 28)[0]
    assert a.parsed and a.restated is restated


def test_restated_line_is_counted_accepted_in_a_completion() -> None:
    completion = (
        "Using 44, 19, 35 to make 28.\n"
        "- 44 + 35 - 19 = 60 (not 28)\n"
        "- 44 + 35 - 19 = 60! Yes, we got it! 44 + 35 - 19 = 60.\n"
        "- 44 + 19 - 35 = 28 (this works)\n"
        "</think>\n<answer> 44 + 19 - 35 </answer>"
    )
    attempts = parse_attempts(completion, N3, 28)
    assert [(a.parsed, a.accepted, a.stated_value, a.restated) for a in attempts] == [
        (True, False, 60, False),
        (True, True, 60, True),
        (True, True, 28, False),
    ]
    pairs = accepted_attempts(completion, N3, 28)
    assert [a for a, _ in pairs] == attempts
    assert [(a.correct, judged) for a, judged in pairs] == [(False, False), (False, True), (True, True)]
