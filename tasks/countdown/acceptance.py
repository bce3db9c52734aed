"""Whether an attempt line says it is accepted: the word lists and the one rule that reads them.

Kept apart from :mod:`tasks.countdown.trace` so the span parser stays small and the vocabulary can be read
and changed in one place. Pure Python, deterministic, case-insensitive. The rule judges only the text after
the last stated number of a parsed attempt line (the *tail*; for ``= 28! Yes! 44 + 19 - 35 = 28.`` that is
everything after the first 28, the restated equation included):

1. A "(" right after the number (``= 52 (correct)``): a first word ``this`` or an acceptance word is True,
   ``not`` or a rejection word is False. Any other first word (``(maybe it works!)``) leaves it to the words
   inside the parenthesis, read as in 2. but without the "!": only acceptance -> True, only rejection
   (``(maybe not)``) -> False, both or neither -> None. A "(" with no word (``( 87 - 35 )``) is None.
2. Otherwise the tail's words decide: a rejection word, or an acceptance word right after ``not``/``isn't``
   (``not correct``), rejects; an acceptance word or phrase (``is the target``, ``that's the target``)
   accepts. Both -> None; only rejection -> False (``= 52, not 46``, ``= 52! No wait, that's wrong``); only
   acceptance, or a "!" with no rejection (``= 52!``) -> True; neither -> None.

The two lists are disjoint, so a single word never says both.
"""

from __future__ import annotations

import re

ACCEPT_WORDS = frozenset(
    {
        "yes",
        "yay",
        "exactly",
        "works",
        "worked",
        "correct",
        "right",
        "success",
        "found",
        "perfect",
        "done",
        "bingo",
        "equals",
        "reached",
        "got",
        "solved",
    }
)
REJECT_WORDS = frozenset(
    {
        "no",
        "not",
        "nope",
        "wrong",
        "incorrect",
        "close",
        "too",
        "off",
        "fail",
        "fails",
        "failed",
        "isn't",
        "doesn't",
        "missed",
    }
)
ACCEPT_PHRASES = (
    "is the target",
    "is our target",
    "that's the target",
    "that's our target",
    "it's the target",
    "hits the target",
)
_NEGATORS = frozenset({"not", "isn't"})
_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")

assert not ACCEPT_WORDS & REJECT_WORDS


def _word_verdict(text: str) -> tuple[bool, bool]:
    """(accepts, rejects) by the words of ``text``: a rejection word, or an acceptance word right after a
    negator, rejects; any other acceptance word or an acceptance phrase accepts."""
    tokens = [t.lower() for t in _TOKEN.findall(text.replace("\u2019", "'"))]
    accept = reject = False
    for k, t in enumerate(tokens):
        if t in REJECT_WORDS:
            reject = True
        elif t in ACCEPT_WORDS:
            if k > 0 and tokens[k - 1] in _NEGATORS:
                reject = True
            else:
                accept = True
    joined = f" {' '.join(tokens)} "
    return accept or any(f" {p} " in joined for p in ACCEPT_PHRASES), reject


def _paren_text(tail: str) -> str:
    """The text inside the first "(" of ``tail``, up to its ")" or the end of the line."""
    inside = tail[tail.find("(") + 1 :]
    close = inside.find(")")
    return inside if close < 0 else inside[:close]


def line_acceptance(tail: str, paren: bool, word: str | None) -> bool | None:
    """The rule above; ``tail`` is the text after the last stated number, ``paren``/``word`` the parser's
    "(" right after it and the word that follows it (None when there is none)."""
    if paren:
        w = (word or "").lower()
        if w == "this" or w in ACCEPT_WORDS:
            return True
        if w == "not" or w in REJECT_WORDS:
            return False
        accept, reject = _word_verdict(_paren_text(tail))
        return None if accept == reject else accept
    accept, reject = _word_verdict(tail)
    if reject:
        return None if accept else False
    return True if accept or "!" in tail else None
