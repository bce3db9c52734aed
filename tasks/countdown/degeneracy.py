"""How real a completion's search is: verdict lines, repeated attempts, fabricated equalities, flip-flopped verdicts.

A small model under RL can raise its reward with a degenerate search: writing the same attempt line again and again
until it says "(this works)", or stating the target after a wrong expression ("17 + 9 + 18 = 10" when the target is
10). A verdict probe on such text may read "how many lines so far" rather than the line's content. These counters
make that visible per checkpoint (``make train`` logs them in eval.jsonl) and in the analysis:

* ``verdict_share``: completions with at least one verdict line (an explicit verdict on the line: "(this works)",
  "(not 46)", "= 52! Yes"; answering with a line's expression judges it but is not a verdict line);
* ``verdict_line_share``: attempt lines that carry an explicit verdict, over all attempt lines: unlike
  ``verdict_share`` it does not grow with length alone (a completion that rambles to the length limit holds a
  verdict line by chance, its other lines unjudged);
* ``repeated``: attempt lines whose expression already appeared earlier in the same completion;
* ``fabricated``: wrong lines (the expression misses the target) whose stated value is the target;
* ``both_verdicts``: expressions that are both accepted and rejected within one completion;
* ``false_accept`` / ``false_reject``: judged wrong lines accepted / judged right lines rejected.

Each is a ratio of counts summed over the completions (``n_*`` are the denominators). Pure Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

from tasks.countdown.accepted import accepted_attempts


@dataclass(frozen=True)
class LineCounts:
    """Counts for one completion (or summed over many)."""

    completions: int = 0
    with_verdict: int = 0
    lines: int = 0
    verdict_lines: int = 0
    repeated: int = 0
    wrong: int = 0
    fabricated: int = 0
    judged_expressions: int = 0
    both_verdicts: int = 0
    judged_wrong: int = 0
    accepted_wrong: int = 0
    judged_right: int = 0
    rejected_right: int = 0

    def __add__(self, other: LineCounts) -> LineCounts:
        return LineCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def _norm(expression: str) -> str:
    return "".join(expression.split())


def count_lines(text: str, numbers: Sequence[int], target: int, template: str = "base") -> LineCounts:
    """The counters of one completion."""
    seen: set[str] = set()
    verdicts: dict[str, set[bool]] = {}
    c = dict.fromkeys((f.name for f in fields(LineCounts)), 0)
    c["completions"] = 1
    explicit = False
    for a, judged in accepted_attempts(text, numbers, target, template):
        if not a.parsed:
            continue
        explicit |= a.accepted is not None
        key = _norm(a.expression)
        c["lines"] += 1
        c["verdict_lines"] += a.accepted is not None
        c["repeated"] += key in seen
        seen.add(key)
        if not a.correct:
            c["wrong"] += 1
            c["fabricated"] += a.stated_is_target
        if judged is None:
            continue
        verdicts.setdefault(key, set()).add(judged)
        if a.correct:
            c["judged_right"] += 1
            c["rejected_right"] += not judged
        else:
            c["judged_wrong"] += 1
            c["accepted_wrong"] += judged
    c["with_verdict"] = int(explicit)
    c["judged_expressions"] = len(verdicts)
    c["both_verdicts"] = sum(len(v) == 2 for v in verdicts.values())
    return LineCounts(**c)


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def rates(counts: Iterable[LineCounts]) -> dict[str, float | int | None]:
    """The ratios of the summed counts (None where the denominator is 0) and the denominators."""
    t = sum(counts, LineCounts())
    return {
        "verdict_share": _ratio(t.with_verdict, t.completions),
        "verdict_line_share": _ratio(t.verdict_lines, t.lines),
        "repeated": _ratio(t.repeated, t.lines),
        "fabricated": _ratio(t.fabricated, t.wrong),
        "both_verdicts": _ratio(t.both_verdicts, t.judged_expressions),
        "false_accept": _ratio(t.accepted_wrong, t.judged_wrong),
        "false_reject": _ratio(t.rejected_right, t.judged_right),
        "n_completions": t.completions,
        "n_lines": t.lines,
        "n_wrong": t.wrong,
    }
