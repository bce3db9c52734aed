"""Which attempt lines a completion accepts, counting an ``<answer>`` that repeats the last line as acceptance.

Kept apart from :mod:`tasks.countdown.trace` (which parses what each line says on its own): this is the one rule
that looks past the line, at the completion's answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.countdown.prompts import extract_answer
from tasks.countdown.trace import Attempt, parse_attempts


def accepted_attempts(
    text: str, numbers: Sequence[int], target: int, template: str = "base"
) -> list[tuple[Attempt, bool | None]]:
    """Every attempt line of ``text`` with whether the model accepts it in any form.

    The judgement is the line's own ``accepted``, except that the last attempt line of the reasoning is
    also accepted (True) when the completion's ``<answer>`` (:func:`~tasks.countdown.prompts.extract_answer`
    with ``template``) repeats it: that line is parsed, carries no rejection (``accepted`` is not False), and
    the answer equals its expression ignoring whitespace (as written before the first "=", or with
    continuations folded in). Prose lines between it and the answer do not matter; an answer that repeats an
    earlier line changes nothing. Acceptance is the model's claim, independent of ``correct``.
    """
    attempts = parse_attempts(text, numbers, target)
    judged = [(a, a.accepted) for a in attempts]
    answer = extract_answer(text, template)
    if answer is not None and attempts and attempts[-1].parsed and attempts[-1].accepted is not False:
        last = attempts[-1]
        forms = {"".join(last.expression.split()), "".join(text[slice(*last.expr_span)].split())}
        if "".join(answer.split()) in forms:
            judged[-1] = (last, True)
    return judged
