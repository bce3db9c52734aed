"""Parse the structured chain of thought of R1-Zero Countdown models into attempt records with exact spans.

Trained TinyZero models converge to lines such as::

    - 90 - 67 + 60 - 12 = 71 (not 49)
    - 87 - 38 = 49 + 3 = 52 (not 50)
    - 67 + 60 + 12 - 90 = 49 (this works)
    - 44 + 19 - 35 = 28! Yes, we got it!

An *attempt line* is any line of the reasoning (the text before ``</think>``) that has an ``=`` or a
``(not``/``(this`` verdict, except the ``<answer>`` line. Its grammar, with no guessing beyond it:

    [indent] [bullet "- " | "* " | "• " | "1. " | "1) "] [label ending in ":"]
    expression ("=" segment)* "=" stated-number [punctuation] [ "(" verdict-word ... | other text ]

A leading dash followed by a space is a bullet, not a minus sign (that is how the models write lists). The
*expression* is the text before the first ``=``; a middle segment that starts with a number and an operator
while the given numbers are not all used yet *continues* the attempt (``87 - 38 = 49 + 3`` means
``(87 - 38) + 3``), any other middle segment restates it (``87 - 38 + 3 = 49 + 3 = 52``). The parser reports
what was written (the number after each ``=``, the verdict) and what is true (the exact value of the
attempt's expression, whether it uses exactly the given numbers, whether it hits the target) separately, so
arithmetic slips and wrongly rejected right answers stay visible. A candidate line that does not fit the
grammar is returned with ``parsed=False`` and the reason, never half-filled.

The text after the stated number is the line's *tail*. It may hold "=" signs of its own: a middle segment
that is a number followed by punctuation or words is not an expression, so the attempt ends at that number
and the rest of the line is the tail (``= 28! Yes, we got it! 44 + 19 - 35 = 28.``, the shape steered models
write). ``restated`` says whether the tail writes the attempt again (same operands, value and stated number).

Besides the literal ``verdict`` ("not"/"this" only), each parsed line gets ``accepted``: whether the model
says the attempt works in any form, judged on the tail by :mod:`tasks.countdown.acceptance` (``(this works)``,
``= 28! Yes, we got it!`` True; ``(not 49)``, ``(maybe not)`` False; both or neither None).
:func:`tasks.countdown.accepted.accepted_attempts` also counts a line as accepted when the ``<answer>`` repeats it.

All spans are character offsets into the text given to :func:`parse_attempts`; the analysis maps them to
token positions through a tokenizer's offset mapping, so no token ids are assumed here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from tasks.countdown import arith
from tasks.countdown.acceptance import line_acceptance
from tasks.countdown.prompts import ANSWER_OPEN, THINK_CLOSE

Span = tuple[int, int]

_PREFIX = re.compile(r"[ \t]*(?:(?:[-*\u2022]|[0-9]+[.)])[ \t]+)?(?:[A-Za-z][^=:\n]*:[ \t]*)?")
_NUMBER = re.compile(r"[ \t]*([+-]?[0-9]+(?:\.[0-9]+)?)")
_CONTINUES = re.compile(r"[ \t]*[+-]?[0-9]+[ \t]*[-+*/]")
_VERDICT_PAREN = re.compile(r"[ \t]*[.,!:;]?[ \t]*(\()[ \t]*([A-Za-z]*)")
_WORD = re.compile(r"[A-Za-z]+")
_HAS_VERDICT = re.compile(r"\([ \t]*(?:not|this)\b")
# text after a stated number that ends the attempt: punctuation, a "(" with a word, or a word ("x 2" multiplies)
_TAIL_START = re.compile(r"[ \t]*(?:[.,!:;?]|\([ \t]*[A-Za-z]|(?![xX][ \t]*[0-9(])[A-Za-z])")
_RESTATEMENT = re.compile(r"([0-9+\-*/() \t]+)=[ \t]*([+-]?[0-9]+(?:\.[0-9]+)?)")

VERDICTS = ("not", "this")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt line: what the model wrote, what is true, and where each piece sits in the text."""

    line_span: Span
    parsed: bool
    reason: str | None = None  # why a candidate line is unparsed
    expression: str | None = None  # the attempt's full expression (continuations folded in)
    expr_span: Span | None = None  # the expression as written before the first "="
    eq_positions: tuple[int, ...] = ()  # offset of every "=" on the line
    stated_values: tuple[arith.Number | None, ...] = ()  # the number written right after each "="
    stated_spans: tuple[Span | None, ...] = ()
    stated_value: arith.Number | None = None  # the last value written after "="
    true_value: arith.Number | None = None  # exact value of ``expression``; None if it divides by zero
    uses_numbers: bool = False  # the expression uses exactly the given multiset
    correct: bool = False  # ground truth: true_value == target
    stated_is_target: bool = False  # the written value equals the target
    verdict: str | None = None  # "not" | "this" | None (other or absent)
    verdict_word: str | None = None  # the word as written ("not", "this", "Yes", ...)
    paren_span: Span | None = None  # the "(" that opens the verdict
    verdict_span: Span | None = None  # the verdict word
    accepted: bool | None = None  # the line says it works (True), fails (False), or neither / both (None)
    restated: bool = False  # the tail writes the attempt again ("= 28! Yes! 44 + 19 - 35 = 28.")

    @property
    def stated_span(self) -> Span | None:
        """Span of the last stated value (its first character is the "first token of the stated value")."""
        return self.stated_spans[-1] if self.stated_spans else None

    @property
    def arithmetic_ok(self) -> bool:
        """The last written value equals the true value of the expression."""
        return self.stated_value is not None and self.stated_value == self.true_value


