"""The analysis as a declared graph: one table says, for every stage, what it reads, what it computes, what it
writes and which report section shows it; the walker below derives each stage's cache key, its lazy model loading
and its resume from that table.

Why a table: a stage's artifact must be recomputed when anything it read changes. Written out stage by stage, each
key was a hand-made list that had to name the right upstream keys in the right order, and every new stage copied
the load-or-compute wiring around it. Here a stage names its settings (config sections or dotted fields), the
stages whose artifacts it reads and its other inputs; its key is ``stage_key(settings..., upstream keys...,
inputs..., salt)``, one formula for every stage, so a key holds exactly what the table says the stage reads.
A stage is computed only when one of its artifacts is missing or was written under another key, which is what
makes a killed run resume where it stopped; the checkpoint's model is loaded the first time a stage computes.

Two walks use the table: every checkpoint's own stages (:data:`CHECKPOINT`, :func:`analyse_checkpoint`) and the
fixed-text protocol's per-checkpoint stages (:data:`FIXED`, driven by :mod:`analysis.fixed_text.per_run`, which
also holds the run-level steps between them: the text set, the final direction and the steering scale).
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.cache import StepCache, fingerprint, read_npz, stage_key
from analysis.config import AnalysisConfig
from analysis.context import RunContext
from train.precision import inference_dtype


@dataclass(frozen=True)
class Stage:
    """One stage. ``compute`` ("module:function") is imported only when the stage must run; it takes the
    :class:`StepState` (and, for a directory artifact, the directory to fill) and returns one value per artifact."""

    name: str
    compute: str
    title: str  # the progress line: "step N: <title>"
    settings: tuple[str, ...] = ()  # config fields ("rollout", "report.top_k_tokens") whose change re-runs it
    upstream: tuple[str, ...] = ()  # stages of the same checkpoint whose artifacts it reads
    inputs: tuple[str, ...] = ()  # anything else its result depends on (:data:`INPUTS`)
    writes: tuple[str, ...] = ()  # its artifacts under step_<N>/: "x.json", "x.npz", or "x/" (a directory)
    section: str = ""  # the report section that shows it (analysis/report.py, analysis/fixed_text/sections.py)
    salt: str | None = None  # a fixed word in its key: separates its artifacts from an older format's
    when: str | None = None  # a boolean config field that turns the stage off
    read: str | None = None  # a directory artifact: "module:function" that opens it
    lazy: bool = False  # a directory made only when a later stage first asks for it


CHECKPOINT: tuple[Stage, ...] = (
    Stage("rollouts", "analysis.checkpoint_stages:compute_rollouts", "rollouts (generating)", ("rollout",),
          inputs=("checkpoint", "problems", "dtype"), writes=("rollouts.json",), section="Behaviour"),
    Stage("capture", "analysis.checkpoint_stages:compute_capture", "capture", ("capture",), ("rollouts",),
          writes=("capture/",), read="analysis.capture_files:read_capture", section="Probes"),
    Stage("probes", "analysis.checkpoint_stages:compute_probes", "probes", ("probe",), ("capture",),
          writes=("probes.json", "directions.npz"), section="Probes"),
    Stage("unembed", "analysis.checkpoint_stages:compute_unembed", "unembed",
          ("report.top_k_tokens", "report.unembed_gain"), ("probes",), writes=("unembed.json",),
          section="Unembedding"),
    Stage("steering", "analysis.checkpoint_stages:compute_steering", "steering sweep", ("steering",),
          ("probes", "rollouts", "capture"), inputs=("scale", "steering_slow_parts"), writes=("steering.json",),
          section="Steering"),
    Stage("components", "analysis.checkpoint_stages:compute_components", "components", ("components",), ("steering",),
          inputs=("components_slow_parts",), writes=("components.json",), section="Components",
          when="components.enabled"),
)  # fmt: skip
"""Each checkpoint's own stages, in the order they run (a stage reads only stages above it)."""

