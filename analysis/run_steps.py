"""The run-level steps of ``make analyze``, declared as a table like the per-checkpoint stages (analysis/stages.py):
what each step reads (earlier steps), what it computes, the artifact it writes under ``<run>/analysis/`` and the
report section that shows it. :func:`analysis.analyse_run.analyse_run` prepares a :class:`RunState` and walks
:data:`RUN`; nothing else orders the steps.

Why a second, smaller table: these steps span checkpoints (the fixed-text set needs the first and last checkpoints,
emergence needs every one), so they cannot be rows of the per-checkpoint table; their caching lives inside them
(the fixed-text set and scale in ``fixed/``, each checkpoint's stages in ``step_<N>/``), and the artifacts written
here are cheap summaries rewritten on every run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.cache import write_json
from analysis.context import RunContext
from tasks.atomic import write_text


@dataclass(frozen=True)
class RunStep:
    """One run-level step. ``compute`` ("module:function") takes the :class:`RunState` and returns the step's
    value; a value that is not None is written to ``writes`` (JSON, or text for ``.html``)."""

    name: str
    compute: str
    reads: tuple[str, ...] = ()  # earlier steps whose values it uses
    writes: str | None = None  # its artifact under <run>/analysis/ (None: its artifacts are the stage table's)
    section: str = ""  # the report section that shows it ("" for the report itself)


RUN: tuple[RunStep, ...] = (
    RunStep("fixed_text", "analysis.analyse_run:fixed_text_step", writes="fixed.json", section="Fixed text"),
    RunStep("checkpoints", "analysis.analyse_run:checkpoints_step", reads=("fixed_text",), section="Probes"),
    RunStep("emergence", "analysis.analyse_run:emergence_step", reads=("checkpoints",), writes="emergence.json",
            section="Direction over training"),
    RunStep("summary", "analysis.analyse_run:summary_step", reads=("fixed_text", "checkpoints", "emergence"),
            writes="summary.json", section="summary.json"),
    RunStep("report", "analysis.analyse_run:report_step", reads=("fixed_text", "checkpoints", "emergence", "summary"),
            writes="report.html"),
)  # fmt: skip


@dataclass
class RunState:
    """One run's analysis while the steps run: the run, its context, its checkpoints (``loadable`` are those that
    passed :func:`analysis.checkpoint_stages.check_checkpoint`; ``broken`` maps the others' steps to why), the
    model's layer count, when the analysis started, and each finished step's value."""

    run: Path
    ctx: RunContext
    ckpts: list[tuple[int, Path]]
    broken: dict[int, str]
    layers: int | None
    started: float
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def loadable(self) -> list[tuple[int, Path]]:
        return [(s, p) for s, p in self.ckpts if s not in self.broken]


def _function(ref: str) -> Callable[[RunState], Any]:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def walk_run(state: RunState, steps: tuple[RunStep, ...] = RUN) -> dict[str, Any]:
    """Run every step in table order, each after the steps it reads; write each value that is not None."""
    for step in steps:
        missing = [r for r in step.reads if r not in state.values]
        if missing:
            raise RuntimeError(f"run step {step.name} reads {missing}, which no earlier step made")
        value = state.values[step.name] = _function(step.compute)(state)
        if value is not None and step.writes:
            path = state.ctx.out / step.writes
            write_text(path, value) if step.writes.endswith(".html") else write_json(path, value)
    return state.values
