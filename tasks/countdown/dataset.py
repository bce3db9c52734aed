"""Countdown train/test splits on disk: generated offline, or TinyZero's split of the hub dataset.

A split directory holds ``train.parquet``, ``test.parquet`` (``datasets.Dataset`` with columns ``numbers``,
``target``, ``solution``) and ``manifest.json``. The manifest (source, seed, config, sizes, sha256 of each file)
is written last, after both parquet files were renamed into place, so its presence means the directory is
complete; readers refuse a directory without one. ``datasets`` is imported lazily so that the rest of
``tasks`` stays importable with nothing but the standard library and PyYAML.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from tasks.atomic import atomic_path, write_json
from tasks.config import ConfigError, config_hash, to_dict
from tasks.countdown.generate import GenerationError, Problem, ProblemSpec, check_spec, generate_problems

HUB_DATASET = "Jiayi-Pan/Countdown-Tasks-3to4"
TINYZERO_TRAIN_SIZE = 327_680
TINYZERO_TEST_SIZE = 1_024
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataConfig:
    """The data stage: where problems come from and where the splits are written."""

    source: Literal["generate", "hub"] = "generate"
    seed: int = 42
    num_operands: tuple[int, ...] = (3, 4)
    operand_min: int = 1
    operand_max: int = 99
    target_min: int = 1
    target_max: int | None = 100
    integer_steps: bool = True
    operators: tuple[str, ...] = ("+", "-", "*", "/")
    train_size: int = TINYZERO_TRAIN_SIZE
    test_size: int = TINYZERO_TEST_SIZE
    hub_name: str = HUB_DATASET
    hub_timeout_s: float = 5.0
    out_dir: str = "checkpoints/data/countdown"

    def __post_init__(self) -> None:
        if self.train_size < 0 or self.test_size < 1:
            raise ConfigError(
                f"train_size/test_size: expected train_size >= 0 and test_size >= 1, "
                f"got {self.train_size}/{self.test_size}"
            )
        if self.hub_timeout_s <= 0:
            raise ConfigError(f"hub_timeout_s: expected a positive number of seconds, got {self.hub_timeout_s}")
        try:
            check_spec(self.spec())
        except GenerationError as e:
            raise ConfigError(str(e)) from None

    def spec(self) -> ProblemSpec:
        """The problem distribution this config asks for."""
        return ProblemSpec(
            num_operands=self.num_operands,
            operand_min=self.operand_min,
            operand_max=self.operand_max,
            target_min=self.target_min,
            target_max=self.target_max,
            integer_steps=self.integer_steps,
            operators=self.operators,
        )


class HubUnavailable(RuntimeError):
    """The Hugging Face hub cannot be reached (offline machine); use the generator instead."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rows(problems: list[Problem]) -> dict[str, list[Any]]:
    return {
        "numbers": [list(p.numbers) for p in problems],
        "target": [p.target for p in problems],
        "solution": [p.solution for p in problems],
    }


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete split directory, or None when there is none (absent or interrupted)."""
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_splits(splits: dict[str, Any], out_dir: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``datasets.Dataset`` splits as parquet (each atomically), then the manifest, last."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = out / "manifest.json"
    if stale.exists():
        stale.unlink()  # the directory is incomplete from here until the new manifest lands
    manifest = dict(manifest, sizes={}, sha256={})
    for name, ds in splits.items():
        final = out / f"{name}.parquet"
        with atomic_path(final) as tmp:
            ds.to_parquet(str(tmp))
        manifest["sizes"][name] = len(ds)
        manifest["sha256"][name] = _sha256(final)
    write_json(out / "manifest.json", manifest)
    return manifest


def build_splits(cfg: DataConfig, progress: bool = True) -> dict[str, Any]:
    """Make the splits ``cfg`` describes (generate, or download + TinyZero split) as ``datasets.Dataset``s."""
    from datasets import Dataset

    if cfg.source == "hub":
        return load_hub_splits(cfg.hub_name, cfg.train_size, cfg.test_size, cfg.hub_timeout_s)
    problems = generate_problems(cfg.spec(), cfg.train_size + cfg.test_size, cfg.seed, progress=progress)
    return {
        "train": Dataset.from_dict(_rows(problems[: cfg.train_size])),
        "test": Dataset.from_dict(_rows(problems[cfg.train_size :])),
    }


def prepare(cfg: DataConfig, progress: bool = True) -> tuple[Path, bool]:
    """Make sure ``cfg.out_dir`` holds the splits for ``cfg``; returns (dir, whether anything was written).

    A complete directory made from the same config is reused; one made from a different config is never
    overwritten silently: the error names the fields that differ.
    """
    out = Path(cfg.out_dir)
    existing = read_manifest(out)
    if existing is not None:
        if existing.get("config_hash") == config_hash(cfg):
            return out, False
        old = existing.get("config", {})
        new = to_dict(cfg)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise FileExistsError(
            f"{out} already holds splits made from a different config (differing fields: {', '.join(diff)}). "
            f"Choose another out_dir (out_dir=...) or delete {out} to regenerate."
        )
    splits = build_splits(cfg, progress=progress)
    manifest = {
        "source": cfg.source,
        "seed": cfg.seed,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
    }
    write_splits(splits, out, manifest)
    return out, True


def load_split(out_dir: str | Path, split: str) -> Any:
    """One split as a ``datasets.Dataset``; refuses incomplete directories and files that changed on disk."""
    from datasets import Dataset

    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    out = Path(out_dir)
    manifest = read_manifest(out)
    if manifest is None:
        raise FileNotFoundError(
            f"{out}/manifest.json is missing: the splits were never written or their writing was interrupted. "
            "Run `make data` (or python -m tasks.countdown) to (re)create them."
        )
    path = out / f"{split}.parquet"
    if not path.is_file() or _sha256(path) != manifest["sha256"][split]:
        raise ValueError(f"{path} does not match its manifest (missing or modified); delete {out} and regenerate")
    return Dataset.from_parquet(str(path))


def load_problems(out_dir: str | Path, split: str) -> list[Problem]:
    """One split as a list of :class:`Problem` (plain Python, for rollouts and analysis)."""
    ds = load_split(out_dir, split)
    return [Problem(tuple(r["numbers"]), int(r["target"]), r["solution"] or "") for r in ds]


def draw_report_problems(cfg: DataConfig, count: int, seed: int, exclude: Iterable[Problem]) -> list[Problem]:
    """``count`` problems from ``cfg``'s distribution drawn with ``seed``, none of them in ``exclude`` (the run's
    train and test splits): an untouched report split for the analysis.

    Why a fresh draw: the test split's first problems are where a run's seed, base and settings were chosen, so
    numbers reported on them are selected on. The generator's seed is the only input, so the split is the same on
    every machine. Hub data (``source: hub``) is drawn from the generator too: the hub's own rows past TinyZero's
    test split are not downloaded offline."""
    seen = {p.key() for p in exclude}
    drawn = count * 2 + 64  # generate_problems is a prefix-stable stream: a longer draw extends a shorter one
    while True:
        out = [p for p in generate_problems(cfg.spec(), drawn, seed) if p.key() not in seen][:count]
        if len(out) == count:
            return out
        drawn *= 2


def _hub_endpoint() -> tuple[str, int]:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(timeout_s: float = 5.0) -> bool:
    """Whether the hub's host answers a TCP connect within ``timeout_s`` (DNS included, never hangs)."""
    host, port = _hub_endpoint()
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def tinyzero_split(raw: Any, train_size: int = TINYZERO_TRAIN_SIZE, test_size: int = TINYZERO_TEST_SIZE) -> dict:
    """TinyZero's split of the hub rows: train = the first ``train_size``, test = the next ``test_size``."""
    if len(raw) < train_size + test_size:
        raise ValueError(
            f"the dataset has {len(raw)} rows, fewer than train_size + test_size = {train_size + test_size}"
        )
    missing = {"target", "nums"} - set(raw.column_names)
    if missing:
        raise ValueError(f"the dataset lacks columns {sorted(missing)} (expected Countdown-Tasks fields target, nums)")

    def convert(ds: Any) -> Any:
        ds = ds.rename_column("nums", "numbers")
        return ds.map(lambda r: {"solution": ""}, desc="solution column") if "solution" not in ds.column_names else ds

    return {
        "train": convert(raw.select(range(train_size))),
        "test": convert(raw.select(range(train_size, train_size + test_size))),
    }


def load_hub_splits(
    name: str = HUB_DATASET,
    train_size: int = TINYZERO_TRAIN_SIZE,
    test_size: int = TINYZERO_TEST_SIZE,
    timeout_s: float = 5.0,
) -> dict[str, Any]:
    """Download ``name`` and split it as TinyZero did; fails at once, with what to do, when offline."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE and not hub_reachable(timeout_s):
        host, port = _hub_endpoint()
        raise HubUnavailable(
            f"cannot reach the Hugging Face hub ({host}:{port}) to download {name}. This machine looks offline: "
            "generate problems locally instead (source=generate, the default; `make data`). "
            "If the dataset is already in your HF cache, set HF_HUB_OFFLINE=1 to load it from there."
        )
    from datasets import load_dataset

    return tinyzero_split(load_dataset(name, split="train"), train_size, test_size)
