"""The one place `make bench` writes: each bench merges its section into ``bench/results.json`` atomically.

Three benches (tasks, train, analysis) run as separate processes from one `make bench`; each owns one top-level
section, stamped with the machine and date, and leaves the others as they are.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from tasks.atomic import write_text
from tasks.hardware import cpu_model


def record_bench(out: str | Path, section: str, figures: dict[str, Any]) -> Path:
    """Merge ``figures`` into ``out`` under ``section`` (atomically); returns the path written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(out.read_text()) if out.is_file() else {}
    stamp = {"machine": platform.platform(), "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d")}
    merged[section] = {**figures, **stamp}
    return write_text(out, json.dumps(merged, indent=2) + "\n")
