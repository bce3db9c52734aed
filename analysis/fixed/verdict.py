"""The checkpoint's own verdict on the fixed text's counterfactual lines: what it accepts, by line category and by
position, how much the line's content and its position move that, and whether the pairs leak.

The counterfactual lines (:mod:`tasks.countdown.counterfactual`) set verdict, stated == target and truth
independently and come in pairs identical up to "(". The checkpoint's own verdict at "(" is its output margin
``log P("this") - log P("not")`` (the lens at the last layer); every rate is on report problems with a bootstrap
interval over problems. ``subset`` indices are those of :data:`analysis.fixed.checkpoint.SUBSETS`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis import stats
from analysis.splits import role_mask
from tasks.countdown.counterfactual import CATEGORIES

COUNTERFACTUAL = 1  # index of "counterfactual" in analysis.fixed.checkpoint.SUBSETS


def own_verdict(
    cap: dict[str, np.ndarray], acts: Any, roles: np.ndarray, margin: np.ndarray, n_boot: int
) -> dict[str, Any]:
    """The checkpoint's own verdict on the counterfactual lines (report problems): the share it accepts
    (output margin > 0) per category and per position, and how well the margin separates stated == target and
    truth (AUROC). Also the largest activation difference at "(" within a this/not pair (0: no leakage)."""
    cf = (cap["subset"] == COUNTERFACTUAL) & role_mask(cap["problem"], roles, "report")
    out_margin = margin[:, -1]
    accept = (out_margin > 0).astype(np.float64)
    groups = cap["problem"]
    res: dict[str, Any] = {"by_category": {}, "by_position": {}}
    for ci, cat in enumerate(CATEGORIES):
        m = cf & (cap["category"] == ci)
        res["by_category"][cat] = stats.mean_ci(accept[m], groups[m], n_boot=n_boot)
    for pos in sorted(set(cap["position"][cf].tolist())):
        m = cf & (cap["position"] == pos)
        res["by_position"][str(pos)] = stats.mean_ci(accept[m], groups[m], n_boot=n_boot)
    res["content_effect"] = _content_effect(cap, cf, accept, n_boot)
    pos = sorted(set(cap["position"][cf].tolist()))
    if len(pos) > 1:
        hi, lo = cf & (cap["position"] == pos[-1]), cf & (cap["position"] == pos[0])
        res["position_effect"] = {
            "positions": [pos[0], pos[-1]],
            **stats.diff_ci(accept[hi], groups[hi], accept[lo], groups[lo], n_boot=n_boot),
        }
    for label in ("stated", "truth"):
        y = cap[label][cf]
        res[f"auroc_{label}"] = (
            stats.auroc_ci(out_margin[cf], y, groups[cf], n_boot=n_boot) if len(np.unique(y)) == 2 else None
        )
    res["pair_max_diff"] = _pair_diff(cap, acts)
    return res


def slip_p_not(arrays: dict[str, np.ndarray], roles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slip line of the report problems (stated == target, arithmetic wrong; both texts of each pair, which
    are identical up to "("): the checkpoint's own ``P("not" | "this" or "not")`` at "(" from its output margin,
    and the line's problem. The texts are the same at every checkpoint, so the rows align across steps."""
    cf = (arrays["subset"] == COUNTERFACTUAL) & role_mask(arrays["problem"], roles, "report")
    m = cf & (arrays["category"] == CATEGORIES.index("slip"))
    p_not = 1.0 / (1.0 + np.exp(arrays["margin"][m, -1].astype(np.float64)))
    return p_not, arrays["problem"][m].astype(np.int64)


def _content_effect(cap: dict[str, np.ndarray], cf: np.ndarray, accept: np.ndarray, n_boot: int) -> dict[str, Any]:
    """Accept rate of right lines minus wrong lines of the *same* problem (same prior lines, same position):
    what the line's content alone does to the verdict (paired, CI over problems)."""
    rows: dict[int, dict[int, list[float]]] = {}
    for i in np.flatnonzero(cf):
        rows.setdefault(int(cap["problem"][i]), {}).setdefault(int(cap["category"][i]), []).append(accept[i])
    r, w = CATEGORIES.index("right"), CATEGORIES.index("wrong")
    both = [(p, float(np.mean(c[r])), float(np.mean(c[w]))) for p, c in rows.items() if r in c and w in c]
    a = np.array([x[1] for x in both])
    b = np.array([x[2] for x in both])
    return stats.paired_diff_ci(a, b, np.array([x[0] for x in both], dtype=np.int64), n_boot=n_boot)


def _pair_diff(cap: dict[str, np.ndarray], acts: Any) -> float | None:
    """Max |activation difference| at "(" between the two texts of each counterfactual pair (they differ only
    after it, so anything above float noise means the written verdict leaked into the '(' position)."""
    cf = np.flatnonzero(cap["subset"] == COUNTERFACTUAL)
    if len(cf) < 2:
        return None
    key = list(zip(cap["problem"][cf], cap["category"][cf], strict=True))
    first: dict[tuple, int] = {}
    pairs = []
    for i, k in enumerate(key):
        if k in first:
            pairs.append((i, first[k]))
        else:
            first[k] = i
    if not pairs:
        return 0.0
    a, b = (np.array(x) for x in zip(*pairs, strict=True))
    worst = 0.0
    for layer in range(acts.n_layers):
        x = acts.layer("paren", layer)[cf].astype(np.float32)
        worst = max(worst, float(np.abs(x[a] - x[b]).max()))
    return worst
