"""``make study``: N seeds of a preset plus control runs, each analysed with the fixed-text protocol, one report.

An emergence claim from one run with a chosen seed is an anecdote. A study trains the preset with several seeds
and, with the same data, steps and compute, control runs whose reward carries no correctness signal
(``grpo.reward``: ``shuffled`` permutes the rewards within each prompt's group, ``format`` pays only for the answer
tag). Every run shares the one cached base, is analysed by ``make analyze``'s pipeline, and
:mod:`analysis.study.report` compares RL with the controls, metric by metric, with intervals.

Runs are subprocesses of ``python -m train`` / ``python -m analysis`` (exactly what ``make train`` and ``make
analyze`` run; a vLLM engine never outlives its run). Resumable: a finished run (its ``summary.json`` at the
configured step) is skipped, an interrupted one is resumed from its last checkpoint, and the analysis is cached
per stage. A directory the study did not write (no ``config.yaml``) is refused with its path, never overwritten.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tasks.config import ConfigError, dump_config, find_preset, load_config

ROOT = Path(__file__).resolve().parents[1]
PRESET_DIR = ROOT / "configs" / "study"


@dataclass(frozen=True)
class StudyConfig:
    """One study: which preset, how many seeds, which controls."""

    name: str = "tiny"  # runs go to <output_root>/study-<name>/<run>
    preset: str = "tiny"  # training preset (configs/<preset>.yaml)
    analysis_preset: str = "tiny"  # analysis preset (configs/analysis/<preset>.yaml)
    seeds: tuple[int, ...] = (1, 2, 3)  # one RL run per seed
    controls: tuple[Literal["shuffled", "format"], ...] = ("shuffled", "format")
    control_seed: int | None = None  # the controls' seed; None: the first of ``seeds``
    output_root: str = "checkpoints"
    train_args: tuple[str, ...] = ()  # key=value overrides for every training run
    analysis_args: tuple[str, ...] = ()  # key=value overrides for every analysis

    def __post_init__(self) -> None:
        if len(self.seeds) < 1:
            raise ConfigError("seeds: expected at least one seed (N >= 1), got []")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected distinct seeds, got {list(self.seeds)}")
        find_preset(self.preset, ROOT / "configs", "training preset")
        find_preset(self.analysis_preset, ROOT / "configs" / "analysis", "analysis preset")

    @property
    def directory(self) -> Path:
        return Path(self.output_root) / f"study-{self.name}"


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: ``kind`` is "rl" or the control's name."""

    name: str
    kind: str
    seed: int


def run_specs(cfg: StudyConfig) -> list[RunSpec]:
    """The RL seeds first, then the controls (same data, steps and compute; only the reward differs)."""
    cseed = cfg.control_seed if cfg.control_seed is not None else cfg.seeds[0]
    return [RunSpec(f"seed{s}", "rl", s) for s in cfg.seeds] + [RunSpec(c, c, cseed) for c in cfg.controls]


def train_overrides(cfg: StudyConfig, spec: RunSpec) -> list[str]:
    reward = "countdown" if spec.kind == "rl" else spec.kind
    return [
        *cfg.train_args,
        f"output_root={cfg.directory}",
        f"run_name={spec.name}",
        f"seed={spec.seed}",
        f"grpo.reward={reward}",
    ]


def run_state(cfg: StudyConfig, spec: RunSpec) -> str:
    """``done`` (summary.json written), ``resume`` (a started run), ``new`` (nothing there yet).

    Raises ConfigError naming the directory when it holds files but no ``config.yaml`` (not a run this study
    started): the study never writes into it."""
    run = cfg.directory / spec.name
    if not run.exists() or not any(run.iterdir()):
        return "new"
    if not (run / "config.yaml").is_file():
        raise ConfigError(
            f"{run}: a half-written run directory without config.yaml (not started by this study); move it away"
        )
    summary = run / "summary.json"
    if summary.is_file():
        try:
            json.loads(summary.read_text())
            return "done"
        except json.JSONDecodeError:
            pass
    return "resume"


def _call(module: str, args: list[str]) -> None:
    # without the launcher variables torch.distributed users (TRL's vLLM colocate mode) set in-process: each study
    # run is its own single-process launch (a multi-GPU preset launches its own processes from there)
    from train.dist import single_process_env

    env = single_process_env()
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m {module} {' '.join(args)} failed with exit status {proc.returncode}")


def run_study(cfg: StudyConfig, say: object = print) -> Path:
    """Train and analyse every run (skipping what is finished), then write the combined report; returns its path."""
    from analysis.study.report import write_report

    specs = run_specs(cfg)
    states = {s.name: run_state(cfg, s) for s in specs}  # every directory is checked before anything starts
    cfg.directory.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, cfg.directory / "study.yaml")
    for spec in specs:
        state = states[spec.name]
        say(f"study {cfg.name}: {spec.name} ({spec.kind}, seed {spec.seed}): train [{state}]")
        if state != "done":
            resume = ["--resume"] if state == "resume" else []
            _call("train", ["--preset", cfg.preset, *resume, *train_overrides(cfg, spec)])
    for spec in specs:
        say(f"study {cfg.name}: {spec.name}: analyze (cached per stage)")
        run = cfg.directory / spec.name
        _call("analysis", ["--preset", cfg.analysis_preset, f"run={run}", *cfg.analysis_args])
    return write_report(cfg.directory, [(s.name, s.kind) for s in specs])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.study", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="configs/study/<preset>.yaml or a path to a YAML file")
    parser.add_argument("overrides", nargs="*", help="study fields as key=value, e.g. seeds=[1,2] controls=[shuffled]")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(StudyConfig, find_preset(args.preset, PRESET_DIR, "study preset"), args.overrides)
        report = run_study(cfg)
    except (ConfigError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"study report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