def _number(text: str) -> arith.Number:
    value = Fraction(text)
    return value.numerator if value.denominator == 1 else value


def _value(expression: str) -> arith.Number | None:
    """Exact value; None for a well-formed division by zero; raises ArithError for anything malformed."""
    try:
        return arith.evaluate(expression)
    except arith.ExprZeroDivision:
        return None


def _continues(
    lead: arith.Number | None,
    value: arith.Number | None,
    seg_value: arith.Number | None,
    used: list[int],
    extra: list[int],
    numbers: Sequence[int],
) -> bool:
    """Whether a middle segment ``lead op ...`` continues the attempt or restates it.

    The written values decide first: a segment whose leading number is the attempt's value so far carries
    that value on (``87 - 38 = 49 + 3``); one whose own value equals the attempt's restates it
    (``87 - 38 + 3 = 49 + 3``). When slips make both false, the operands decide: it continues if the added
    operands still fit the number of given ones and are not merely operands already used.
    """
    if value is not None and lead == value:
        return True
    if value is not None and seg_value == value:
        return False
    if len(used) + len(extra) > len(numbers):
        return False
    return arith.is_sub_multiset(used + extra, numbers) or not arith.is_sub_multiset(extra, used)


def _unparsed(span: Span, reason: str) -> Attempt:
    return Attempt(line_span=span, parsed=False, reason=reason)


def _eq_positions(text: str, start: int, end: int) -> list[int]:
    eqs = []
    q = text.find("=", start, end)
    while q >= 0:
        eqs.append(q)
        q = text.find("=", q + 1, end)
    return eqs


def _attempt_eqs(text: str, eqs: list[int], end: int) -> list[int]:
    """The "=" signs that belong to the attempt: all of them, unless a middle segment is a stated number
    followed by words or punctuation and so no expression (``= 28! Yes, we got it! 44 + 19 - 35 = 28.``):
    the attempt then ends at that number and the rest of the line is its tail."""
    for k in range(len(eqs) - 1):
        m = _NUMBER.match(text, eqs[k] + 1, end)
        if m is None or not _TAIL_START.match(text, m.end(1), eqs[k + 1]):
            continue
        try:
            _value(text[eqs[k] + 1 : eqs[k + 1]])
        except arith.ArithError:
            return eqs[: k + 1]
    return eqs


@dataclass(slots=True)
class _Chain:
    """The attempt as it is read "=" by "=": its expression so far and every stated number."""

    expression: str
    used: list[int]
    value: arith.Number | None
    stated_values: list[arith.Number | None] = field(default_factory=list)
    stated_spans: list[Span | None] = field(default_factory=list)


def _read_chain(text: str, eqs: list[int], end: int, chain: _Chain, numbers: Sequence[int]) -> str | None:
    """Record the number after each "=" and fold continuing middle segments into ``chain``; returns why the
    line is unparsed, or None."""
    for k, q in enumerate(eqs):
        m = _NUMBER.match(text, q + 1, end)
        chain.stated_values.append(None if m is None else _number(m.group(1)))
        chain.stated_spans.append(None if m is None else m.span(1))
        if k + 1 == len(eqs):
            return None
        segment = text[q + 1 : eqs[k + 1]]
        rest = text[m.end(1) : eqs[k + 1]] if m is not None else segment
        if m is not None and not rest.strip():
            continue  # a plain restated number
        try:
            seg_value = _value(segment)
        except arith.ArithError:
            return f"segment {segment.strip()!r} is not an expression"
        if m is not None and _CONTINUES.match(segment):
            extra = arith.literals(rest)
            if _continues(chain.stated_values[-1], chain.value, seg_value, chain.used, extra, numbers):
                chain.expression = f"({chain.expression}) {rest.strip()}"
                chain.used += extra
                chain.value = _value(chain.expression)
    return None


