"""make study: config checks, resumable run states, RL-minus-control maths, and a micro study end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.study.report import change, compare, rl_minus_control
from tasks.config import ConfigError, load_config
from tests.e2e import MICRO, ROOT, micro_analysis, micro_overrides
from train.study import StudyConfig, run_specs, run_state


def test_bad_studies_fail_with_one_line_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="seeds"):
        StudyConfig(seeds=())
    with pytest.raises(ConfigError, match="controls"):
        load_config(StudyConfig, None, ["controls=[random]"])
    with pytest.raises(ConfigError, match="training preset 'nope'"):
        StudyConfig(preset="nope")
    proc = subprocess.run(
        [sys.executable, "-m", "train.study", "seeds=[]"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: seeds") and "Traceback" not in proc.stderr


def test_run_states_and_a_half_written_directory(tmp_path: Path) -> None:
    cfg = StudyConfig(output_root=str(tmp_path), seeds=(4, 5), controls=("format",))
    specs = run_specs(cfg)
    assert [(s.name, s.kind, s.seed) for s in specs] == [
        ("seed4", "rl", 4),
        ("seed5", "rl", 5),
        ("format", "format", 4),
    ]
    assert run_state(cfg, specs[0]) == "new"
    run = cfg.directory / "seed4"
    run.mkdir(parents=True)
    (run / "stray.txt").write_text("x")
    with pytest.raises(ConfigError, match=str(run)):
        run_state(cfg, specs[0])
    (run / "config.yaml").write_text("seed: 4\n")
    assert run_state(cfg, specs[0]) == "resume"
    (run / "summary.json").write_text("{}")
    assert run_state(cfg, specs[0]) == "done"


def test_rl_minus_control_interval_and_answers() -> None:
    assert change({0: 0.3, 12: 0.2, 60: 0.1}) == pytest.approx(-0.2)
    d = rl_minus_control([-0.20, -0.22, -0.18], -0.02)
    assert d["value"] == pytest.approx(-0.18) and d["hi"] < 0 < d["hi"] - d["lo"]
    assert rl_minus_control([-0.2], 0.0)["lo"] is None  # one seed: no interval
    empty = {m: {} for m in _metrics()}
    runs = {f"seed{i}": ("rl", {**empty, "false accepts | wrong": {0: 0.35, 60: 0.15 + 0.01 * i}}) for i in range(3)}
    runs["shuffled"] = ("shuffled", {**empty, "false accepts | wrong": {0: 0.35, 60: 0.34}})
    out = compare(runs)
    assert any(a.startswith("Do false accepts fall more under RL") and " yes:" in a for a in out["answers"]), out
    assert out["metrics"]["success"]["controls"]["shuffled"]["rl_minus_control"]["value"] is None


def _metrics() -> list[str]:
    from analysis.study.report import EVAL, FIXED

    return [*EVAL, *FIXED]


@pytest.mark.slow
def test_micro_study_end_to_end_then_resumes_without_recomputing(tmp_path: Path) -> None:
    train_args = [
        a
        for a in micro_overrides(tmp_path, "x", "hf", steps=2, save_every=1)
        if not a.startswith(("output_root", "run_name"))
    ]
    analysis_args = [a for a in micro_analysis(tmp_path, "hf") if not a.startswith("run=")]
    args = [
        f"output_root={tmp_path}",
        "name=micro",
        f"preset={MICRO}",
        "seeds=[1]",
        "controls=[shuffled]",
        f"train_args={json.dumps(train_args)}",
        f"analysis_args={json.dumps(analysis_args)}",
    ]
    cmd = [sys.executable, "-m", "train.study", *args]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    study = tmp_path / "study-micro"
    summary = json.loads((study / "summary.json").read_text())
    assert summary["runs"] == {"seed1": "rl", "shuffled": "shuffled"}
    assert summary["metrics"]["success"]["controls"]["shuffled"]["change"] is not None
    assert (study / "report.html").read_text().count("data:image/png") == len(summary["metrics"])
    cfg = (study / "shuffled" / "config.yaml").read_text()
    assert "reward: shuffled" in cfg and "seed: 1" in cfg
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0
    assert again.stdout.count("train [done]") == 2  # nothing finished is trained again
