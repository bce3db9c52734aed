"""Resource estimates (analysis/resources.py) and `python -m analysis --dry-run`, which prints them and exits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.config import load_analysis_config
from analysis.resources import QWEN25, Shape, estimate, preset_shape, run_shape
from tests.e2e import ROOT

RATES = {"forward_flops": 1e11, "newton_unit_s": 1e-10, "lbfgs_unit_s": 1e-8}


@pytest.mark.parametrize(("name", "billions"), [("Qwen/Qwen2.5-0.5B", 0.494), ("Qwen/Qwen2.5-1.5B", 1.544),
                                                ("Qwen/Qwen2.5-3B", 3.086)])  # fmt: skip
def test_parameter_counts_match_the_hub_models(name: str, billions: float) -> None:
    assert abs(Shape(name=name, **QWEN25[name]).params() / 1e9 - billions) < 0.01 * billions


def test_estimates_count_bytes_from_the_config() -> None:
    cfg = load_analysis_config("qwen2.5-3b")
    shape = preset_shape("qwen2.5-3b")
    assert shape is not None and shape.name == "Qwen/Qwen2.5-3B" and shape.layers == 36
    e = estimate(shape, cfg, RATES, 12)
    assert e["sites"] == 600 * 12
    assert e["capture_disk_bytes"] == 600 * 12 * 3 * 37 * 2048 * 2  # sites x kinds x (layers + 1) x d x float16
    assert e["host_capture_bytes"] == 8 * 12 * 3 * 37 * 2048 * 6  # one batch, not the capture
    assert e["host_capture_bytes"] < e["capture_disk_bytes"] / 20
    assert e["gpu_bytes"] == pytest.approx(0.8 * 139 * 2**30)  # vLLM's share dominates the HF stages
    twice = estimate(shape, load_analysis_config("qwen2.5-3b", ["rollout.problems=400"]), RATES, 12)
    assert twice["capture_disk_bytes"] == 2 * e["capture_disk_bytes"] and twice["host_capture_bytes"] == e[
        "host_capture_bytes"]  # fmt: skip


def test_run_shape_reads_the_run_checkpoint(tmp_path: Path, digit_dir: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(digit_dir, run / "step_0")
    (run / "step_0" / "state.json").write_text("{}")  # what marks a checkpoint complete (train/checkpoints.py)
    shape, source = run_shape(load_analysis_config("tiny", [f"run={run}"]), "tiny")
    assert source.endswith("step_0/config.json") and (shape.hidden, shape.layers) == (64, 3) and shape.dtype_bytes == 4


@pytest.mark.slow
def test_dry_run_prints_the_table_and_exits_0(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "--preset", "qwen2.5-3b", "--dry-run", f"output_root={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Qwen/Qwen2.5-3B" in out and "training preset configs/qwen2.5-3b.yaml" in out
    assert "| model |" in out and "GFLOP/s" in out and "cpu capability" in out
    assert not any(tmp_path.iterdir())  # nothing was analysed
