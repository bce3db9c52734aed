"""Search traces whose checking is real and whose search is the writer's own, plus an audit of the corpus.

Why: the tiny preset's base corpus (:func:`tasks.countdown.synth.write_trace`) plants the verdict. Its writer is an
oracle that places the reference solution as the last line after 0..``max_wrong`` wrong lines drawn uniformly, so
the line index predicts the verdict (P("this" | line k) rises from about 0.27 to 0.89 over k), and it writes
verdict = (stated value == target) plus noise, so a model can learn "(this" from the stated number alone without
checking anything. Here nothing but the arithmetic decides:

- **The search is the model's own.** Every attempt line is a fresh random full expression over the given numbers
  (:func:`~tasks.countdown.generate.random_expression`), drawn i.i.d. per line (optionally never repeating a line
  of the same trace), a procedure that needs no knowledge of the answer. The reference solution is never used.
- **Stated values come from the arithmetic.** A line states its expression's true value, except for a slip
  (``slip_rate``): a wrong value, which states the target itself in ``slip_target_share`` of slips (when the true
  value is not the target), the fabricated equality a checker must catch.
- **Verdicts follow the truth.** A verifying trace writes "(this works)" iff the line is really right (true value
  and stated value both equal the target), else "(not T)"; a slip that states the target is rejected. It stops at
  the first accepted line and answers it, or after ``max_lines`` lines gives up and answers the last line.
- **Few traces verify** (``verdict_rate``): the others state values without judging them and stop with a constant
  hazard ``stop_rate`` per line whatever the line's value (a stop exactly at the target would be an implicit
  check), answering the last line.

With i.i.d. attempts and a stop at the first real hit, the hazard of "(this" is the same at every line index, so
the number of lines before the right one carries no information; :func:`audit_corpus` measures that and the other
rates on this writer. Traces keep :mod:`tasks.countdown.synth`'s shape (header, "- expr = v (verdict)" lines, "So
the equation is ...", answer tags) and its :class:`~tasks.countdown.synth.LineTruth` records, so the tokenizer, the
reward and :func:`tasks.countdown.trace.parse_attempts` work unchanged. Unlike synth's plain traces, every attempt
line is recorded: a line without a verdict has ``verdict == ""``, ``paren_pos == -1`` and ``verdict_span == (-1, -1)``.
Pure Python and stdlib ``random``: the same seed gives the same corpus anywhere.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from tasks.countdown import arith
from tasks.countdown.generate import OPERATORS, Expr, Problem, random_expression
from tasks.countdown.reward import CORRECT_SCORE, score
from tasks.countdown.synth import LineTruth, SynthTrace, _chain

_REDRAWS = 20  # draws per line before a repeat is written anyway (a small problem may have few distinct lines)
AUDIT_MAX_K = 5  # the audit reports P("this" | verdict line index k) for k = 0..AUDIT_MAX_K


@dataclass(frozen=True)
class SearchStyle:
    """How search traces are written (defaults: the proposed tiny preset; the module docstring says why)."""

    # share of traces that judge every line; the rest commit without any verdict, as a pre-trained model mostly would
    verdict_rate: float = 0.07
    # most lines per trace (a verifying one gives up, a plain one is cut): ~8 fit the tiny preset's 256 tokens
    max_lines: int = 8
    # per-line chance that a plain (non-verifying) trace stops after the line, whatever its value: a constant hazard
    stop_rate: float = 0.3
    # per-line chance that the stated value is not the expression's value (an arithmetic slip)
    slip_rate: float = 0.05
    # share of slips that state the target when the true value is not it: the false equality a checker must reject
    slip_target_share: float = 0.3
    # redraw an expression already written in this trace (up to a few times): a searcher does not retry a line
    avoid_repeats: bool = True
    # write each attempt step by step, one binary operation per "=" ("14 + 11 = 25 - 9 = 16"), so the value a small
    # model must compute at each "=" is one addition or subtraction, not a whole expression
    chain: bool = False


def random_attempt(
    numbers: Sequence[int], rng: random.Random, operators: Sequence[str], chain: bool
) -> tuple[str, Expr] | None:
    """One random attempt over ``numbers`` as (text before the last "=", expression): a full expression, or a
    left-deep chain of binary steps over the numbers in random order (``chain``); None if none has integer steps."""
    if chain:
        order = list(numbers)
        rng.shuffle(order)
        return _chain(order, [rng.choice(list(operators)) for _ in order[1:]])
    made = random_expression(list(numbers), rng, operators)
    return None if made is None else (made.text, made)


def _draw(
    problem: Problem, rng: random.Random, operators: Sequence[str], seen: set[str], style: SearchStyle
) -> tuple[str, Expr]:
    """The next attempt: a random one, avoiding this trace's earlier lines if asked."""
    got = None
    for _ in range(_REDRAWS if style.avoid_repeats else 1):
        made = random_attempt(problem.numbers, rng, operators, style.chain)
        if made is not None:
            got = made
            if made[1].text not in seen:
                break
    if got is None:
        raise ValueError(f"operators {list(operators)} cannot combine {list(problem.numbers)} with integer steps")
    return got


