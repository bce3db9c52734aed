"""Token positions and labels of the probed sites, from the parser's character spans and a tokenizer's offsets.

No token id is assumed anywhere: the ``tasks`` parser gives character spans of every attempt line's "(", "="
signs and stated value, and the tokenizer's offset mapping says which token covers each character. So the same
code finds Qwen's " (" token and the tiny digit tokenizer's " (" alike.

Three position kinds per parsed attempt line with a "(not" / "(this" verdict:

* ``paren``: the token holding the verdict's "(" (the next token is the verdict word);
* ``eq``: the token holding the last "=" before it;
* ``value``: the first token of the stated value after that "=".

Labels: ``verdict`` (1 = "this", 0 = "not"), ``truth`` (the attempt's true value hits the target with exactly the
given numbers), ``stated`` (the written value equals the target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tasks.countdown.trace import parse_attempts

KINDS = ("paren", "eq", "value")
LABELS = ("verdict", "truth", "stated")


@dataclass(frozen=True, slots=True)
class Site:
    """One attempt line's probed positions (token indices into the full prompt + completion sequence)."""

    line: int  # index of the attempt line within the completion
    paren: int
    eq: int
    value: int
    verdict: int  # 1 "this", 0 "not"
    truth: int
    stated: int
    paren_char: int  # character offset of "(" in the completion


def char_to_token(offsets: Sequence[tuple[int, int]], length: int) -> list[int]:
    """For each character of a text of ``length`` chars, the index of the token covering it (-1 if none)."""
    owner = [-1] * length
    for t, (a, b) in enumerate(offsets):
        for c in range(max(a, 0), min(b, length)):
            if owner[c] == -1:
                owner[c] = t
    return owner


def find_sites(
    completion: str,
    numbers: Sequence[int],
    target: int,
    offsets: Sequence[tuple[int, int]],
    prefix_chars: int,
) -> list[Site]:
    """Sites of ``completion`` when it is tokenized after a prompt of ``prefix_chars`` characters.

    ``offsets`` is the offset mapping of the tokenized ``prompt + completion``; lines whose "(" , "=" or value
    cannot be mapped to a token are skipped (they are never guessed).
    """
    text_len = prefix_chars + len(completion)
    owner = char_to_token(offsets, text_len)
    sites: list[Site] = []
    for i, a in enumerate(parse_attempts(completion, numbers, target)):
        if not a.parsed or a.verdict not in ("not", "this") or a.paren_span is None or not a.eq_positions:
            continue
        stated = a.stated_span
        if stated is None:
            continue
        paren_c = a.paren_span[0]
        eq_c = max(e for e in a.eq_positions if e < paren_c) if any(e < paren_c for e in a.eq_positions) else None
        if eq_c is None:
            continue
        toks = [owner[prefix_chars + c] for c in (paren_c, eq_c, stated[0])]
        if min(toks) < 0 or not toks[1] < toks[0] or not toks[2] <= toks[0]:
            continue
        if a.verdict_span is not None and owner[prefix_chars + a.verdict_span[0]] == toks[0]:
            continue  # the "(" token also holds the verdict word: probing it would read the answer
        sites.append(
            Site(
                line=i,
                paren=toks[0],
                eq=toks[1],
                value=toks[2],
                verdict=int(a.verdict == "this"),
                truth=int(a.correct),
                stated=int(a.stated_is_target),
                paren_char=paren_c,
            )
        )
    return sites
