"""Which machine a figure came from: the CPU's model name. Benches, runs and reports say which CPU gave each number;
this sits at the floor (pure Python) so that tasks, train and analysis all read it from one place."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name as the OS reports it (benches and runs say which CPU their figures come from)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
