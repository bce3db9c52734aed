"""Every preset in configs/ resolved (``extends`` followed, defaults filled in), for the test that keeps them as they
were: a refactor of the presets (a new parent, a moved key) must resolve to the same configs, and a deliberate change
shows up as a reviewed diff of ``tests/presets/resolved.json``.

    python -m tests.resolved_presets --write   # after a deliberate change to a preset or a default
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "presets" / "resolved.json"


def resolved_presets() -> dict[str, dict[str, Any]]:
    """``"<kind>/<preset>"`` -> the resolved config as plain data, for every training, analysis and study preset."""
    from analysis.config import AnalysisConfig
    from analysis.study.runs import StudyConfig
    from tasks.config import load_config, to_dict
    from train.config import TrainConfig

    kinds = {"train": (ROOT / "configs", TrainConfig), "analysis": (ROOT / "configs" / "analysis", AnalysisConfig)}
    kinds["study"] = (ROOT / "configs" / "study", StudyConfig)
    out = {}
    for kind, (folder, cls) in kinds.items():
        for path in sorted(folder.glob("*.yaml")):
            out[f"{kind}/{path.stem}"] = json.loads(json.dumps(to_dict(load_config(cls, path)), default=str))
    return out


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs (dotted keys)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
    return [line for k in sorted(set(old) | set(new)) for line in differences(old.get(k), new.get(k), f"{prefix}{k}.")]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.resolved_presets --write")
    SNAPSHOT.write_text(json.dumps(resolved_presets(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
