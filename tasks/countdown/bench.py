"""Throughput of the reward and the chain-of-thought parser (``make bench``).

Both run on every completion of every GRPO step and every analysed checkpoint, so they must never be the
bottleneck: the reward is measured in completions/s, the parser in traces/s (target: >= 10k), each the median
of several repeats after a warm-up, on synthetic traces with slips, chains and verdict noise. The worst case
of the reward over adversarial megabyte inputs is reported too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from tasks.bench_results import record_bench
from tasks.countdown.generate import ProblemSpec, generate_problems
from tasks.countdown.reward import score
from tasks.countdown.synth import TraceStyle, write_trace
from tasks.countdown.trace import parse_attempts

PARSER_TARGET = 10_000  # traces/s, from the foundation issue
MB = 1 << 20


def _median_rate(fn: Callable[[], int], repeats: int) -> float:
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def run(n_traces: int = 5000, repeats: int = 5, seed: int = 0) -> dict[str, float]:
    """Measure and return the figures (also printed by :func:`main`)."""
    problems = generate_problems(ProblemSpec(), n_traces, seed)
    rng = random.Random(seed)
    style = TraceStyle(max_wrong=5, slip_rate=0.2, verdict_noise=0.1, reject_noise=0.1, chain_rate=0.3)
    traces = [write_trace(p, rng, style) for p in problems]
    items = [(t.completion, t.problem.numbers, t.problem.target) for t in traces]

    def rewards() -> int:
        for c, n, t in items:
            score(c, n, t)
        return len(items)

    def parses() -> int:
        for c, n, t in items:
            parse_attempts(c, n, t)
        return len(items)

    adversarial = [
        "x" * MB + "<answer>1 + 2 + 3</answer>",
        "<answer>" * (MB // 8),
        "<answer>" + "(" * (MB // 2) + "</answer>",
        "<answer>" + "- " * (MB // 2) + "1 + 2 + 3</answer>",
        "<answer>" + "9" * MB + "</answer>",
        "<answer>" + "1+" * (MB // 2) + "1</answer>",
    ]
    worst = 0.0
    for text in adversarial:
        t0 = time.perf_counter()
        score(text, (1, 2, 3), 6)
        worst = max(worst, time.perf_counter() - t0)
    return {
        "reward_completions_per_s": _median_rate(rewards, repeats),
        "parser_traces_per_s": _median_rate(parses, repeats),
        "attempt_lines_per_trace": sum(len(t.lines) for t in traces) / len(traces),
        "reward_worst_case_ms_1mb": worst * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.countdown.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/results.json", help="JSON file the figures are merged into")
    args = parser.parse_args(argv)
    figures = run(args.traces, args.repeats)
    print(f"{'measure':<34}{'value':>14}  target")
    print(f"{'reward, completions/s':<34}{figures['reward_completions_per_s']:>14,.0f}")
    ok = "ok" if figures["parser_traces_per_s"] >= PARSER_TARGET else "BELOW TARGET"
    print(f"{'parser, traces/s':<34}{figures['parser_traces_per_s']:>14,.0f}  >= {PARSER_TARGET:,} ({ok})")
    print(f"{'attempt lines per trace':<34}{figures['attempt_lines_per_trace']:>14.2f}")
    print(f"{'reward worst case, 1 MB input, ms':<34}{figures['reward_worst_case_ms_1mb']:>14.1f}")
    out = record_bench(args.out, "tasks", figures)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
