"""``make study``: N seeds of a preset plus control runs, each analysed with the fixed-text protocol, one report.

An emergence claim from one run with a chosen seed is an anecdote. A study trains the preset with several seeds
and, with the same data, steps and compute, control runs whose reward carries no correctness signal
(``grpo.reward``: ``shuffled`` permutes the rewards within each prompt's group, ``format`` pays only for the answer
tag). Each control is an arm of its own runs, one per ``control_seeds`` entry (``shuffled-s101``, ...): the
comparison is between two samples of runs, so a control needs its own spread, and its seeds are distinct from the
RL seeds because a control sharing an RL run's seed shares its data order and sampling (the two would not be
independent draws). At least as many control seeds as RL seeds are required: the exact test
:mod:`analysis.study.combined_report` uses is only as fine as the smaller arm allows.

The analysis config is frozen before any run starts: resolved once from ``analysis_preset`` + ``analysis_args``,
written to ``<study>/analysis.frozen.yaml`` with its sha256 in ``<study>/frozen.json``. A later invocation
(resume) whose resolved analysis config differs is refused with the first differing field, before anything is
trained: a report whose metrics or thresholds were chosen after seeing some runs is not a test of them.

Every run shares the one cached base and is analysed by ``make analyze``'s pipeline;
:mod:`analysis.study.combined_report` compares RL with each control arm, metric by metric (exact permutation test over
runs, Holm's correction over the table, a descriptive bootstrap interval). Runs are subprocesses of ``python -m train``
/ ``python -m analysis`` (exactly what ``make train`` and ``make analyze`` run; a vLLM engine never outlives its run),
``jobs`` of them at once: each run is trained then analysed as one chain, and the chains share the cores
(``OMP_NUM_THREADS`` = cores // jobs each). Why: most of a tiny run's time is single-threaded Python, numpy and small
matrix products that a second thread barely speeds up, so two one-thread runs side by side finish the study sooner than
one two-thread run after another. With ``jobs`` > 1 each run's output goes to ``<study>/logs/<run>.log``. Resumable: a
finished run (its ``summary.json`` at the configured step) is skipped, an interrupted one is resumed from its last
checkpoint, and the analysis is cached per stage. A directory the study did not write (no ``config.yaml``) is refused
with its path, never overwritten.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from analysis.study.runs import (
    PRESET_DIR,
    ROOT,
    RunSpec,
    StudyConfig,
    freeze_analysis_config,
    run_specs,
    run_state,
    train_overrides,
)
from tasks.config import ConfigError, dump_config, find_preset, load_config


def _free_port() -> int:
    """A TCP port the OS reports free now (bound to port 0 and released)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _call(module: str, args: list[str], threads: int | None = None, log: Path | None = None) -> None:
    """Run ``python -m module args`` to completion; with ``threads``, its torch/OpenMP thread count; with ``log``,
    its output appended there instead of this terminal. Raises RuntimeError naming the command (and the log)."""
    # without the launcher variables torch.distributed users (TRL's vLLM colocate mode) set in-process: each study
    # run is its own single-process launch (a multi-GPU preset launches its own processes from there)
    from train.dist import single_process_env

    env = single_process_env()
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if log is not None:
        # runs side by side: each its own rendezvous port (TRL's colocated vLLM tries 29500 first in every process,
        # so two runs starting together both take it and one fails with EADDRINUSE)
        env["MASTER_PORT"] = str(_free_port())
    cmd = [sys.executable, "-m", module, *args]
    if log is None:
        proc = subprocess.run(cmd, cwd=ROOT, env=env)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            out.write(f"\n$ python -m {module} {' '.join(args)}\n")
            out.flush()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        where = f" (output: {log})" if log is not None else ""
        raise RuntimeError(f"python -m {module} {' '.join(args)} failed with exit status {proc.returncode}{where}")


def _run_chain(cfg: StudyConfig, spec: RunSpec, state: str, say: Any) -> None:
    """Train one run (unless done; resumed if started), then analyse it (cached per stage)."""
    parallel = cfg.jobs > 1
    threads = max(1, (os.cpu_count() or 1) // cfg.jobs) if parallel else None
    log = cfg.directory / "logs" / f"{spec.name}.log" if parallel else None
    start = time.monotonic()
    say(
        f"study {cfg.name}: {spec.name} ({spec.kind}, seed {spec.seed}): train [{state}]"
        + (f" -> {log}" if log else "")
    )
    if state != "done":
        resume = ["--resume"] if state == "resume" else []
        _call("train", ["--preset", cfg.preset, *resume, *train_overrides(cfg, spec)], threads, log)
    say(f"study {cfg.name}: {spec.name}: analyze (cached per stage)")
    run = cfg.directory / spec.name
    _call("analysis", ["--preset", cfg.analysis_preset, f"run={run}", *cfg.analysis_args], threads, log)
    say(f"study {cfg.name}: {spec.name}: finished in {(time.monotonic() - start) / 60:.1f} min")


def run_study(cfg: StudyConfig, say: Any = print) -> Path:
    """Check every run directory and freeze (or check) the analysis config, then train and analyse every run
    (``cfg.jobs`` chains at once, skipping what is finished), then write the combined report; returns its path.
    A failed run does not stop the others; the study then raises RuntimeError naming each failure (run the same
    command again to resume)."""
    from concurrent.futures import ThreadPoolExecutor

    from analysis.study.combined_report import write_report

    everything = run_specs(cfg)
    specs = [s for s in everything if not cfg.runs or s.name in cfg.runs]
    states = {s.name: run_state(cfg, s) for s in specs}  # every directory is checked before anything starts
    frozen = freeze_analysis_config(cfg, runs_started=any(v != "new" for v in states.values()))
    dump_config(cfg, cfg.directory / "study.yaml")
    if cfg.jobs > 1 and any(v != "done" for v in states.values()):
        # the runs share one cached base: build it (or find it) once, before two runs could both start building it
        say(f"study {cfg.name}: the shared base (built once, or reused)")
        _call("train", ["--base-only", "--preset", cfg.preset, *cfg.train_args])
    lock = threading.Lock()

    def said(line: str) -> None:  # one whole line at a time from the chains' threads
        with lock:
            say(line)

    with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
        futures = [(s, pool.submit(_run_chain, cfg, s, states[s.name], said)) for s in specs]
        failed = [f"{s.name}: {f.exception()}" for s, f in futures if f.exception() is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(specs)} runs failed; " + "; ".join(failed))
    if not cfg.report:
        return cfg.directory
    return write_report(cfg.directory, [(s.name, s.kind) for s in everything], frozen, cfg.primary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.study", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="configs/study/<preset>.yaml or a path to a YAML file")
    example = "seeds=[1,2,3,4] control_seeds=[101,102,103,104]"
    parser.add_argument("overrides", nargs="*", help=f"study fields as key=value, e.g. {example}")
    parser.add_argument("--dry-run", action="store_true", help="print what would run (or be submitted) and exit")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(StudyConfig, find_preset(args.preset, PRESET_DIR, "study preset"), args.overrides)
        if cfg.submit == "slurm":
            from analysis.study.slurm import submit_study

            submit_study(cfg, args.preset, args.overrides, args.dry_run)
            return 0
        if args.dry_run:
            for s in run_specs(cfg):
                if not cfg.runs or s.name in cfg.runs:
                    print(f"{s.name}: {s.kind}, seed {s.seed}, {run_state(cfg, s)}")
            return 0
        report = run_study(cfg)
    except (ConfigError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"study report: {report}" if cfg.report else f"study runs done: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