def _stated(true_value: arith.Number, target: int, rng: random.Random, style: SearchStyle) -> arith.Number:
    """The value written after "=": the true value, or with ``slip_rate`` a slip (the target in a share of them)."""
    if rng.random() >= style.slip_rate:
        return true_value
    if true_value != target and rng.random() < style.slip_target_share:
        return target
    return true_value + rng.choice([d for d in range(-10, 11) if d and true_value + d != target])


def _line(
    text: str, head: str, expr: Expr, stated: arith.Number, problem: Problem, verdict: str
) -> tuple[str, LineTruth]:
    """Append one attempt line ("- <head> = v" and, for a verdict "this"/"not", its parenthesis) and record it."""
    start = len(text)
    line = f"- {head} = {stated}"
    paren, verdict_span = -1, (-1, -1)
    if verdict:
        line += " "
        paren = start + len(line)
        verdict_span = (paren + 1, paren + 1 + len(verdict))
        line += "(this works)" if verdict == "this" else f"(not {problem.target})"
    truth = LineTruth(
        line_span=(start, start + len(line)),
        expression=expr.text,
        stated_value=stated,
        true_value=expr.value,
        uses_numbers=arith.same_multiset(expr.operands, problem.numbers),
        correct=expr.value == problem.target,
        verdict=verdict,
        paren_pos=paren,
        verdict_span=verdict_span,
    )
    return text + line + "\n", truth


def write_search_trace(
    problem: Problem,
    rng: random.Random,
    style: SearchStyle = SearchStyle(),
    operators: Sequence[str] = OPERATORS,
) -> SynthTrace:
    """One trace for ``problem``: random attempts, judged by their arithmetic in a ``verdict_rate`` share of traces.

    ``operators`` are those the attempts may use (the problems' own). ``problem.solution`` is never read.
    """
    verifying = rng.random() < style.verdict_rate
    t = problem.target
    nums = ", ".join(str(n) for n in problem.numbers)
    text = f"\nWe have the numbers {nums} and need to reach {t}."
    text += " Let's try different combinations:\n" if verifying else "\n"
    lines: list[LineTruth] = []
    seen: set[str] = set()
    for _ in range(style.max_lines):
        head, expr = _draw(problem, rng, operators, seen, style)
        seen.add(expr.text)
        stated = _stated(expr.value, t, rng, style)
        right = expr.value == t and stated == t
        verdict = ("this" if right else "not") if verifying else ""
        text, truth = _line(text, head, expr, stated, problem, verdict)
        lines.append(truth)
        stop = right if verifying else rng.random() < style.stop_rate  # plain traces stop blind to the value
        if stop:
            break
    answer = lines[-1].expression  # the accepted line, or the last one when the search stopped or gave up
    text += f"So the equation is {answer}.\n</think>\n<answer> {answer} </answer>"
    return SynthTrace(problem, text, tuple(lines), answer)


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


