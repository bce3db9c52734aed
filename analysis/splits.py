"""Which held-out problems play which role in the analysis: calibration, probe training, or report.

Every selection the analysis makes (the steering scale, a layer) is made on ``calibration`` problems; probes are
fitted on ``train`` problems; every number in the report is measured on ``report`` problems, which neither choice
nor fit has seen. Roles are assigned to problem *indices* of the run's held-out split with one seed, so they are
the same at every checkpoint and for every text set (own rollouts, fixed text), and a problem's sites never sit on
two sides.

With an untouched report split (``report_split: fresh``, the default) the report problems are not taken from the
run's held-out split at all: they are drawn afresh (:func:`tasks.countdown.dataset.draw_report_problems`) and
appended after the development problems, and :func:`fresh_roles` marks exactly those appended indices ``report``.
"""

from __future__ import annotations

import numpy as np

ROLES = ("calibration", "train", "report")


def problem_roles(n_problems: int, calibration: float, test: float, seed: int) -> np.ndarray:
    """Role name per problem index 0..n_problems-1: ``calibration`` and ``report`` shares as given (at least one
    problem each when there are three or more), ``train`` the rest."""
    if not (0 <= calibration < 1 and 0 < test < 1 and calibration + test < 1):
        raise ValueError(f"calibration ({calibration}) and test ({test}) shares must be in [0, 1) and sum below 1")
    order = np.random.default_rng(seed).permutation(n_problems)
    n_cal = int(round(n_problems * calibration))
    n_rep = int(round(n_problems * test))
    if n_problems >= 3:
        n_cal = max(n_cal, 1 if calibration > 0 else 0)
        n_rep = max(n_rep, 1)
        n_cal = min(n_cal, n_problems - n_rep - 1)
    roles = np.full(n_problems, "train", dtype=object)
    roles[order[:n_cal]] = "calibration"
    roles[order[n_cal : n_cal + n_rep]] = "report"
    return roles.astype(str)


def role_mask(problem: np.ndarray, roles: np.ndarray, role: str) -> np.ndarray:
    """Boolean mask over sites (``problem`` indices) of the sites whose problem has ``role``."""
    problem = np.asarray(problem, dtype=np.int64)
    return roles[problem] == role if len(problem) else np.zeros(0, dtype=bool)


def report_count(n_problems: int, test: float) -> int:
    """How many of ``n_problems`` analysed problems are report problems (at least one)."""
    return max(int(round(n_problems * test)), 1)


def fresh_roles(n_problems: int, calibration: float, test: float, seed: int) -> np.ndarray:
    """Roles when the last :func:`report_count` problems are a fresh report draw: those are ``report``; of the
    development problems before them, a ``calibration`` share of all problems (chosen with ``seed``) calibrates and
    the rest trains probes."""
    if not (0 <= calibration < 1 and 0 < test < 1 and calibration + test < 1):
        raise ValueError(f"calibration ({calibration}) and test ({test}) shares must be in [0, 1) and sum below 1")
    n_rep = report_count(n_problems, test)
    n_dev = n_problems - n_rep
    n_cal = min(int(round(n_problems * calibration)), max(n_dev - 1, 0))
    roles = np.full(n_problems, "report", dtype=object)
    roles[:n_dev] = "train"
    roles[np.random.default_rng(seed).permutation(n_dev)[:n_cal]] = "calibration"
    return roles.astype(str)


def spread_over_roles(roles: np.ndarray, n: int) -> list[int]:
    """``n`` problem indices (sorted) taking each role in proportion to its size, first indices of each role first:
    a subset of the analysed problems (the counterfactual lines' problems) that never leaves a role out, whichever
    part of the list the report problems occupy."""
    rank = np.zeros(len(roles))
    for role in np.unique(roles):
        idx = np.flatnonzero(roles == role)
        rank[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    return sorted(np.argsort(rank, kind="stable")[:n].tolist())
