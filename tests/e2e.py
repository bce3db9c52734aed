"""What the end-to-end tests share: the tests' own micro preset, and running `python -m train` / `python -m analysis`
on it as a user would (subprocesses in the repository root, real files under the test's temporary directory)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from train.checkpoints import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "presets" / "micro.yaml"  # not configs/tiny.yaml: retuning that must not break tests
# the analysis preset micro runs are analysed with: the first tiny preset's (all checkpoints, sklearn probes), not the
# default's, whose checkpoint steps are the default run's
ANALYSIS_PRESET = "tiny-cue"


def micro_overrides(tmp: Path, run: str, engine: str, steps: int = 4, save_every: int = 2) -> list[str]:
    """Overrides that put a micro run (``steps`` GRPO steps, a checkpoint every ``save_every``) under ``tmp``."""
    return [
        f"output_root={tmp}",
        f"run_name={run}",
        f"base_dir={tmp}/micro-base",
        f"data.out_dir={tmp}/data",
        f"grpo.steps={steps}",
        f"save_every={save_every}",
        f"rollout.engine={engine}",
    ]


def train_cmd(args: list[str]) -> list[str]:
    """``python -m train --preset tests/presets/micro.yaml <args>`` (another ``--preset`` in ``args`` wins)."""
    return [sys.executable, "-m", "train", *([] if "--preset" in args else ["--preset", str(MICRO)]), *args]


def run_train(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """:func:`train_cmd` run to completion in the repository root, output captured."""
    return subprocess.run(train_cmd(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def assert_complete_run(run: Path, steps: int, save_every: int) -> None:
    """Every planned checkpoint loads, every step is logged once, and the Trainer's staging area is gone."""
    expected = list(range(0, steps + 1, save_every))
    assert [s for s, _ in list_checkpoints(run)] == expected
    logged = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1)), logged  # every step once, none lost or repeated
    evals = [json.loads(x)["step"] for x in (run / "eval.jsonl").read_text().splitlines()]
    assert evals == expected
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_step"] == steps and summary["checkpoints"] == expected
    from transformers import AutoModelForCausalLM, AutoTokenizer

    last = run / f"step_{steps}"
    assert AutoModelForCausalLM.from_pretrained(last).config.model_type == "qwen2"
    assert AutoTokenizer.from_pretrained(last).eos_token == "<|endoftext|>"
    assert (last / "trainer_state.json").is_file() and (last / "optimizer.pt").is_file()
    assert not (run / ".trainer").exists() or not any((run / ".trainer").glob("checkpoint-*"))


def micro_analysis(run: Path, engine: str) -> list[str]:
    """Analysis overrides sized for a micro run (short rollouts, two layers, a few flip cases)."""
    return [
        f"run={run}",
        f"rollout.engine={engine}",
        "rollout.problems=8",
        "rollout.samples=2",
        "rollout.max_new_tokens=64",
        "steering.layers=[1,2]",
        "steering.direction_layer=null",
        "steering.scale_unit=absolute",
        "steering.scales=[0.0,40.0]",
        "steering.problems=4",
        "steering.max_flip_cases=8",
        "steering.flip_new_tokens=4",
        "steering.max_new_tokens=48",
        "probe.source=all",
        "probe.min_per_class=2",
        "components.enabled=true",
    ]


def analyze(run: Path, *extra: str, engine: str = "hf") -> subprocess.CompletedProcess:
    """``python -m analysis`` on a micro run with :func:`micro_analysis` plus ``extra`` overrides."""
    return subprocess.run(
        [sys.executable, "-m", "analysis", "--preset", ANALYSIS_PRESET, *micro_analysis(run, engine), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def build_tiny_qwen(out: Path, max_positions: int = 256) -> Path:
    """A saved tiny random Qwen2 with a byte-level BPE tokenizer, both built by the same code as the tiny base:
    2 layers, hidden 128 and 4 heads / 2 KV heads (head_dim 32, the least vLLM's CPU attention takes)."""
    import torch

    from train.base import BaseConfig, build_model
    from train.base_tokenizer import build_tokenizer

    texts = ["the quick brown fox jumps over the lazy dog", "count down to reach a target number 42 with + - * /"]
    tok = build_tokenizer(texts * 4, 300)
    cfg = BaseConfig(
        hidden_size=128,
        intermediate_size=256,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=max_positions,
    )
    torch.manual_seed(0)
    build_model(cfg, tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a rendezvous or a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
