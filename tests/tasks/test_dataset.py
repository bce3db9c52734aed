"""Splits on disk: parquet + manifest written last, reuse, refusal to overwrite, TinyZero's hub split."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from datasets import Dataset

from tasks.config import ConfigError, load_config
from tasks.countdown import dataset as ds_mod
from tasks.countdown.__main__ import main
from tasks.countdown.dataset import (
    DataConfig,
    HubUnavailable,
    load_problems,
    load_split,
    prepare,
    tinyzero_split,
)
from tasks.countdown.reward import score

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, **kw: object) -> DataConfig:
    base = dict(train_size=300, test_size=50, operand_max=30, out_dir=str(tmp_path / "d"))
    return DataConfig(**{**base, **kw})


def test_prepare_writes_disjoint_splits_and_manifest(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    out, written = prepare(cfg, progress=False)
    assert written
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sizes"] == {"train": 300, "test": 50}
    assert manifest["seed"] == 42 and manifest["config"]["operand_max"] == 30
    train, test = load_problems(out, "train"), load_problems(out, "test")
    assert len(train) == 300 and len(test) == 50
    assert not {p.key() for p in train} & {p.key() for p in test}
    assert all(score(f"<answer>{p.solution}</answer>", p.numbers, p.target) == 1.0 for p in train + test)
    assert set(load_split(out, "train").column_names) == {"numbers", "target", "solution"}
    # the manifest is the last file written
    assert (out / "manifest.json").stat().st_mtime_ns >= max(
        (out / f"{s}.parquet").stat().st_mtime_ns for s in ("train", "test")
    )
    assert not list(out.glob(".*tmp"))


def test_prepare_reuses_same_config_and_refuses_a_different_one(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    prepare(cfg, progress=False)
    before = (Path(cfg.out_dir) / "train.parquet").stat().st_mtime_ns
    assert prepare(cfg, progress=False)[1] is False
    assert (Path(cfg.out_dir) / "train.parquet").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="differing fields: seed"):
        prepare(_cfg(tmp_path, seed=1), progress=False)


def test_interrupted_directory_is_refused_then_rebuilt(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    out, _ = prepare(cfg, progress=False)
    (out / "manifest.json").unlink()  # as if killed before the manifest landed
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        load_split(out, "train")
    assert prepare(cfg, progress=False)[1] is True
    assert len(load_problems(out, "test")) == 50


def test_modified_split_is_detected(tmp_path: Path) -> None:
    out, _ = prepare(_cfg(tmp_path), progress=False)
    (out / "test.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="does not match its manifest"):
        load_split(out, "test")


def test_cli_writes_and_reports_bad_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["train_size=20", "test_size=5", f"out_dir={out}"]) == 0
    assert (out / "manifest.json").is_file()
    assert main(["trian_size=20"]) == 2
    assert "Did you mean 'train_size'" in capsys.readouterr().err


@pytest.mark.parametrize("preset", sorted((ROOT / "configs" / "data").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_load(preset: Path) -> None:
    cfg = load_config(DataConfig, preset)
    assert cfg.test_size >= 1


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="operand_min"):
        DataConfig(operand_min=10, operand_max=5)
    with pytest.raises(ConfigError, match="source"):
        load_config(DataConfig, None, ["source=web"])
    with pytest.raises(ConfigError, match="train_size: expected an integer"):
        load_config(DataConfig, None, ["train_size=many"])


def test_tinyzero_split_on_local_standin_for_hub_download() -> None:
    # The hub dataset cannot be downloaded here; a local Dataset with its fields stands in for it.
    raw = Dataset.from_dict({"target": list(range(100)), "nums": [[i, i + 1, i + 2] for i in range(100)]})
    splits = tinyzero_split(raw, train_size=60, test_size=16)
    assert splits["train"]["target"] == list(range(60))
    assert splits["test"]["target"] == list(range(60, 76))
    assert splits["test"][0]["numbers"] == [60, 61, 62] and splits["test"][0]["solution"] == ""
    with pytest.raises(ValueError, match="fewer than"):
        tinyzero_split(raw, train_size=90, test_size=16)


def test_hub_loader_fails_fast_offline() -> None:
    if ds_mod.hub_reachable(3.0):
        pytest.skip("the hub is reachable from this machine; the offline path cannot be exercised")
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailable, match="generate problems locally"):
        ds_mod.load_hub_splits(timeout_s=2.0)
    assert time.perf_counter() - t0 < 10
