"""make study: config checks, resumable run states, the frozen analysis config, the RL-minus-control table, and a
micro study end to end."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.study.combined_report import change, compare, statistics_note
from analysis.study.runs import StudyConfig, freeze_analysis_config, run_specs, run_state
from tasks.config import ConfigError, load_config
from tests.e2e import ANALYSIS_PRESET, MICRO, ROOT, micro_analysis, micro_overrides


def _study(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis.study", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _one_line_error(proc: subprocess.CompletedProcess, starts: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1 and err.startswith(starts), err
    return err


def test_bad_studies_fail_with_one_line_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="seeds"):
        StudyConfig(seeds=())
    with pytest.raises(ConfigError, match="controls"):
        load_config(StudyConfig, None, ["controls=[random]"])
    with pytest.raises(ConfigError, match="training preset 'nope'"):
        StudyConfig(preset="nope")
    with pytest.raises(ConfigError, match="control_seeds: expected distinct"):
        StudyConfig(seeds=(1,), control_seeds=(7, 7))
    with pytest.raises(ConfigError, match="Did you mean 'control_seeds'"):
        load_config(StudyConfig, None, ["control_seed=5"])  # the old key
    with pytest.raises(ConfigError, match="jobs: expected a number of runs at once >= 1, got 0"):
        StudyConfig(jobs=0)
    _one_line_error(_study("seeds=[]"), "error: seeds")


def test_make_study_refuses_too_few_or_shared_control_seeds(tmp_path: Path) -> None:
    root = f"output_root={tmp_path}"
    fewer = _one_line_error(_study(root, "seeds=[1,2,3]", "control_seeds=[101,102]"), "error: control_seeds")
    assert "control_seeds: 2 seeds, fewer than the 3 RL seeds (seeds); give at least as many" in fewer
    shared = _one_line_error(_study(root, "seeds=[1,2]", "control_seeds=[2,101]"), "error: control_seeds")
    assert "[2]" in shared and "data order and sampling" in shared
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_default_preset_and_run_specs(tmp_path: Path) -> None:
    from analysis.study.runs import PRESET_DIR

    cfg = load_config(StudyConfig, PRESET_DIR / "tiny.yaml")
    assert cfg.seeds == (13, 14, 15, 16) and cfg.control_seeds == (113, 114, 115, 116) and cfg.controls == ("shuffled",)
    assert (cfg.preset, cfg.analysis_preset) == ("tiny", "tiny")  # the default study runs the default presets
    cue = load_config(StudyConfig, PRESET_DIR / "tiny-cue.yaml")
    assert cue.seeds == (1, 2, 3) and cue.control_seeds == (101, 102, 103) and cue.preset == "tiny-cue"
    both = StudyConfig(output_root=str(tmp_path), seeds=(4,), control_seeds=(8, 9), controls=("shuffled", "format"))
    assert [(s.name, s.kind, s.seed) for s in run_specs(both)] == [
        ("seed4", "rl", 4),
        ("shuffled-s8", "shuffled", 8),
        ("shuffled-s9", "shuffled", 9),
        ("format-s8", "format", 8),
        ("format-s9", "format", 9),
    ]


def test_run_states_and_a_half_written_directory(tmp_path: Path) -> None:
    cfg = StudyConfig(output_root=str(tmp_path), seeds=(4, 5), control_seeds=(6, 7), controls=("format",))
    specs = run_specs(cfg)
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


def test_frozen_analysis_config_and_a_changed_one_refused_before_training(tmp_path: Path) -> None:
    base = {"output_root": str(tmp_path), "name": "f", "seeds": (1,), "control_seeds": (101,)}
    cfg = StudyConfig(**base, analysis_args=("steering.scale=0.5",))
    first = freeze_analysis_config(cfg)
    frozen = cfg.directory / "analysis.frozen.yaml"
    assert first["analysis_config_hash"] == hashlib.sha256(frozen.read_text().encode()).hexdigest()
    assert first["frozen_before_runs"] and first["unchanged"]
    again = freeze_analysis_config(cfg, runs_started=True)  # a resume with the same config: same record
    assert again["analysis_config_frozen_at"] == first["analysis_config_frozen_at"] and again["frozen_before_runs"]
    proc = _study(
        f"output_root={tmp_path}",
        "name=f",
        "seeds=[1]",
        "control_seeds=[101]",
        "analysis_args=[steering.scale=0.7]",
    )
    err = _one_line_error(proc, "error: analysis config changed since the study's runs started: ")
    assert f"steering.scale 0.5 -> 0.7 (frozen in {frozen}); restore it or start a new study name" in err
    assert sorted(p.name for p in cfg.directory.iterdir()) == ["analysis.frozen.yaml", "frozen.json"]  # no run


def _metrics() -> list[str]:
    from analysis.study.metrics import EVAL, FIXED

    return [*EVAL, *FIXED]


def _runs(rl: list[float], controls: list[float]) -> dict[str, tuple[str, dict]]:
    """Runs whose only metric is false accepts, from 0.35 at step 0 to the given values at step 60."""
    empty = {m: {} for m in _metrics()}
    runs = {f"seed{i}": ("rl", {**empty, "false accepts | wrong": {0: 0.35, 60: v}}) for i, v in enumerate(rl)}
    for i, v in enumerate(controls):
        runs[f"shuffled-s{100 + i}"] = ("shuffled", {**empty, "false accepts | wrong": {0: 0.35, 60: v}})
    return runs


def test_rl_minus_control_table_and_answers() -> None:
    assert change({0: 0.3, 12: 0.2, 60: 0.1}) == pytest.approx(-0.2)
    out = compare(_runs([0.15, 0.16, 0.17, 0.14], [0.34, 0.36, 0.33, 0.35]))
    cell = out["metrics"]["false accepts | wrong"]["controls"]["shuffled"]
    assert cell["rl_minus_control"] == pytest.approx(0.155 - 0.345)
    assert cell["permutation_p"] == pytest.approx(2 / 70) and cell["holm_p"] == pytest.approx(2 / 70)  # one row
    assert cell["bootstrap"]["lo"] < cell["rl_minus_control"] < cell["bootstrap"]["hi"] < 0
    assert cell["changes"] == pytest.approx([-0.01, 0.01, -0.02, 0.0]) and len(cell["runs"]) == 4
    assert out["tests"]["rows"] == 1
    assert any(a.startswith("Do false accepts fall more under RL") and " yes:" in a for a in out["answers"]), out
    assert out["metrics"]["success"]["controls"]["shuffled"]["permutation_p"] is None
    opposite = compare(_runs([0.34, 0.36, 0.33, 0.35], [0.15, 0.16, 0.17, 0.14]))
    assert any(" no, the opposite:" in a for a in opposite["answers"]), opposite["answers"]
    small = compare(_runs([0.15, 0.16, 0.17], [0.34, 0.36, 0.33]))  # 3 vs 3: p = 0.1 at best
    assert small["metrics"]["false accepts | wrong"]["controls"]["shuffled"]["permutation_p"] == pytest.approx(0.1)
    assert any("no p can be below 0.100" in a for a in small["answers"]), small["answers"]


def test_holm_across_every_row_decides_the_answer() -> None:
    runs = _runs([0.15, 0.16, 0.17, 0.14], [0.34, 0.36, 0.33, 0.35])
    for i, (_, s) in enumerate(runs.values()):  # a second row (success), same separation: K = 2
        s["success"] = {0: 0.1, 60: 0.5 if i < 4 else 0.1}
    out = compare(runs)
    cell = out["metrics"]["false accepts | wrong"]["controls"]["shuffled"]
    assert out["tests"]["rows"] == 2 and cell["holm_p"] == pytest.approx(4 / 70)
    assert any("not resolved (Holm-adjusted p = 0.057" in a for a in out["answers"]), out["answers"]


def test_the_report_says_when_nothing_can_be_significant() -> None:
    lines = " ".join(statistics_note(3, {"shuffled": 3}, 15)["lines"])
    assert "smallest achievable p is 0.100: nothing in the shuffled rows can be significant at 0.05" in lines
    assert "at least 4 seeds per arm (4 vs 4: 0.029)" in lines
    assert "Exact permutation test over runs" in lines and "Holm's step-down correction across the table's 15" in lines
    assert "only descriptive" in lines
    assert "nothing" not in " ".join(statistics_note(4, {"shuffled": 4}, 1)["lines"])


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
        f"analysis_preset={ANALYSIS_PRESET}",
        "seeds=[1,2]",
        "control_seeds=[101,102]",
        "controls=[shuffled]",
        "jobs=2",
        f"train_args={json.dumps(train_args)}",
        f"analysis_args={json.dumps(analysis_args)}",
    ]
    first = _study(*args, timeout=2400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    study = tmp_path / "study-micro"
    summary = json.loads((study / "summary.json").read_text())
    assert summary["runs"] == {"seed1": "rl", "seed2": "rl", "shuffled-s101": "shuffled", "shuffled-s102": "shuffled"}
    cell = summary["metrics"]["success"]["controls"]["shuffled"]
    assert len(cell["changes"]) == 2 and len(summary["metrics"]["success"]["rl_changes"]) == 2
    assert cell["permutation_p"] is not None and cell["holm_p"] >= cell["permutation_p"]
    assert cell["min_p"] == pytest.approx(2 / 6) and cell["bootstrap"]["value"] == pytest.approx(
        cell["rl_minus_control"]
    )
    digest = summary["analysis_config_hash"]
    assert digest == hashlib.sha256((study / "analysis.frozen.yaml").read_text().encode()).hexdigest()
    assert summary["analysis_config_frozen_at"] and summary["analysis_config"]["frozen_before_runs"]
    report = (study / "report.html").read_text()
    assert report.count("data:image/png") == len(summary["metrics"])
    assert "permutation p" in report and "Holm p" in report and digest in report and "unchanged since" in report
    assert "nothing in the shuffled rows can be significant" in report
    assert sorted(p.name for p in (study / "logs").iterdir()) == [f"{r}.log" for r in sorted(summary["runs"])]
    assert "python -m analysis" in (study / "logs" / "seed2.log").read_text()  # two at once: output to each log
    cfg = (study / "shuffled-s101" / "config.yaml").read_text()
    assert "reward: shuffled" in cfg and "seed: 101" in cfg
    again = _study(*args, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("train [done]") == 4  # nothing finished is trained again
    assert (
        json.loads((study / "summary.json").read_text())["analysis_config_frozen_at"]
        == (summary["analysis_config_frozen_at"])
    )


def test_primary_outcome_at_its_own_p_and_the_step_of_half_the_change(tmp_path: Path) -> None:
    from analysis.study.combined_report import compare, half_change_step
    from analysis.study.metrics import METRICS

    assert half_change_step({0: 0.1, 12: 0.2, 24: 0.5, 36: 0.6}) == 24  # (0.5 - 0.1) / 0.5 >= 0.5 first at 24
    assert half_change_step({0: 0.3, 12: 0.1, 24: 0.3}) is None  # no change
    assert half_change_step({0: 0.5, 12: 0.4, 24: 0.1}) == 24  # a fall: -0.1 / -0.4 < 0.5 at 12
    runs = {}
    for i in range(4):
        up = {0: 0.1, 30: 0.5 + 0.01 * i, 60: 0.9 + 0.01 * i}
        flat = {0: 0.1, 30: 0.1, 60: 0.1 + 0.01 * i}
        runs[f"seed{i}"] = ("rl", {"completions with verdict lines": up, "success": up})
        runs[f"shuffled-s{i}"] = ("shuffled", {"completions with verdict lines": flat, "success": flat})
    out = compare({n: (k, {m: s.get(m, {}) for m in METRICS}) for n, (k, s) in runs.items()})
    (primary,) = out["primary"]["answers"]
    assert primary.startswith("Does the share of held-out completions that write verdict lines rise more")
    assert ") yes:" in primary and "permutation p = 0.029 (the primary outcome: no correction)" in primary
    row = out["metrics"]["completions with verdict lines"]
    assert row["rl_half_steps"] == [30] * 4 and row["controls"]["shuffled"]["half_steps"] == [None, 60, 60, 60]
    (success,) = [a for a in out["answers"] if "success" in a]
    assert "Holm p = 0.057 (2 rows)" in success and "not resolved (Holm-adjusted p = 0.057 > 0.05)" in success
    assert not any("verdict lines" in a for a in out["answers"])  # the primary is not asked twice
    with pytest.raises(ConfigError, match="primary: 'verdicts' is not a study metric"):
        StudyConfig(primary="verdicts")


def test_report_from_run_files_without_training(tmp_path: Path) -> None:
    from analysis.study.combined_report import write_report

    specs = [("seed1", "rl"), ("seed2", "rl"), ("shuffled-s101", "shuffled"), ("shuffled-s102", "shuffled")]
    for i, (name, kind) in enumerate(specs):
        (tmp_path / name).mkdir()
        end = 0.6 + 0.01 * i if kind == "rl" else 0.2 + 0.01 * i
        rows = [{"step": 0, "success_rate": 0.2}, {"step": 60, "success_rate": end}]
        (tmp_path / name / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    per_step = [
        {"step": st, "content_effect_slip": {"value": v, "lo": v - 0.1, "hi": v + 0.1}, "position_effect": None}
        for st, v in ((0, 0.1), (60, 0.5))
    ]
    (tmp_path / "seed1" / "analysis").mkdir()
    (tmp_path / "seed1" / "analysis" / "summary.json").write_text(json.dumps({"fixed_text": {"per_step": per_step}}))
    frozen = {"analysis_config_hash": "ab" * 32, "analysis_config_frozen_at": "T", "frozen_before_runs": True}
    report = write_report(tmp_path, specs, {**frozen, "path": "p", "unchanged": True}).read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    cell = summary["metrics"]["success"]["controls"]["shuffled"]
    assert cell["permutation_p"] == pytest.approx(2 / 6) and cell["holm_p"] == pytest.approx(2 / 6)
    assert set(cell["bootstrap"]) >= {"value", "lo", "hi"} and summary["analysis_config_hash"] == "ab" * 32
    assert summary["tests"]["rows"] == 1 and summary["primary"]["answers"] == []  # no run logged verdict lines
    (answer,) = summary["answers"]  # success is a secondary outcome: Holm over the table's one row
    assert answer.startswith("Does held-out success rise more") and "Holm p = 0.333 (1 rows)" in answer
    assert "ab" * 32 in report and "before any of the study's runs started" in report
    (final,) = summary["finals"].items()  # only seed1 has an analysis: its last checkpoint, with its interval
    assert final[0] == "seed1" and final[1]["step"] == 60 and final[1]["fixed text: position effect"] is None
    assert final[1]["fixed text: accepts right lines minus slips"] == pytest.approx(
        {"value": 0.5, "lo": 0.4, "hi": 0.6}
    )
    assert "Where each run ended" in report and "+0.50 [+0.40, +0.60]" in report
    assert "control: shuffled (2 seeds)" not in report  # legends are inside the PNGs
    assert report.count("data:image/png") == len(summary["metrics"])
