"""The declared stage graph (analysis/stages.py): the table is consistent, and the keys it derives change exactly
when something a stage reads changes, and equal the keys caches were written under before the table (except
where the table names an input the hand-written key missed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from analysis.cache import stage_key
from analysis.config import AnalysisConfig
from analysis.context import RunContext
from analysis.report import SECTIONS
from analysis.stages import CHECKPOINT, FIXED, INPUTS, STAGES, StepState, _function, key_of, setting
from tasks.countdown.generate import Problem


def test_every_stage_reads_only_what_is_declared_above_it_and_writes_its_own_artifacts() -> None:
    cfg = AnalysisConfig()
    for walk in (CHECKPOINT, FIXED):
        seen: set[str] = set()
        for st in walk:
            assert set(st.upstream) <= seen, (st.name, st.upstream, seen)  # a stage reads only stages above it
            assert set(st.inputs) <= set(INPUTS), st.inputs
            for name in st.settings + ((st.when,) if st.when else ()):
                setting(cfg, name)  # every named setting exists
            assert callable(_function(st.compute)) and (st.read is None or callable(_function(st.read)))
            assert st.writes and all(w.endswith(("/", ".json", ".npz")) for w in st.writes)
            assert st.writes[0].endswith("/") == (st.read is not None)
            seen.add(st.name)
    artifacts = [w for st in STAGES for w in st.writes]
    assert len(artifacts) == len(set(artifacts))  # one writer per artifact
    assert len({st.name for st in STAGES}) == len(STAGES)
    assert {st.section for st in STAGES} <= {name for name, _ in SECTIONS}  # each shown by a section that exists


def _state(cfg: AnalysisConfig, tmp: Path, **given) -> StepState:
    (tmp / "step_6").mkdir(parents=True, exist_ok=True)
    (tmp / "step_6" / "config.json").write_text("{}")
    ctx = RunContext(cfg, tmp / "analysis", [Problem((1, 2, 3), 6)], "base", np.array(["report"]))
    return StepState(ctx, 6, tmp / "step_6", given={"scale": 1.0, "last": True, "texts": "t", "final": "f", **given})


def _keys(cfg: AnalysisConfig, tmp: Path) -> dict[str, str]:
    state = _state(cfg, tmp)
    for walk in (CHECKPOINT, FIXED):
        for st in walk:
            state.keys[st.name] = key_of(st, state)
    return state.keys


def test_a_setting_changes_the_key_of_each_stage_that_reads_it_and_of_those_below_only(tmp_path: Path) -> None:
    cfg = AnalysisConfig()
    base = _keys(cfg, tmp_path)
    steer = _keys(dataclasses.replace(cfg, steering=dataclasses.replace(cfg.steering, scales=(0.0, 2.5))), tmp_path)
    assert {n for n in base if base[n] != steer[n]} == {"steering", "components", "fixed_steering"}
    probe = _keys(dataclasses.replace(cfg, probe=dataclasses.replace(cfg.probe, C=0.5)), tmp_path)
    assert {n for n in base if base[n] != probe[n]} == {
        "probes", "unembed", "steering", "components", "fixed_capture", "fixed", "versus_final", "fixed_steering",
        "fixed_patching",
    }  # fmt: skip
    roll = _keys(dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, samples=3)), tmp_path)
    assert {n for n in base if base[n] != roll[n]} == {
        "rollouts",
        "capture",
        "probes",
        "unembed",
        "steering",
        "components",
    }
    state = _state(cfg, tmp_path, last=False)  # not the last checkpoint: neither stage's slow parts
    for st in CHECKPOINT:
        state.keys[st.name] = key_of(st, state)
    assert state.keys["probes"] == base["probes"] and state.keys["steering"] != base["steering"]


def test_keys_are_the_ones_caches_were_written_under_before_the_table(tmp_path: Path) -> None:
    from analysis.cache import fingerprint
    from train.precision import inference_dtype

    cfg = AnalysisConfig()
    k = _keys(cfg, tmp_path)
    state = _state(cfg, tmp_path)
    problems = stage_key([([1, 2, 3], 6)], "base")
    fp, dtype = fingerprint(state.path), inference_dtype(cfg.precision)
    assert k["rollouts"] == stage_key(cfg.rollout, fp, problems, dtype)
    assert k["capture"] == stage_key(cfg.capture, k["rollouts"])
    # steering reads the capture too (its scale is in residual norms there): a key the hand-written one missed
    assert k["steering"] == stage_key(cfg.steering, k["probes"], k["rollouts"], k["capture"], 1.0, True)
    assert k["fixed"] == k["fixed_capture"] == stage_key(cfg.fixed, cfg.capture, cfg.probe, fp, "t", dtype, "controls")
    assert k["fixed_steering"] == stage_key(cfg.steering, cfg.fixed, k["fixed"], "f", 1.0, "outcomes")
    assert k["fixed_patching"] == stage_key(k["fixed"], "value_patching")