@dataclass
class _Tally:
    """Counts over written traces; ``[hits, n]`` pairs and per-style (verifying True / plain False) totals."""

    by_k: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in range(AUDIT_MAX_K + 1)])
    slip_target: list[int] = field(default_factory=lambda: [0, 0])
    stated_target: list[int] = field(default_factory=lambda: [0, 0])
    traces: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})
    lines: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})
    solved: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})
    slips: int = 0
    first_hits: int = 0
    accepted: int = 0

    def add(self, tr: SynthTrace) -> None:
        p = tr.problem
        verifying = bool(tr.lines[0].verdict)
        self.traces[verifying] += 1
        self.lines[verifying] += len(tr.lines)
        self.solved[verifying] += score(tr.completion, p.numbers, p.target) == CORRECT_SCORE
        self.slips += sum(x.stated_value != x.true_value for x in tr.lines)
        self.first_hits += tr.lines[0].correct
        self.accepted += tr.lines[-1].verdict == "this"
        for k, x in enumerate(tr.lines if verifying else ()):
            accepted = x.verdict == "this"
            counters = [self.by_k[k]] if k <= AUDIT_MAX_K else []
            if x.stated_value == p.target:
                counters += [self.stated_target] + ([] if x.correct else [self.slip_target])
            for c in counters:
                c[0] += accepted
                c[1] += 1

    def report(self) -> dict[str, object]:
        n, nv = self.traces[True] + self.traces[False], self.traces[True]
        return {
            "p_this_by_k": [_rate(a, m) for a, m in self.by_k],
            "n_by_k": [m for _, m in self.by_k],
            "p_this_slip_target": _rate(*self.slip_target),
            "n_slip_target": self.slip_target[1],
            "p_this_stated_target": _rate(*self.stated_target),
            "verdict_share": _rate(nv, n),
            "slip_rate": _rate(self.slips, self.lines[True] + self.lines[False]),
            "hit_rate_first_line": _rate(self.first_hits, n),
            "mean_lines_verifying": _rate(self.lines[True], nv),
            "mean_lines_plain": _rate(self.lines[False], n - nv),
            "accepted_share": _rate(self.accepted, nv),
            "success_verifying": _rate(self.solved[True], nv),
            "success_plain": _rate(self.solved[False], n - nv),
            "traces": n,
        }


def audit_corpus(
    problems: Sequence[Problem],
    n_traces_per_problem: int,
    style: SearchStyle = SearchStyle(),
    seed: int = 0,
    operators: Sequence[str] = OPERATORS,
) -> dict[str, object]:
    """What a model imitating this writer would learn: the rates that show whether any cue plants the verdict.

    Writes ``n_traces_per_problem`` traces per problem with one ``random.Random(seed)`` and returns:
    ``p_this_by_k`` / ``n_by_k`` (P("this" | verdict line index k) and its count, k = 0..5: flat when position
    carries no information), ``p_this_slip_target`` / ``n_slip_target`` (acceptance of slips that state the target:
    0 when checking is real), ``p_this_stated_target`` (acceptance of any line stating the target: what the stated
    number alone predicts), ``verdict_share`` (traces with verdict lines), ``slip_rate`` (per line),
    ``hit_rate_first_line`` (first lines whose expression hits the target: the random-expression hit rate of these
    problems), ``mean_lines_verifying`` / ``mean_lines_plain``, ``accepted_share`` (verifying traces that end on an
    accepted line) and ``success_verifying`` / ``success_plain`` (share of traces the reward scores fully right).
    """
    rng = random.Random(seed)
    tally = _Tally()
    for problem in problems:
        for _ in range(n_traces_per_problem):
            tally.add(write_search_trace(problem, rng, style, operators))
    return tally.report()
