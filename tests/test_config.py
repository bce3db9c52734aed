"""The shared config machinery: unknown keys, types, overrides, the resolved config on disk."""

from __future__ import annotations

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
