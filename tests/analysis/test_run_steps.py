"""The run-level steps of ``make analyze`` (analysis/run_steps.py): the table is consistent with the report and the
per-checkpoint table, and its walker runs steps in order, refuses a step whose input no earlier step made, and
writes each value where the table says (JSON, or text for HTML) atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.config import AnalysisConfig
from analysis.context import RunContext
from analysis.report import SECTIONS
from analysis.run_steps import RUN, RunState, RunStep, _function, walk_run
from analysis.stages import STAGES


def test_each_step_reads_only_steps_above_it_and_no_two_write_one_artifact() -> None:
    seen: set[str] = set()
    for step in RUN:
        assert set(step.reads) <= seen, (step.name, step.reads, seen)
        assert callable(_function(step.compute))
        seen.add(step.name)
    written = [s.writes for s in RUN if s.writes]
    assert len(written) == len(set(written))
    assert not set(written) & {w for st in STAGES for w in st.writes}  # the per-checkpoint table writes elsewhere
    sections = {name for name, _ in SECTIONS}
    assert all(s.section in sections for s in RUN if s.section)
    assert [s.name for s in RUN][-1] == "report" and RUN[-1].writes == "report.html"


def numbers(rs: RunState) -> dict[str, list[int]]:
    return {"steps": [s for s, _ in rs.loadable]}


def page(rs: RunState) -> str:
    return f"<p>{rs.values['numbers']['steps']}</p>"


def nothing(rs: RunState) -> None:
    return None


def _state(tmp_path: Path) -> RunState:
    ctx = RunContext(AnalysisConfig(), tmp_path, [], "base", np.array([]))
    ckpts = [(0, tmp_path / "step_0"), (6, tmp_path / "step_6")]
    return RunState(tmp_path, ctx, ckpts, {6: "model.safetensors: empty"}, 4, 0.0)


def test_the_walker_runs_steps_in_order_and_writes_their_values(tmp_path: Path) -> None:
    here = "tests.analysis.test_run_steps"
    steps = (
        RunStep("numbers", f"{here}:numbers", writes="numbers.json"),
        RunStep("quiet", f"{here}:nothing", writes="quiet.json"),
        RunStep("page", f"{here}:page", reads=("numbers",), writes="page.html"),
    )
    values = walk_run(_state(tmp_path), steps)
    assert values["numbers"] == {"steps": [0]}  # the broken checkpoint is not loadable
    assert json.loads((tmp_path / "numbers.json").read_text()) == {"steps": [0]}
    assert (tmp_path / "page.html").read_text() == "<p>[0]</p>"
    assert not (tmp_path / "quiet.json").exists()  # None writes nothing


def test_a_step_whose_input_no_earlier_step_made_is_refused(tmp_path: Path) -> None:
    steps = (RunStep("page", "tests.analysis.test_run_steps:page", reads=("numbers",), writes="page.html"),)
    with pytest.raises(RuntimeError, match=r"page reads \['numbers'\]"):
        walk_run(_state(tmp_path), steps)
    assert not (tmp_path / "page.html").exists()
