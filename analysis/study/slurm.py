"""``make study ARGS="submit=slurm"``: a study that outgrows one machine, one Slurm job per run and one for the report.

Each run (an RL seed or a control seed) becomes ``sbatch --wrap "python -m analysis.study ... runs=[<run>]
report=false"``: the same driver, trained and analysed on whatever node Slurm gives it, resuming from its last
checkpoint if an earlier job was killed. The combined report is one more job that waits for all of them
(``--dependency=afterok``) and only reads what they wrote. Running the same command again resubmits exactly the
runs that are neither finished nor already queued or running (``squeue``), then a new report job: a killed or
failed job is redone by repeating the command. ``DRY_RUN=1`` prints the submissions and submits nothing.

The analysis config is frozen before the first submission, as for a local study, so every job checks the same
hash. ``slurm_args`` (the study preset) carries the site's options: partition, GPUs, time limit.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from typing import Any

from analysis.study.runs import RunSpec, StudyConfig, freeze_analysis_config, run_specs, run_state
from tasks.config import ConfigError


def job_name(cfg: StudyConfig, run: str) -> str:
    """The Slurm job name of one run (how a rerun finds it queued)."""
    return f"study-{cfg.name}-{run}"


def queued(names: list[str]) -> dict[str, str]:
    """Which of these job names the user has queued or running (``squeue``, one call), with their job ids: a
    rerun skips them and the new report job waits for them too."""
    out = subprocess.run(
        ["squeue", "--me", "--noheader", "--format=%i %j"], capture_output=True, text=True, timeout=60, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"squeue failed ({out.stderr.strip() or out.returncode}); is Slurm reachable from here?")
    pairs = (line.split(None, 1) for line in out.stdout.splitlines() if len(line.split(None, 1)) == 2)
    listed = {name.strip(): job for job, name in pairs}
    return {n: listed[n] for n in names if n in listed}


def _driver_cmd(preset: str, overrides: list[str]) -> str:
    return shlex.join([sys.executable, "-m", "analysis.study", "--preset", preset, *overrides])


def submissions(cfg: StudyConfig, preset: str, overrides: list[str], todo: list[RunSpec]) -> list[list[str]]:
    """The sbatch commands: one per run in ``todo``, then the report job (its dependency filled in at submit
    time: ``{ids}`` stands for the runs' job ids)."""
    logs = cfg.directory / "logs"
    overrides = [o for o in overrides if not o.startswith("submit=")]  # each job runs its part locally
    cmds = []
    for spec in todo:
        wrap = _driver_cmd(preset, [*overrides, "submit=local", f"runs=[{spec.name}]", "report=false"])
        cmds.append(
            [
                "sbatch", "--parsable", f"--job-name={job_name(cfg, spec.name)}",
                f"--output={logs / (spec.name + '.slurm.log')}", *cfg.slurm_args, f"--wrap={wrap}",
            ]
        )  # fmt: skip
    report = _driver_cmd(preset, [*overrides, "submit=local"])
    cmds.append(
        [
            "sbatch", "--parsable", f"--job-name={job_name(cfg, 'report')}", "--dependency=afterok:{ids}",
            f"--output={logs / 'report.slurm.log'}", *cfg.slurm_args, f"--wrap={report}",
        ]
    )  # fmt: skip
    return cmds


def submit_study(cfg: StudyConfig, preset: str, overrides: list[str], dry_run: bool, say: Any = print) -> list[str]:
    """Submit every unfinished run not already in the queue, then the report job; returns the job ids (or, in a
    dry run, prints the commands and returns nothing)."""
    specs = run_specs(cfg)
    states = {s.name: run_state(cfg, s) for s in specs}  # every directory checked before anything is submitted
    if not dry_run and shutil.which("sbatch") is None:
        raise ConfigError("submit: slurm, but no sbatch on PATH; run on a Slurm login node, or use submit=local")
    in_queue = {} if dry_run else queued([job_name(cfg, s.name) for s in specs])
    todo = [s for s in specs if states[s.name] != "done" and job_name(cfg, s.name) not in in_queue]
    for s in specs:
        if job_name(cfg, s.name) in in_queue:
            say(f"study {cfg.name}: {s.name} already queued or running: not resubmitted")
    cmds = submissions(cfg, preset, overrides, todo)
    if dry_run:
        for c in cmds:
            say(shlex.join(c))
        say("({ids}: the job ids sbatch gives the runs above, and any of them already queued, joined by ':')")
        return []
    freeze_analysis_config(cfg, runs_started=any(v != "new" for v in states.values()))
    (cfg.directory / "logs").mkdir(parents=True, exist_ok=True)
    ids = [_sbatch(c) for c in cmds[:-1]]
    waits = ids + sorted(in_queue.values())
    last = [a.replace("{ids}", ":".join(waits)) for a in cmds[-1]]
    if not waits:
        last = [a for a in last if not a.startswith("--dependency")]
    ids.append(_sbatch(last))
    say(f"study {cfg.name}: submitted {len(ids) - 1} run(s) and the report job {ids[-1]} ({cfg.directory})")
    return ids


def _sbatch(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[:4])} ... failed: {out.stderr.strip() or out.returncode}")
    return out.stdout.strip().split(";")[0]
