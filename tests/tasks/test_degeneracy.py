"""Degeneracy counters on hand-written completions (the tiny model's typical failure modes)."""

from __future__ import annotations

import pytest

from tasks.countdown.degeneracy import count_lines, rates

NUMS, TARGET = (17, 9, 18), 10  # 17 + 9 - 18 = 8, 18 - 17 + 9 = 10


def test_the_repeated_fabricated_flip_flop_of_the_issue() -> None:
    text = (
        "\n"
        + "- 17 + 9 + 18 = 10 (not 10)\n" * 4
        + "- 17 + 9 + 18 = 10 (this works)\n</think>\n<answer> 17 + 9 + 18 </answer>"
    )
    c = count_lines(text, NUMS, TARGET)
    assert (c.lines, c.repeated, c.wrong, c.fabricated) == (5, 4, 5, 5)
    assert (c.judged_expressions, c.both_verdicts, c.judged_wrong, c.accepted_wrong) == (1, 1, 5, 1)
    r = rates([c])
    assert r["repeated"] == pytest.approx(0.8) and r["fabricated"] == 1.0 and r["both_verdicts"] == 1.0


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("\n- 17 + 9 - 18 = 8 (not 10)\n- 18 - 17 + 9 = 10 (this works)\n", {"repeated": 0.0, "fabricated": 0.0}),
        ("\n- 18 - 17 + 9 = 10 (not 10)\n", {"false_reject": 1.0, "false_accept": None}),
        ("\nI guess.\n</think>\n<answer> 18 - 17 + 9 </answer>", {"verdict_share": 0.0, "repeated": None}),
        ("\n- 17 + 9 - 18 = 8! Yes, we got it!\n", {"false_accept": 1.0, "verdict_share": 1.0}),
    ],
)
def test_rates_table(text: str, want: dict) -> None:
    r = rates([count_lines(text, NUMS, TARGET)])
    for k, v in want.items():
        assert r[k] == v, (k, r)


def test_rates_sum_counts_over_completions() -> None:
    a = count_lines("\n- 17 + 9 - 18 = 8 (not 10)\n", NUMS, TARGET)
    b = count_lines("\nno lines\n", NUMS, TARGET)
    r = rates([a, b])
    assert r["verdict_share"] == 0.5 and r["n_completions"] == 2 and r["n_lines"] == 1


def test_verdicts_per_line_do_not_grow_with_length_alone() -> None:
    """A completion rambling through unjudged lines holds one verdict line: it counts fully in verdict_share but
    as 1 line in 6 in verdict_line_share; a short completion that judges its one line counts 1 in 1 in both."""
    judged = count_lines("\n- 17 + 9 - 18 = 8 (not 10)\n", NUMS, TARGET)
    rambling = count_lines("\n" + "- 17 + 9 + 18 = 44\n" * 5 + "- 17 + 9 - 18 = 8 (not 10)\n", NUMS, TARGET)
    assert rates([judged])["verdict_line_share"] == 1.0 and rates([rambling])["verdict_share"] == 1.0
    assert rates([rambling])["verdict_line_share"] == pytest.approx(1 / 6)
    assert rates([judged, rambling])["verdict_line_share"] == pytest.approx(2 / 7)