def _verdict(text: str, pos: int, end: int) -> tuple[str | None, str | None, Span | None, Span | None]:
    """(verdict, verdict word, "(" span, word span) of the tail ``text[pos:end]``."""
    verdict_word = paren_span = verdict_span = None
    vm = _VERDICT_PAREN.match(text, pos, end)
    if vm is not None:
        paren_span = vm.span(1)
        if vm.group(2):
            verdict_word = vm.group(2)
            verdict_span = vm.span(2)
    else:
        wm = _WORD.search(text, pos, end)
        if wm is not None:
            verdict_word = wm.group()
            verdict_span = wm.span()
    verdict = verdict_word.lower() if verdict_word is not None and verdict_word.lower() in VERDICTS else None
    return verdict, verdict_word, paren_span, verdict_span


def _restates(tail: str, chain: _Chain) -> bool:
    """Whether ``tail`` writes the attempt again: an expression with the same operands and the same exact
    value, followed by "=" and the same stated number (``... Yes, we got it! 44 + 19 - 35 = 28.``)."""
    for m in _RESTATEMENT.finditer(tail):
        if _number(m.group(2)) != chain.stated_values[-1]:
            continue
        run = m.group(1)
        try:
            if _value(run) == chain.value and arith.same_multiset(arith.literals(run), chain.used):
                return True
        except arith.ArithError:
            continue
    return False


def parse_line(text: str, start: int, end: int, numbers: Sequence[int], target: int) -> Attempt:
    """Parse ``text[start:end]`` (one candidate line) into an :class:`Attempt`."""
    span = (start, end)
    body = _PREFIX.match(text, start, end).end()
    eqs = _eq_positions(text, body, end)
    if not eqs:
        return _unparsed(span, "verdict without '='")
    seg0 = text[body : eqs[0]]
    if not seg0.strip():
        return _unparsed(span, "no expression before '='")
    try:
        value = _value(seg0)
    except arith.ArithError as e:
        return _unparsed(span, f"expression {seg0.strip()!r}: {e}")
    eqs = _attempt_eqs(text, eqs, end)
    last = _NUMBER.match(text, eqs[-1] + 1, end)
    if last is None:
        return _unparsed(span, "no number after the last '='")
    chain = _Chain(seg0.strip(), arith.literals(seg0), value)
    reason = _read_chain(text, eqs, end, chain, numbers)
    if reason is not None:
        return _unparsed(span, reason)

    verdict, verdict_word, paren_span, verdict_span = _verdict(text, last.end(1), end)
    tail = text[last.end(1) : end]
    stated_value = chain.stated_values[-1]
    s0 = body + (len(seg0) - len(seg0.lstrip()))
    return Attempt(
        line_span=span,
        parsed=True,
        expression=chain.expression,
        expr_span=(s0, s0 + len(seg0.strip())),
        eq_positions=tuple(eqs),
        stated_values=tuple(chain.stated_values),
        stated_spans=tuple(chain.stated_spans),
        stated_value=stated_value,
        true_value=chain.value,
        uses_numbers=arith.same_multiset(chain.used, numbers),
        correct=chain.value is not None and chain.value == target,
        stated_is_target=stated_value == target,
        verdict=verdict,
        verdict_word=verdict_word,
        paren_span=paren_span,
        verdict_span=verdict_span,
        accepted=line_acceptance(tail, paren_span is not None, verdict_word),
        restated=_restates(tail, chain),
    )


def parse_attempts(text: str, numbers: Sequence[int], target: int) -> list[Attempt]:
    """Every attempt line of the reasoning in ``text`` (a completion), in order, parsed or marked unparsed."""
    stop = text.find(THINK_CLOSE)
    if stop < 0:
        stop = len(text)
    out: list[Attempt] = []
    start = 0
    while start < stop:
        nl = text.find("\n", start, stop)
        end = stop if nl < 0 else nl
        if end > start and text[end - 1] == "\r":
            end -= 1
        line_has_eq = text.find("=", start, end) >= 0
        if (line_has_eq or _HAS_VERDICT.search(text, start, end)) and text.find(ANSWER_OPEN, start, end) < 0:
            out.append(parse_line(text, start, end, numbers, target))
        if nl < 0:
            break
        start = nl + 1
    return out
