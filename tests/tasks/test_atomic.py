"""The one atomic-write helper: a reader sees the old file or the whole new one, and a failed write leaves no trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.atomic import atomic_path, write_json, write_text


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    write_json(p, {"b": 1, "a": [1, 2]})
    write_json(p, {"step": 3})
    assert json.loads(p.read_text()) == {"step": 3}
    assert p.read_text().endswith("\n")
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    p = write_text(tmp_path / "report.html", "old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["report.html"]


def test_suffix_keeps_the_extension_a_writer_appends(tmp_path: Path) -> None:
    import numpy as np

    p = tmp_path / "x.npz"
    with atomic_path(p, suffix=".npz") as tmp:
        np.savez(tmp, a=np.arange(3))
    assert np.load(p)["a"].tolist() == [0, 1, 2]
    assert [q.name for q in tmp_path.iterdir()] == ["x.npz"]
