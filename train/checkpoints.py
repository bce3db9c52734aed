"""Run-directory layout, atomic step checkpoints, discovery and resume.

Layout (the public contract the analysis relies on)::

    checkpoints/<run>/config.yaml          resolved TrainConfig of the run
    checkpoints/<run>/metrics.jsonl        one JSON object per logged step
    checkpoints/<run>/eval.jsonl           held-out success + verification per checkpoint
    checkpoints/<run>/step_<N>/            HF model + tokenizer (safetensors) + trainer state + state.json

The HF Trainer writes ``checkpoint-<N>`` directly in place, so a kill mid-write leaves a half directory. We let
it write into ``<run>/.trainer/`` and, once everything is on disk, add the tokenizer and ``state.json`` (last)
and rename the directory to ``step_<N>`` in one atomic step. Readers only ever see complete checkpoints:
a ``step_<N>`` without ``state.json`` cannot exist, and ``.trainer/`` leftovers are never loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tasks.atomic import write_json, write_text
from tasks.config import config_hash, dump_config, to_dict

STATE_FILE = "state.json"
STAGING = ".trainer"
_STEP_DIR = re.compile(r"step_(\d+)$")


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"step_{step}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, as (step, path), by increasing step."""
    run = Path(run_dir)
    if not run.is_dir():
        return []
    found = []
    for p in run.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def git_commit() -> str | None:
    """The current commit of the code (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def finalize(src: Path, run_dir: Path, step: int, tokenizer: Any, state: dict[str, Any]) -> Path:
    """Turn a fully written directory ``src`` into ``<run>/step_<step>``: tokenizer, state.json last, rename."""
    dest = step_dir(run_dir, step)
    if (dest / STATE_FILE).is_file():  # already finalized (e.g. the final save repeats the last step)
        shutil.rmtree(src, ignore_errors=True)
        return dest
    tokenizer.save_pretrained(src)
    write_json(src / STATE_FILE, {"step": step, "time": time.time(), **state})
    if dest.exists():  # a stale, incomplete directory of the same name
        shutil.rmtree(dest)
    os.replace(src, dest)
    return dest


RESUME_ONLY = (
    "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "global_step*", "latest", "zero_to_*.py"
)  # fmt: skip
"""What a checkpoint holds for resuming only (the Trainer's and DeepSpeed's): the analysis reads none of it."""


def prune_resume_state(run_dir: Path, keep: int) -> list[Path]:
    """Delete the resume-only files of every checkpoint before step ``keep`` (the newest, which keeps them); returns
    what was removed. A run resumes from its latest checkpoint only, so nothing a resume reads is lost."""
    removed = []
    for step, path in list_checkpoints(run_dir):
        if step >= keep:
            continue
        for pattern in RESUME_ONLY:
            for f in path.glob(pattern):
                shutil.rmtree(f) if f.is_dir() else f.unlink()
                removed.append(f)
    return removed


def manual_staging(run_dir: Path, step: int) -> Path:
    """Where a checkpoint the Trainer does not save itself (step 0) is written before :func:`finalize` renames it."""
    return run_dir / STAGING / f"manual-{step}"


class RunExists(FileExistsError):
    """The run directory exists and resuming was not asked for (never overwritten silently)."""


def config_diff(old: dict, new: dict, defaults: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between a run's saved config and the new one. A key the saved config lacks
    counts as its dataclass default (a field added by a later version of this code, whose default keeps the old
    behaviour, does not block a resume)."""
    out = []
    for k in sorted(set(old) | set(new)):
        d = defaults.get(k) if isinstance(defaults, dict) else None
        a, b = old.get(k, d), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, d if isinstance(d, dict) else {}, f"{prefix}{k}.")
        elif a != b:
            out.append(prefix + k)
    return out


def prepare_run_dir(cfg: Any, resume: bool) -> tuple[Path, tuple[int, Path] | None]:
    """Create (or reopen, with ``resume``) the run directory; returns it and the checkpoint to resume from.

    A new run refuses an existing non-empty directory; a resume refuses a directory whose config differs in
    anything but the step budget, naming the fields, so two different experiments never share a directory.
    """
    run = Path(cfg.output_root) / cfg.run_name
    existing = run / "config.yaml"
    if run.exists() and any(run.iterdir()) and not resume:
        raise RunExists(
            f"{run} already exists. Continue it with `make train RESUME=1` (or --resume), or start a new run "
            f"with run_name=<other>; delete {run} to start over."
        )
    last = None
    if resume:
        if not existing.is_file():
            raise FileNotFoundError(f"cannot resume: {existing} is missing (no run named {cfg.run_name!r} started)")
        import yaml

        old = yaml.safe_load(existing.read_text())
        new = to_dict(cfg)
        old.get("grpo", {}).pop("steps", None)
        new["grpo"].pop("steps", None)
        diff = config_diff(old, new, to_dict(type(cfg)()))
        if diff:  # TRL's own options are written under grpo: by the user, stored under grpo.trl
            diff = [d.replace("grpo.trl.", "grpo.", 1) for d in diff]
            raise ValueError(f"cannot resume {run}: its config differs in {', '.join(diff)}")
        last = latest_checkpoint(run)
    run.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run / STAGING, ignore_errors=True)  # half-written Trainer checkpoints are never loaded
    dump_config(cfg, existing)
    return run, last


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Drop records past ``max_step`` (written after the checkpoint a resume restarts from)."""
    if not path.is_file():
        return
    keep = [
        line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= max_step
    ]
    write_text(path, "".join(line + "\n" for line in keep))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_state(cfg: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """The small state.json payload: metrics, config hash, code version, and the hardware that decided the precision."""
    import torch

    from train.precision import hardware

    grpo = getattr(cfg, "grpo", None)
    device = getattr(cfg, "device", "cpu")
    on_gpu = device == "cuda" or device == "auto" and torch.cuda.is_available()
    return {
        "metrics": metrics,
        "config_hash": config_hash(cfg),
        "git_commit": git_commit(),
        "precision": {"base": cfg.base.precision, "grpo": grpo.precision} if grpo is not None else None,
        "hardware": hardware("cuda" if on_gpu else "cpu"),
    }
