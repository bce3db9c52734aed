"""The repository's one way to write an artifact: into a temporary file beside it, then ``os.replace`` onto it.

A reader (a resumed job, the report, a second process) therefore sees either the old file or the whole new one,
never half of one; an interrupted write leaves only a hidden ``.<name>.tmp`` that the next write replaces. Pure
Python, so ``tasks/``, ``train/`` and ``analysis/`` all share it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``, on an error it is removed.
    ``suffix`` keeps an extension some writers insist on (``np.savez`` appends ``.npz`` otherwise)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data: Any, indent: int = 2, default: Callable[[Any], Any] | None = str) -> Path:
    """Write ``data`` as JSON (sorted keys, trailing newline) atomically; ``default`` converts what JSON lacks."""
    return write_text(path, json.dumps(data, indent=indent, sort_keys=True, default=default) + "\n")
