"""Project-level contracts: tasks/ stays torch-free, `make help` documents every target."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tasks_package_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import tasks.config, tasks.countdown.arith, tasks.countdown.prompts, tasks.countdown.reward\n"
        "import tasks.countdown.trace, tasks.countdown.generate, tasks.countdown.synth, tasks.countdown.dataset\n"
        "assert 'torch' not in sys.modules, 'tasks imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_make_help_lists_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = {m for m in re.findall(r"^([a-zA-Z][\w-]*):", makefile, re.M)}
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = set(re.findall(r"make (\S+)", out))
    assert targets and targets <= listed, f"undocumented targets: {sorted(targets - listed)}"
