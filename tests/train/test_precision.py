"""train.precision: auto resolves from what PyTorch reports about this CPU; forced bf16 where it is emulated warns."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tasks.config import ConfigError
from train import precision
from train.config import load_train_config, resolve_precision


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    info = {"device": "cpu", "cpu_model": "Test CPU", "cpu_capability": "AVX2", "cpu_native_bf16": native}
    monkeypatch.setattr(precision, "hardware", lambda device="cpu": {**info, "native_bf16": native})
    monkeypatch.setattr(precision, "_ANNOUNCED", set())


def test_auto_follows_this_cpu() -> None:
    import torch

    native = torch.ops.mkldnn._is_mkldnn_bf16_supported() and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )
    assert precision.hardware()["native_bf16"] == native
    assert precision.resolve("auto") == ("bf16" if native else "fp32")
    assert precision.hardware()["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert precision.resolve("fp32") == "fp32" and precision.resolve("bf16") == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_either_kind_of_cpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], native: bool
) -> None:
    _fake_cpu(monkeypatch, native)
    assert precision.resolve("auto", "cpu", "grpo.precision") == ("bf16" if native else "fp32")
    precision.resolve("auto", "cpu", "grpo.precision")
    out = capsys.readouterr().out
    assert out.count("grpo.precision: auto ->") == 1  # printed once, with the CPU capability
    assert "AVX2" in out and ("native bf16" if native else "no native bf16") in out


def test_forced_bf16_without_native_warns_once_with_measured_slowdown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_cpu(monkeypatch, False)
    monkeypatch.setattr(precision, "bf16_slowdown", lambda: 97.0)
    assert precision.resolve("bf16", "cpu", "base.precision") == "bf16"  # it runs as asked
    precision.resolve("bf16", "cpu", "base.precision")
    err = capsys.readouterr().err
    assert err.count("WARNING base.precision=bf16") == 1 and "97x slower" in err


def test_bf16_slowdown_is_measured() -> None:
    assert precision.bf16_slowdown(n=64, repeats=1) > 0


def test_unknown_precision_is_one_line_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"grpo\.precision: expected one of \['auto', 'bf16', 'fp32'\]"):
        load_train_config("tiny", ["grpo.precision=fp16"])
    r = subprocess.run(
        [sys.executable, "-m", "train", "--dry-run", "base.precision=half"], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "base.precision" in r.stderr


def test_resolved_config_names_the_precision_and_its_base_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cpu(monkeypatch, False)
    cfg = resolve_precision(load_train_config("tiny-cue"), "cpu")
    assert (cfg.base.precision, cfg.grpo.precision) == ("fp32", "fp32")
    assert cfg.base_dir == "checkpoints/tiny-cue-base-fp32"
    forced = resolve_precision(load_train_config("tiny-cue", ["base.precision=bf16"]), "cpu")
    assert forced.base_dir == "checkpoints/tiny-cue-base-bf16" and forced.grpo.precision == "fp32"
    assert precision.inference_dtype("fp32") == "float32" and precision.inference_dtype("bf16") == "auto"


@pytest.mark.parametrize(
    ("onednn", "avx512_bf16", "amx", "native"),
    [
        (True, True, False, True),  # Zen 4, Cooper Lake: AVX512-BF16
        (True, True, True, True),  # Sapphire Rapids: AMX
        (True, False, False, False),  # Skylake-SP .. Ice Lake: oneDNN says yes, but it converts, not computes
        (False, True, True, False),  # any CPU under CPU_ISA=avx2 (ONEDNN_MAX_CPU_ISA caps oneDNN)
        (False, False, False, False),  # AVX2 only
    ],
)
def test_native_bf16_needs_the_instructions_not_only_onednn(
    onednn: bool, avx512_bf16: bool, amx: bool, native: bool
) -> None:
    assert precision.native_cpu_bf16(onednn, avx512_bf16, amx) is native
