"""The shared config machinery: unknown keys, types, overrides, the resolved config on disk."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tasks.config import ConfigError, config_hash, dump_config, load_config


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-4
    layers: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Outer:
    name: str = "run"
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("steps: 20\ninner:\n  lr: 1\n  layers: [3, 4]\n")
    cfg = load_config(Outer, p, ["inner.lr=0.5", "limit=7", "mode=b"])
    assert cfg == Outer(steps=20, mode="b", limit=7, inner=Inner(lr=0.5, layers=(3, 4)))
    assert isinstance(cfg.inner.lr, float)
    assert load_config(Outer, None, ["limit=null"]).limit is None
    assert load_config(Outer, None, ["inner.lr=3e-4"]).inner.lr == 3e-4  # YAML 1.1 leaves "3e-4" a string


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stesp=3"], "unknown key 'stesp' for Outer. Did you mean 'steps'"),
        (["inner.lrr=3"], "unknown key 'inner.lrr' for Inner. Did you mean 'inner.lr'"),
        (["steps=3.5"], "steps: expected an integer"),
        (["steps=true"], "steps: expected an integer"),
        (["mode=c"], "mode: expected one of ['a', 'b']"),
        (["inner.layers=3"], "inner.layers: expected a list"),
        (["inner.layers=[1, x]"], "inner.layers[1]: expected an integer"),
        (["inner=5"], "inner: expected a mapping"),
        (["steps"], "expected key=value"),
        (["inner.lr=fast"], "inner.lr: expected a number, got 'fast'"),
    ],
)
def test_errors_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(Outer, None, overrides)


def test_missing_or_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(Outer, bad)


def test_dump_round_trip_and_hash(tmp_path: Path) -> None:
    cfg = load_config(Outer, None, ["inner.layers=[5]"])
    dump_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(Outer, tmp_path / "resolved.yaml") == cfg
    assert config_hash(cfg) == config_hash(load_config(Outer, tmp_path / "resolved.yaml"))
    assert config_hash(cfg) != config_hash(Outer())


def test_extends_merges_sections_and_replaces_lists_to_any_depth(tmp_path: Path) -> None:
    (tmp_path / "grand.yaml").write_text("name: grand\nsteps: 5\ninner:\n  lr: 0.5\n  layers: [7, 8, 9]\n")
    (tmp_path / "parent.yaml").write_text("extends: grand\nsteps: 6\ninner:\n  lr: 0.25\n")
    (tmp_path / "child.yaml").write_text("extends: parent\nname: child\ninner:\n  layers: [1]\n")
    cfg = load_config(Outer, tmp_path / "child.yaml", ["inner.lr=0.125"])
    assert cfg == Outer(name="child", steps=6, inner=Inner(lr=0.125, layers=(1,)))
    assert load_config(Outer, tmp_path / "parent.yaml") == Outer(name="grand", steps=6, inner=Inner(0.25, (7, 8, 9)))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": "extends: b\n", "b.yaml": "extends: a\n"}, r"extends forms a cycle \(a.yaml -> b.yaml -> a.yaml\)"),
        ({"a.yaml": "extends: a\n"}, "extends forms a cycle"),
        ({"a.yaml": "extends: nowhere\n"}, r"a.yaml: extends 'nowhere' not found: expected one of \['a'\]"),
        ({"a.yaml": "extends: [b]\n"}, "extends: expected a preset name"),
        ({"a.yaml": "extends: b\nstepz: 3\n", "b.yaml": "steps: 2\n"}, "unknown key 'stepz'.*Did you mean 'steps'"),
    ],
)
def test_bad_extends_is_one_clear_error(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, tmp_path / "a.yaml")


def test_presets_that_extend_resolve_as_their_parent_plus_their_own_keys() -> None:
    from tasks.config import read_preset
    from train.config import load_train_config

    root = Path(__file__).parents[1] / "configs"
    emerge, tiny = load_train_config("tiny-emerge"), load_train_config("tiny-cue")
    assert read_preset(root / "tiny-emerge.yaml")["grpo"] == read_preset(root / "tiny-cue.yaml")["grpo"]
    assert (emerge.grpo, emerge.data, emerge.eval) == (tiny.grpo, tiny.data, tiny.eval)
    assert emerge.base.trace.verdict_rate == 0.15 and tiny.base.trace.verdict_rate == 1.0
    big, small = load_train_config("qwen2.5-3b"), load_train_config("qwen2.5-0.5b")
    assert big.grpo == dataclasses.replace(small.grpo, gradient_accumulation_steps=16)  # 2 GPUs x 16 x 16 = 512
    assert big.launch.accelerate_config.endswith("zero3.yaml") and big.rollout.vllm_mode == "colocate"
    assert load_train_config("qwen2.5-1.5b").launch == small.launch  # one GPU, as the 0.5B


def test_every_preset_resolves_as_recorded() -> None:
    """Each preset resolves to the config recorded in tests/presets/resolved.json (a preset added, removed or changed
    fails here until the snapshot is rewritten on purpose: ``python -m tests.resolved_presets --write``)."""
    from tests.resolved_presets import SNAPSHOT, differences, resolved_presets

    recorded, now = json.loads(SNAPSHOT.read_text()), resolved_presets()
    assert sorted(now) == sorted(recorded), "presets added or removed: rewrite the snapshot"
    changed = {name: differences(recorded[name], now[name]) for name in now}
    assert not any(changed.values()), {k: v for k, v in changed.items() if v}
    assert now["train/tiny"]["base"]["search"] is not None and now["train/tiny-cue"]["base"]["search"] is None