FIXED: tuple[Stage, ...] = (
    Stage("fixed_capture", "analysis.fixed_text.per_run:compute_fixed_capture", "fixed-text capture",
          ("fixed", "capture", "probe"), inputs=("checkpoint", "texts", "dtype"), writes=("fixed_capture/",),
          read="analysis.capture_files:read_capture", lazy=True, salt="controls", section="Fixed text"),
    Stage("fixed", "analysis.fixed_text.per_run:compute_fixed", "fixed text", ("fixed", "capture", "probe"),
          inputs=("checkpoint", "texts", "dtype"), writes=("fixed.npz", "fixed_summary.json"), salt="controls",
          section="Fixed text"),
    Stage("versus_final", "analysis.fixed_text.per_run:compute_versus_final", "versus the final direction", ("fixed",),
          ("fixed",), inputs=("final",), writes=("versus_final.json",), section="Fixed text"),
    Stage("fixed_steering", "analysis.fixed_text.per_run:compute_fixed_steering", "fixed-text steering",
          ("steering", "fixed"), ("fixed",), inputs=("final", "scale"), writes=("fixed_steering.json",),
          salt="outcomes", section="Fixed text"),
    Stage("fixed_patching", "analysis.fixed_text.per_run:compute_fixed_patching", "value patching", (), ("fixed",),
          writes=("fixed_patching.json",), salt="value_patching", section="Fixed text"),
)  # fmt: skip
"""The fixed-text protocol's per-checkpoint stages. ``fixed_capture`` shares ``fixed``'s key: the texts' activations
under the settings that read them. Between ``fixed`` and ``versus_final`` the driver makes the run-level values
(the final checkpoint's direction, the steering scale) that the later stages take as inputs."""

STAGES: tuple[Stage, ...] = CHECKPOINT + FIXED


@dataclass
class StepState:
    """One checkpoint's walk: the run's context, what the stages computed so far (``values``) and under which key,
    the run-level inputs (``given``: scale, whether this is the last checkpoint, the fixed-text set's key...), and
    the model, loaded the first time a stage computes."""

    ctx: RunContext
    step: int
    path: Path
    given: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    loaded: dict[str, Any] = field(default_factory=dict)
    say: Callable[[str], Any] | None = None

    @property
    def cfg(self) -> AnalysisConfig:
        return self.ctx.cfg

    @property
    def cache(self) -> StepCache:
        return self.ctx.cache(self.step)

    def model(self) -> tuple[Any, Any]:
        """The checkpoint's model and tokenizer, loaded once (the walk's owner releases them)."""
        from analysis.checkpoint_stages import load_model

        if "m" not in self.loaded:
            self.loaded["m"] = load_model(self.path, self.cfg.device, self.cfg.precision)
            self.cfg.check_layers(self.loaded["m"][0].config.num_hidden_layers)
        return self.loaded["m"]

    def release(self) -> None:
        from analysis.checkpoint_stages import release

        release(self.loaded)

    def tell(self, line: str) -> None:
        (self.say or self.ctx.say)(f"step {self.step}: {line}")

    def runs_slow_parts(self, section: str) -> bool:
        """Whether ``section``'s (steering's or components') slow parts run at this checkpoint: at every one
        (``slow_parts: every``) or at the last analysed one. The stage's key and the stage itself both ask here."""
        return getattr(self.cfg, section).slow_parts == "every" or bool(self.given["last"])


def problems_key(ctx: RunContext) -> str:
    """The analysed problems and prompt template, as one key."""
    n = ctx.cfg.rollout.problems
    return stage_key([(list(p.numbers), p.target) for p in ctx.problems[:n]], ctx.template)


INPUTS: dict[str, Callable[[StepState], Any]] = {
    "checkpoint": lambda s: fingerprint(s.path),  # the checkpoint's files
    "problems": lambda s: problems_key(s.ctx),
    "dtype": lambda s: inference_dtype(s.cfg.precision),  # the dtype the model computes in
    "scale": lambda s: s.given["scale"],  # the run's one steering scale
    "steering_slow_parts": lambda s: s.runs_slow_parts("steering"),
    "components_slow_parts": lambda s: s.runs_slow_parts("components"),
    "texts": lambda s: s.given["texts"],  # the fixed-text set's key
    "final": lambda s: s.given["final"],  # the last checkpoint's fixed-text key (its direction)
}
"""The inputs a stage's key can name besides settings and upstream stages."""


def setting(cfg: AnalysisConfig, name: str) -> Any:
    """A config section or dotted field: ``setting(cfg, "report.top_k_tokens")``."""
    value: Any = cfg
    for part in name.split("."):
        value = getattr(value, part)
    return value


