"""``make study ARGS=submit=slurm`` (analysis/study/slurm.py): one job per run, the report job after them, and a
rerun that resubmits only what is neither finished nor queued. Slurm cannot exist here: ``sbatch`` and ``squeue``
are stand-in scripts on PATH that record their arguments and answer as Slurm does (``--parsable``: "<id>;cluster")."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from analysis.study.driver import main
from analysis.study.runs import StudyConfig
from analysis.study.slurm import submit_study
from tasks.config import load_config


def _standin_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    bin_dir, calls, queue = tmp_path / "bin", tmp_path / "sbatch.calls", tmp_path / "queue"
    bin_dir.mkdir()
    queue.write_text("")
    sbatch = f'#!/bin/bash\nn=$(( $(cat {calls} 2>/dev/null | wc -l) + 100 ))\necho "$*" >> {calls}\necho "$n;c1"\n'
    squeue = f'#!/bin/bash\necho "$*" >> {tmp_path / "squeue.calls"}\ncat {queue}\n'
    for name, text in (("sbatch", sbatch), ("squeue", squeue)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls, queue


def _cfg(tmp_path: Path) -> tuple[StudyConfig, list[str]]:
    # seeds pinned here: the preset's own change from study to study
    overrides = [f"output_root={tmp_path}", "submit=slurm", "slurm_args=[--partition=gpu]"]
    overrides += ["seeds=[9,10,11,12]", "control_seeds=[109,110,111,112]"]
    root = Path(__file__).parents[2] / "configs" / "study" / "tiny.yaml"
    return load_config(StudyConfig, root, overrides), overrides


def test_each_run_is_a_job_and_the_report_waits_for_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls, _ = _standin_slurm(tmp_path, monkeypatch)
    cfg, overrides = _cfg(tmp_path)
    ids = submit_study(cfg, "tiny", overrides, dry_run=False, say=lambda _: None)
    lines = calls.read_text().splitlines()
    assert ids == [str(i) for i in range(100, 109)] and len(lines) == 9
    assert all("--partition=gpu" in line for line in lines)
    assert "--job-name=study-tiny-seed9" in lines[0] and "runs=[seed9]" in lines[0] and "report=false" in lines[0]
    assert "--job-name=study-tiny-shuffled-s112" in lines[7]
    assert "--dependency=afterok:100:101:102:103:104:105:106:107" in lines[8] and "runs=" not in lines[8]
    assert json.loads((cfg.directory / "frozen.json").read_text())["frozen_before_runs"]  # frozen before any job


def test_a_rerun_resubmits_only_runs_neither_finished_nor_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, queue = _standin_slurm(tmp_path, monkeypatch)
    cfg, overrides = _cfg(tmp_path)
    done = cfg.directory / "seed9"
    done.mkdir(parents=True)
    (done / "config.yaml").write_text("run_name: seed9\n")
    (done / "summary.json").write_text("{}")
    queue.write_text("555 study-tiny-seed10\n")
    said: list[str] = []
    ids = submit_study(cfg, "tiny", overrides, dry_run=False, say=said.append)
    lines = calls.read_text().splitlines()
    assert len(ids) == 7 and not any("runs=[seed9]" in x or "runs=[seed10]" in x for x in lines)
    assert "--dependency=afterok:100:101:102:103:104:105:555" in lines[-1]
    assert any("seed10 already queued" in s for s in said)
    assert len((tmp_path / "squeue.calls").read_text().splitlines()) == 1  # one look at the queue per command


def test_dry_run_prints_the_submissions_and_submits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls, _ = _standin_slurm(tmp_path, monkeypatch)
    _, overrides = _cfg(tmp_path)
    assert main(["--preset", "tiny", "--dry-run", *overrides]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 10 and all(x.startswith("sbatch --parsable") for x in out[:9])
    assert all(x.count("submit=") == 1 and "submit=local" in x for x in out[:9])  # each job runs its part locally
    assert "--dependency=afterok:{ids}" in out[8] and out[9].startswith("({ids}: the job ids sbatch gives")
    assert not calls.exists() and not (tmp_path / "study-tiny").exists()


def test_an_unknown_run_name_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--preset", "tiny", f"output_root={tmp_path}", "runs=[seed99]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: runs: ['seed99'] are not runs of this study") and err.count("\n") == 1
