"""Paired changes from the first analysed checkpoint: the fixed-text protocol's "did it change, and when?".

Every checkpoint reads the same texts, so a site (or a counterfactual line, or a steered case) at step t and the
same site at the first step are a pair. Each change here is a paired difference over report problems with a
cluster-bootstrap interval (:mod:`analysis.stats`): the answer to "did X change from step A to step B" is read off
that interval, never off whether two marginal intervals overlap (a much stricter test than a paired one, biased
toward "no change"). Maths as functions of arrays; :mod:`analysis.fixed_text.per_run` feeds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis import stats
from analysis.splits import role_mask
from tasks.countdown.counterfactual import CATEGORIES

LAST, COUNTERFACTUAL = 0, 1  # indices in analysis.fixed_text.per_checkpoint.SUBSETS


def _report(meta: dict[str, np.ndarray], roles: np.ndarray, subset: int) -> np.ndarray:
    return role_mask(meta["problem"], roles, "report") & (meta["subset"] == subset)


def probe_changes(
    meta: dict[str, np.ndarray],
    step: dict[str, np.ndarray],
    first: dict[str, np.ndarray],
    roles: np.ndarray,
    layer: int,
    n_boot: int,
) -> dict[str, Any]:
    """Step minus first step, at ``layer``, on report sites: the verdict probe's AUROC on the last checkpoint's
    texts, its margin over the logit lens, the truth probes' AUROC on the counterfactual lines, and the share of
    counterfactual lines of each category the checkpoint accepts (its own verdict). ``step``/``first`` hold each
    checkpoint's ``s_<kind>_<label>`` site scores and ``margin`` (sites, layers); ``meta`` the shared labels."""
    te, cf = _report(meta, roles, LAST), _report(meta, roles, COUNTERFACTUAL)
    g_te, g_cf = meta["problem"][te], meta["problem"][cf]
    v, tr = meta["verdict"][te], meta["truth"][cf]
    out: dict[str, Any] = {
        "verdict_probe_auroc": stats.paired_auroc_diff_ci(
            step["s_paren_verdict"][te, layer], first["s_paren_verdict"][te, layer], v, g_te, n_boot=n_boot
        ),
        "verdict_probe_minus_lens": stats.auroc_contrast_ci(
            [
                step["s_paren_verdict"][te, layer],
                step["margin"][te, layer],
                first["s_paren_verdict"][te, layer],
                first["margin"][te, layer],
            ],
            [1.0, -1.0, -1.0, 1.0],
            v,
            g_te,
            n_boot=n_boot,
        ),
    }
    for kind in ("paren", "value"):
        key = f"s_{kind}_truth"
        out[f"truth_auroc_at_{kind}"] = stats.paired_auroc_diff_ci(
            step[key][cf, layer], first[key][cf, layer], tr, g_cf, n_boot=n_boot
        )
    accept_t, accept_0 = step["margin"][:, -1] > 0, first["margin"][:, -1] > 0
    out["accepts"] = {}
    for ci, cat in enumerate(CATEGORIES):
        m = cf & (meta["category"] == ci)
        out["accepts"][cat] = stats.paired_diff_ci(accept_t[m], accept_0[m], meta["problem"][m], n_boot=n_boot)
    return out


def flip_changes(
    outcomes: Sequence[dict[str, Any]], mask: np.ndarray, names: Sequence[str], n_boot: int
) -> list[dict[str, Any]]:
    """Per checkpoint, each direction's acceptance on the fixed case set ``mask`` minus the first checkpoint's,
    paired per line (the same cut texts are steered at every checkpoint)."""
    first = outcomes[0]
    groups = np.asarray(first["problems"], dtype=np.int64)[mask]
    out = []
    for o in outcomes:
        row = {}
        for n in names:
            if n in o["accept"] and n in first["accept"]:
                a = np.asarray(o["accept"][n], dtype=np.float64)[mask]
                b = np.asarray(first["accept"][n], dtype=np.float64)[mask]
                row[n] = stats.paired_diff_ci(a, b, groups, n_boot=n_boot)
        out.append(row)
    return out


def half_step(steps: Sequence[int], changes: Sequence[dict[str, Any] | None]) -> int | None:
    """The first step at which a paired change reaches half of the final step's change (None without one)."""
    final = (changes[-1] or {}).get("value")
    if final is None or final == 0:
        return None
    for s, c in zip(steps, changes, strict=True):
        v = (c or {}).get("value")
        if v is not None and v / final >= 0.5:
            return s
    return None


def same_texts(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Whether two checkpoints' fixed-text sites are the same rows (same problems, subsets, positions): the
    condition for pairing them."""
    keys = ("problem", "subset", "category", "position", "record")
    return all(k in a and k in b and np.array_equal(a[k], b[k]) for k in keys)
