"""Each run's last checkpoint, as its own analysis measured it: the value and the paired interval over problems of
the fixed-text metrics a reader checks per run (does every RL seed end with verdicts that follow the arithmetic and
not the line's position?). The RL-minus-control table compares changes between runs; this table shows where each
run ended, with the within-run uncertainty the change table does not carry."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.study.metrics import FIXED

FINAL = (
    "fixed text: accepts right lines",
    "fixed text: accepts slips",
    "fixed text: accepts right lines minus slips",
    "fixed text: position effect",
    "fixed text: verdict probe AUROC minus logit lens",
    "fixed text: steering with the final direction minus random",
)


def _at(head: dict[str, Any], path: Sequence[str]) -> dict[str, Any] | None:
    x: Any = head
    for p in path:
        x = x.get(p) if isinstance(x, dict) else None
    if isinstance(x, dict) and x.get("value") is not None:
        return {k: x.get(k) for k in ("value", "lo", "hi")}
    return None


def final_checkpoints(directory: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """run -> {"step": the last analysed step, metric: {value, lo, hi} or None} for the :data:`FINAL` metrics,
    read from ``<run>/analysis/summary.json`` (runs without one are left out)."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        sm = directory / name / "analysis" / "summary.json"
        if not sm.is_file():
            continue
        per_step = (json.loads(sm.read_text()).get("fixed_text") or {}).get("per_step") or []
        if not per_step:
            continue
        head = max(per_step, key=lambda h: int(h["step"]))
        out[name] = {"step": int(head["step"]), **{m: _at(head, FIXED[m]) for m in FINAL}}
    return out
