"""Per-checkpoint, per-stage artifact cache: atomic writes and keys that say when a stage must re-run.

Each checkpoint's results live in ``<run>/analysis/step_<N>/``; ``keys.json`` there maps stage -> key, where a key
hashes the stage's settings, the upstream stage's key and the checkpoint's fingerprint (file sizes, mtimes and
``state.json``). A stage whose file exists with a matching key is loaded instead of recomputed, so a re-run with
nothing changed only reads files, and a run killed mid-way resumes at the first missing artifact. Files are
written to a temporary name and renamed, and ``keys.json`` is updated only after the artifact is in place, so a
kill never leaves a half-written artifact marked valid. A directory artifact (the streamed capture) is unmarked
before its files are rewritten, for the same reason. ``seconds.json`` keeps how long each stage's last
computation took, so a slow analysis says where its time went (summary.json's ``stage_seconds``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tasks import atomic
from tasks.config import to_dict


def fingerprint(model_dir: Path) -> str:
    """Identity of a checkpoint directory's contents (cheap: names, sizes, mtimes, and state.json's text)."""
    h = hashlib.sha256()
    for p in sorted(model_dir.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    state = model_dir / "state.json"
    if state.is_file():
        h.update(state.read_bytes())
    return h.hexdigest()[:16]


# Settings added after caches were written, with the value that reproduces the behaviour before them: at that
# value they are left out of the key, so existing caches stay valid; any other value is part of the key.
ADDED_AT_OLD_BEHAVIOUR = {"solver": "sklearn", "max_batch_bytes": None}
RESOURCE_ONLY = {"gpu_memory_share"}  # how much of a machine a stage may use, never what it computes: not in keys


def stage_key(settings: Any, *upstream: str) -> str:
    """Hash of a stage's settings (a dataclass or plain data) and its inputs' keys."""
    data = to_dict(settings) if hasattr(settings, "__dataclass_fields__") else settings
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if not _old_behaviour(k, v)}
    blob = json.dumps([data, [_repr(u) for u in upstream]], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _old_behaviour(name: str, value: Any) -> bool:
    return name in RESOURCE_ONLY or (name in ADDED_AT_OLD_BEHAVIOUR and value == ADDED_AT_OLD_BEHAVIOUR[name])


def _repr(x: Any) -> Any:
    """A settings dataclass given as an upstream input: its repr without the fields at their old behaviour."""
    if not dataclasses.is_dataclass(x) or isinstance(x, type):
        return x
    fields = (f.name for f in dataclasses.fields(x) if f.repr)
    kept = ", ".join(f"{n}={getattr(x, n)!r}" for n in fields if not _old_behaviour(n, getattr(x, n)))
    return f"{type(x).__qualname__}({kept})"


def write_json(path: Path, data: Any) -> None:
    """An analysis artifact as JSON (numpy scalars and arrays as plain numbers), atomically."""
    atomic.write_json(path, data, indent=1, default=_plain)


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class StepCache:
    """The artifacts of one checkpoint's analysis."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._keys_path = self.dir / "keys.json"
        self.keys: dict[str, str] = json.loads(self._keys_path.read_text()) if self._keys_path.is_file() else {}
        self.computed: list[str] = []
        self._seconds_path = self.dir / "seconds.json"

    def _mark(self, stage: str, key: str) -> None:
        self.keys[stage] = key
        write_json(self._keys_path, self.keys)

    def record(self, stage: str, seconds: float) -> None:
        """Keep the wall time of ``stage``'s last computation in ``seconds.json``."""
        data = self.seconds()
        data[stage] = round(seconds, 2)
        write_json(self._seconds_path, data)

    def seconds(self) -> dict[str, float]:
        """Wall time of each stage's last computation (stages loaded from cache keep their earlier time)."""
        return json.loads(self._seconds_path.read_text()) if self._seconds_path.is_file() else {}

    def json(self, stage: str, key: str, compute: Callable[[], Any], timed: bool = True) -> Any:
        path = self.dir / f"{stage}.json"
        if self.keys.get(stage) == key and path.is_file():
            return json.loads(path.read_text())
        t0 = time.perf_counter()
        data = compute()
        if timed:  # untimed: the caller computed it and records its own time
            self.record(stage, time.perf_counter() - t0)
        write_json(path, data)
        self._mark(stage, key)
        self.computed.append(stage)
        return json.loads(path.read_text())

    def npz(
        self, stage: str, key: str, compute: Callable[[], dict[str, np.ndarray]], timed: bool = True
    ) -> dict[str, np.ndarray]:
        path = self.dir / f"{stage}.npz"
        if self.keys.get(stage) == key and path.is_file():
            return read_npz(path)
        t0 = time.perf_counter()
        data = compute()
        if timed:
            self.record(stage, time.perf_counter() - t0)
        write_npz(path, data)
        self._mark(stage, key)
        self.computed.append(stage)
        return data

    def directory(self, stage: str, key: str, compute: Callable[[Path], None], timed: bool = True) -> Path:
        """``<step>/<stage>/``, filled by ``compute(path)`` unless it is already there under ``key``. The stage is
        unmarked before the directory is emptied and marked again only after ``compute`` returns, so a kill in
        between leaves it invalid, never half old and half new."""
        path = self.dir / stage
        if self.keys.get(stage) == key and path.is_dir():
            return path
        if stage in self.keys:
            del self.keys[stage]
            write_json(self._keys_path, self.keys)
        shutil.rmtree(path, ignore_errors=True)
        for old in (self.dir / f"{stage}.npz",):  # the single-file format this stage had before
            old.unlink(missing_ok=True)
        t0 = time.perf_counter()
        compute(path)
        if timed:
            self.record(stage, time.perf_counter() - t0)
        self._mark(stage, key)
        self.computed.append(stage)
        return path

    def valid(self, stage: str, key: str, suffix: str = "json") -> bool:
        """Whether ``stage``'s artifact (``<stage>.<suffix>``, or the directory ``<stage>/`` for suffix "/") is
        there under ``key``."""
        if suffix == "/":
            return self.keys.get(stage) == key and (self.dir / stage).is_dir()
        return self.keys.get(stage) == key and (self.dir / f"{stage}.{suffix}").is_file()