def key_of(stage: Stage, state: StepState) -> str:
    """The stage's key: its settings, its upstream stages' keys, its inputs and its salt, in that order."""
    parts = [setting(state.cfg, n) for n in stage.settings]
    parts += [state.keys[u] for u in stage.upstream]
    parts += [INPUTS[n](state) for n in stage.inputs]
    parts += [stage.salt] if stage.salt else []
    return stage_key(*parts)


def _function(ref: str) -> Callable[..., Any]:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def run_stage(stage: Stage, state: StepState) -> Any:
    """Load the stage's artifacts if they were written under its key, else compute and write them (timed, atomic,
    marked valid last); the value lands in ``state.values[stage.name]``."""
    if stage.when and not setting(state.cfg, stage.when):
        state.values[stage.name] = None
        return None
    key = state.keys[stage.name] = key_of(stage, state)
    if stage.writes[0].endswith("/"):
        value = _directory(stage, state, key)
    else:
        value = _files(stage, state, key)
    state.values[stage.name] = value
    return value


def _directory(stage: Stage, state: StepState, key: str) -> Any:
    cache, read = state.cache, _function(stage.read) if stage.read else (lambda d: d)

    def made() -> Any:
        if not cache.valid(stage.name, key, suffix="/"):
            state.tell(stage.title)
        return read(cache.directory(stage.name, key, lambda d: _function(stage.compute)(state, d)))

    if not stage.lazy:
        return made()
    memo: list[Any] = []
    return lambda: memo[0] if memo else memo.append(made()) or memo[0]


def _files(stage: Stage, state: StepState, key: str) -> Any:
    cache = state.cache
    stems = [w.rsplit(".", 1) for w in stage.writes]
    if all(cache.valid(stem, key, suffix) for stem, suffix in stems):
        loaded = [_read(cache.dir / f"{stem}.{suffix}") for stem, suffix in stems]
        return loaded[0] if len(loaded) == 1 else tuple(loaded)
    state.tell(stage.title)
    t0 = time.perf_counter()
    value = _function(stage.compute)(state)
    cache.record(stage.name, time.perf_counter() - t0)
    values = [value] if len(stems) == 1 else list(value)
    out = []
    for (stem, suffix), v in zip(stems, values, strict=True):
        write = cache.json if suffix == "json" else cache.npz
        out.append(write(stem, key, lambda v=v: v, timed=False))
    return out[0] if len(out) == 1 else tuple(out)


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.suffix == ".json" else read_npz(path)


def run_stages(stages: tuple[Stage, ...], state: StepState) -> StepState:
    """Walk ``stages`` in order on one checkpoint."""
    for stage in stages:
        run_stage(stage, state)
    return state


def checkpoint_rollouts(ctx: RunContext, step: int, path: Path) -> tuple[list[dict[str, Any]], str]:
    """The rollouts stage alone (cached): a checkpoint's rollouts and their key (the fixed-text set reads them)."""
    state = run_stages(CHECKPOINT[:1], StepState(ctx, step, path))
    return state.values["rollouts"], state.keys["rollouts"]


def analyse_checkpoint(
    ctx: RunContext, step: int, path: Path, scale: float | None, last: bool = True, say: Any = None
) -> dict[str, Any]:
    """Run (or load) every stage of :data:`CHECKPOINT` on one checkpoint, then release its model (also when a
    stage raises); returns the step's results for the emergence stage and the report.

    ``scale`` is the run's one steering scale (calibrated by the fixed-text stage or from the preset); probes fit on
    the context's ``train`` problems and everything is scored on ``report`` problems. ``last`` marks the last
    analysed checkpoint (both stages' ``slow_parts`` run there by default)."""
    from analysis.checkpoint_stages import rollout_summary

    if scale is None:
        raise ValueError("analyse_checkpoint: the run's steering scale must be given (analysis/fixed_text/per_run.py)")
    state = StepState(ctx, step, path, given={"scale": scale, "last": last}, say=say)
    try:
        run_stages(CHECKPOINT, state)
    finally:
        state.release()
    v = state.values
    return {
        "step": step,
        "path": str(path),
        "rollouts": rollout_summary(v["rollouts"], ctx.roles),
        "sites": int(len(v["capture"]["problem"])),
        "probes": v["probes"][0],
        "unembed": v["unembed"],
        "steering": v["steering"],
        "components": v["components"],
        "computed": state.cache.computed,
    }
