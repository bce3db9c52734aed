"""The one safe, exact arithmetic evaluator that the reward and the chain-of-thought parser share.

Why not ``eval``: TinyZero scores answers with a character whitelist plus ``eval``, which accepts more than
Countdown allows (``**`` and ``//`` pass the whitelist, ``**`` can run for minutes on ``9**9**9``), returns floats
(``1/3*3`` is compared with a 1e-5 tolerance) and has recursion limits that make outcomes depend on the
interpreter. Here the grammar is exactly Countdown's:

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := ("+" | "-") factor | NUMBER | "(" expr ")"

with Python's precedence and associativity, ASCII digits only, no leading zeros (``07`` is a syntax error in
Python too), and exact rational results (``int`` when integral, else ``fractions.Fraction``). The evaluator is an
iterative shunting-yard loop, so its time is linear in the input and it never recurses; inputs beyond fixed
limits (Python's own 200-level parenthesis limit, very long inputs) are rejected instead of evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fractions import Fraction

Number = int | Fraction

MAX_PAREN_DEPTH = 200  # CPython's tokenizer rejects deeper nesting ("too many nested parentheses")
MAX_UNARY_RUN = 1000  # CPython's compiler overflows on longer runs of unary signs
MAX_SIGNIFICANT_CHARS = 10_000  # longest expression (whitespace excluded) we agree to evaluate
MAX_DIGITS = 30  # longest number literal; Countdown numbers have at most 3 digits

_TOKEN = re.compile(r"[0-9]+|[^ \t]")
_WHITESPACE = str.maketrans("", "", " \t")
_INT_LITERAL = re.compile(r"[0-9]+")

_BINARY_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_UNARY_PRECEDENCE = 3


class ArithError(ValueError):
    """The text is not a Countdown expression, or it cannot be evaluated."""


class ExprSyntaxError(ArithError):
    """The text is not an expression of the grammar above (or exceeds a size limit)."""


class ExprZeroDivision(ArithError):
    """The expression is well formed but divides by zero."""


def _apply(op: str, values: list[Number]) -> None:
    if op == "u-":
        values[-1] = -values[-1]
        return
    if op == "u+":
        return
    b = values.pop()
    a = values.pop()
    if op == "+":
        r = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    else:
        if b == 0:
            raise ExprZeroDivision("division by zero")
        if isinstance(a, int) and isinstance(b, int) and a % b == 0:
            r = a // b
        else:
            r = Fraction(a) / b
    if isinstance(r, Fraction) and r.denominator == 1:
        r = r.numerator
    values.append(r)


def _precedence(op: str) -> int:
    return _UNARY_PRECEDENCE if op[0] == "u" else _BINARY_PRECEDENCE[op]


def tokenize(text: str) -> list[str]:
    """Split ``text`` into number literals and single-character tokens, skipping spaces and tabs.

    Raises ExprSyntaxError when the text is longer than the evaluator accepts, before any real work.
    """
    if len(text) > MAX_SIGNIFICANT_CHARS and len(text.translate(_WHITESPACE)) > MAX_SIGNIFICANT_CHARS:
        raise ExprSyntaxError(f"expression longer than {MAX_SIGNIFICANT_CHARS} characters")
    return _TOKEN.findall(text)


def evaluate_tokens(tokens: Iterable[str]) -> Number:
    """Evaluate tokens from :func:`tokenize` exactly. Raises ExprSyntaxError or ExprZeroDivision."""
    values: list[Number] = []
    ops: list[str] = []
    expect_operand = True
    depth = 0
    unary_run = 0
    for tok in tokens:
        c = tok[0]
        if "0" <= c <= "9":
            if not expect_operand:
                raise ExprSyntaxError(f"number {tok!r} follows an operand without an operator")
            if len(tok) > MAX_DIGITS:
                raise ExprSyntaxError(f"number literal longer than {MAX_DIGITS} digits")
            if c == "0" and len(tok) > 1 and tok.strip("0"):
                raise ExprSyntaxError(f"leading zero in {tok!r}")
            values.append(int(tok))
            expect_operand = False
            unary_run = 0
        elif c == "(":
            if not expect_operand:
                raise ExprSyntaxError("'(' follows an operand without an operator")
            depth += 1
            if depth > MAX_PAREN_DEPTH:
                raise ExprSyntaxError(f"parentheses nested deeper than {MAX_PAREN_DEPTH}")
            ops.append("(")
            unary_run = 0
        elif c == ")":
            if expect_operand:
                raise ExprSyntaxError("')' where an operand is expected")
            while ops and ops[-1] != "(":
                _apply(ops.pop(), values)
            if not ops:
                raise ExprSyntaxError("unbalanced ')'")
            ops.pop()
            depth -= 1
        elif c in "+-*/":
            if expect_operand:
                if c in "*/":
                    raise ExprSyntaxError(f"operator {c!r} where an operand is expected")
                unary_run += 1
                if unary_run > MAX_UNARY_RUN:
                    raise ExprSyntaxError(f"more than {MAX_UNARY_RUN} unary signs in a row")
                ops.append("u" + c)
                continue
            prec = _BINARY_PRECEDENCE[c]
            while ops and ops[-1] != "(" and _precedence(ops[-1]) >= prec:
                _apply(ops.pop(), values)
            ops.append(c)
            expect_operand = True
        else:
            raise ExprSyntaxError(f"character {c!r} is not allowed")
    if expect_operand:
        raise ExprSyntaxError("expression ends where an operand is expected")
    while ops:
        op = ops.pop()
        if op == "(":
            raise ExprSyntaxError("unbalanced '('")
        _apply(op, values)
    return values[0]


def evaluate(text: str) -> Number:
    """Exact value of a Countdown expression (``int`` when integral, else ``Fraction``).

    Raises ExprSyntaxError for anything outside the grammar and ExprZeroDivision for division by zero.
    """
    return evaluate_tokens(tokenize(text))


def literals(text: str, limit: int | None = None) -> list[int]:
    """The integer literals written in ``text``, in order (ASCII digits; what "uses the numbers" counts).

    With ``limit``, stops after ``limit + 1`` literals: callers comparing against ``limit`` numbers need no
    more to know the answer, and a megabyte of digits then costs nothing. Raises ExprSyntaxError on a
    literal longer than MAX_DIGITS (Python's ``int`` refuses very long ones; no Countdown number is one).
    """
    out: list[int] = []
    for m in _INT_LITERAL.finditer(text):
        tok = m.group()
        if len(tok) > MAX_DIGITS:
            raise ExprSyntaxError(f"number literal longer than {MAX_DIGITS} digits")
        out.append(int(tok))
        if limit is not None and len(out) > limit:
            break
    return out


def same_multiset(a: Iterable[int], b: Iterable[int]) -> bool:
    """True when ``a`` and ``b`` hold the same numbers the same number of times."""
    return sorted(a) == sorted(b)


def is_sub_multiset(part: Iterable[int], whole: Iterable[int]) -> bool:
    """True when every number of ``part`` can be taken from ``whole`` without reuse."""
    pool: dict[int, int] = {}
    for n in whole:
        pool[n] = pool.get(n, 0) + 1
    for n in part:
        left = pool.get(n, 0)
        if not left:
            return False
        pool[n] = left - 1
    return True
