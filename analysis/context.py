"""What every stage of one run's analysis reads, in one object: the resolved config, where the run's analysis is
written, the analysed problems and their roles, the prompt template and line style, the rollout engine (resolved
only when a stage must generate) and where progress lines go; and each checkpoint's stage cache, made once.

Why an object: the per-checkpoint stage, the fixed-text stage and the rollouts they share read the same dozen
values; passed one by one they travelled as long positional lists in which a swapped pair still type-checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.cache import StepCache
from analysis.config import AnalysisConfig
from tasks.countdown.counterfactual import PLAIN_LINES, LineStyle
from tasks.countdown.generate import Problem


@dataclass
class RunContext:
    """One run's analysis inputs. ``out`` is ``<run>/analysis``; ``roles`` the problems' roles (calibration /
    train / report, :mod:`analysis.splits`); ``engine()`` names the rollout engine when first asked."""

    cfg: AnalysisConfig
    out: Path
    problems: Sequence[Problem]
    template: str
    roles: np.ndarray
    style: LineStyle = PLAIN_LINES
    engine: Callable[[], str] = field(default=lambda: "hf")
    say: Callable[[str], Any] = print
    _caches: dict[int, StepCache] = field(default_factory=dict, repr=False)

    def step_dir(self, step: int) -> Path:
        """``<run>/analysis/step_<step>``: the checkpoint's artifacts."""
        return self.out / f"step_{step}"

    def cache(self, step: int) -> StepCache:
        """The checkpoint's stage cache (one object per step, so every stage's timings land in one place)."""
        if step not in self._caches:
            self._caches[step] = StepCache(self.step_dir(step))
        return self._caches[step]
