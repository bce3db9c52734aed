"""A study's runs and its frozen analysis config: the preset's schema (:class:`StudyConfig`), the runs it names
(:class:`RunSpec`, :func:`run_specs`), each run's state on disk (:func:`run_state`), and the analysis config frozen
before the first run (:func:`freeze_analysis_config`).

Why apart from the driver: the local driver (analysis/study/driver.py) and the Slurm submitter
(analysis/study/slurm.py) both read these; the driver hands a study to the submitter, so what both need sits below
both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tasks.config import ConfigError, dump_config, find_preset, to_dict

ROOT = Path(__file__).resolve().parents[2]
PRESET_DIR = ROOT / "configs" / "study"
FROZEN_YAML = "analysis.frozen.yaml"  # the analysis config frozen before the study's first run
FROZEN_JSON = "frozen.json"  # its sha256, when it was frozen, whether any run had started by then


@dataclass(frozen=True)
class StudyConfig:
    """One study: which preset, which RL seeds, which controls and their seeds."""

    name: str = "tiny"  # runs go to <output_root>/study-<name>/<run>
    preset: str = "tiny"  # training preset (configs/<preset>.yaml)
    analysis_preset: str = "tiny"  # analysis preset (configs/analysis/<preset>.yaml)
    seeds: tuple[int, ...] = (1, 2, 3)  # one RL run per seed
    controls: tuple[Literal["shuffled", "format"], ...] = ("shuffled",)
    # one run of every control per seed; distinct from ``seeds``, at least as many
    control_seeds: tuple[int, ...] = (101, 102, 103)
    output_root: str = "checkpoints"
    train_args: tuple[str, ...] = ()  # key=value overrides for every training run
    analysis_args: tuple[str, ...] = ()  # key=value overrides for every analysis
    # the one outcome the study tests at its own p, declared before the runs (a metric of
    # analysis/study/combined_report.py); everything else is a secondary outcome, Holm-corrected over the table
    primary: str = "completions with verdict lines"
    jobs: int = 1  # runs trained and analysed at once, sharing the cores (each logs to <study>/logs/<run>.log)
    # local: every run here; slurm: one Slurm job per run and one for the report (analysis/study/slurm.py)
    submit: Literal["local", "slurm"] = "local"
    slurm_args: tuple[str, ...] = ()  # sbatch options for every job: partition, GPUs, time limit
    runs: tuple[str, ...] = ()  # only these runs (by name, e.g. seed5); empty: all (what a Slurm job is given)
    report: bool = True  # write the combined report once the runs are done (a Slurm run job does not)

    def __post_init__(self) -> None:
        from analysis.study.metrics import METRICS

        if self.primary not in METRICS:
            raise ConfigError(f"primary: {self.primary!r} is not a study metric; expected one of {list(METRICS)}")
        if self.jobs < 1:
            raise ConfigError(f"jobs: expected a number of runs at once >= 1, got {self.jobs}")
        if len(self.seeds) < 1:
            raise ConfigError("seeds: expected at least one seed (N >= 1), got []")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected distinct seeds, got {list(self.seeds)}")
        cs = self.control_seeds
        if len(set(cs)) != len(cs):
            raise ConfigError(f"control_seeds: expected distinct seeds, got {list(cs)}")
        if len(cs) < len(self.seeds):
            raise ConfigError(
                f"control_seeds: {len(cs)} seeds, fewer than the {len(self.seeds)} RL seeds (seeds); give at least "
                "as many"
            )
        shared = [s for s in cs if s in self.seeds]
        if shared:
            raise ConfigError(
                f"control_seeds: {shared} also in the RL seeds (seeds) {list(self.seeds)}; use distinct seeds: a "
                "control sharing an RL run's seed shares its data order and sampling"
            )
        unknown = sorted(set(self.runs) - {s.name for s in run_specs(self)})
        if unknown:
            raise ConfigError(f"runs: {unknown} are not runs of this study: {[s.name for s in run_specs(self)]}")
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
    """The RL seeds first, then each control's runs, one per control seed (same data, steps and compute; only the
    reward and the seed differ)."""
    rl = [RunSpec(f"seed{s}", "rl", s) for s in cfg.seeds]
    return rl + [RunSpec(f"{c}-s{s}", c, s) for c in cfg.controls for s in cfg.control_seeds]


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


_ABSENT = object()


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value of a nested dict (lists and empty sections are leaves)."""
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def _show(v: Any) -> str:
    if v is _ABSENT:
        return "(absent)"
    return v if isinstance(v, str) else json.dumps(v)


def first_difference(frozen: dict[str, Any], now: dict[str, Any]) -> str:
    """``"steering.scale 0.5 -> 0.7"``: the first field (in the current config's order) whose value differs."""
    a, b = _flat(frozen), _flat(now)
    for key in [*b, *(k for k in a if k not in b)]:
        x, y = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if x != y:
            return f"{key} {_show(x)} -> {_show(y)}"
    return "the YAML text (same values)"


def freeze_analysis_config(cfg: StudyConfig, runs_started: bool = False) -> dict[str, Any]:
    """Resolve the study's analysis config and freeze it, or check it against the frozen one.

    First invocation: writes ``<study>/analysis.frozen.yaml`` (``tasks.config.dump_config``) and ``frozen.json``
    (sha256 of that YAML, ISO time, whether any run had already started). Later invocations: the resolved config's
    hash must match, or a ConfigError names the first differing field. Returns frozen.json's content plus
    ``unchanged: true``. Raises ConfigError for an analysis override the config rejects, before anything runs."""
    import yaml

    from analysis.config import load_analysis_config

    acfg = load_analysis_config(cfg.analysis_preset, cfg.analysis_args)
    resolved = to_dict(acfg)
    # the text dump_config writes (tested: the frozen file's sha256 is the recorded hash)
    digest = hashlib.sha256(yaml.safe_dump(resolved, sort_keys=False).encode()).hexdigest()
    frozen_yaml, frozen_json = cfg.directory / FROZEN_YAML, cfg.directory / FROZEN_JSON
    if frozen_yaml.is_file():
        text = frozen_yaml.read_text()
        if hashlib.sha256(text.encode()).hexdigest() != digest:
            diff = first_difference(yaml.safe_load(text) or {}, resolved)
            raise ConfigError(
                f"analysis config changed since the study's runs started: {diff} (frozen in {frozen_yaml}); "
                "restore it or start a new study name"
            )
        old = json.loads(frozen_json.read_text()) if frozen_json.is_file() else {}
        info = {
            "analysis_config_hash": digest,
            "analysis_config_frozen_at": old.get("analysis_config_frozen_at"),
            "frozen_before_runs": bool(old.get("frozen_before_runs", False)),
        }
    else:
        from tasks.atomic import write_text

        cfg.directory.mkdir(parents=True, exist_ok=True)
        dump_config(acfg, frozen_yaml)
        info = {
            "analysis_config_hash": digest,
            "analysis_config_frozen_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "frozen_before_runs": not runs_started,
        }
        write_text(frozen_json, json.dumps({**info, "path": FROZEN_YAML}, indent=1) + "\n")
    return {**info, "path": str(frozen_yaml), "unchanged": True}
