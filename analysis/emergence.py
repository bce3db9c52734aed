"""How the verification direction emerges across a run's checkpoints.

Why by hand: no interpretability library tracks probes over training checkpoints. From the per-checkpoint results
(and their cached activations and directions) this builds: probe accuracy as a step x layer grid per position kind
and label, the earliest layer reaching a threshold per step, the cosine of each step's "(" verdict direction with
the final step's (per layer), a transfer matrix (probe fit at step s scored on step s' held-out sites, at the
final step's best layer), steering effect per step, and the training curves from ``metrics.jsonl``/``eval.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis import probes as pr
from analysis.cache import read_npz
from analysis.capture_files import read_capture
from analysis.positions import KINDS, LABELS


def accuracy_grid(steps: Sequence[dict[str, Any]], kind: str, label: str, field: str = "accuracy") -> list[list]:
    """``grid[i][layer]``: the probe's ``field`` at step i (None where not fit)."""
    grid = []
    for st in steps:
        rows = [r for r in st["probes"] if r["kind"] == kind and r["label"] == label]
        rows.sort(key=lambda r: r["layer"])
        grid.append([r[field] if r["fit"] else None for r in rows])
    return grid


def earliest_layer(row: Sequence[float | None], reach: float) -> int | None:
    return next((i for i, a in enumerate(row) if a is not None and a >= reach), None)


def best_layer(row: Sequence[float | None]) -> int | None:
    vals = [(a, i) for i, a in enumerate(row) if a is not None]
    return max(vals)[1] if vals else None


def _load_dirs(step_dir: Path) -> dict[str, np.ndarray] | None:
    p = step_dir / "directions.npz"
    return read_npz(p) if p.is_file() else None


def transfer_matrix(
    step_dirs: Sequence[Path], layer: int, source: str = "all", kind: str = "paren", label: str = "verdict"
) -> list[list]:
    """``m[i][j]``: accuracy of step i's probe on step j's held-out sites at ``layer`` (the probes' ``source``
    rollouts only, so the diagonal equals each step's own probe accuracy)."""
    probes, tests = [], []
    for d in step_dirs:
        dirs = _load_dirs(d)
        cap_path = d / "capture"
        if dirs is None or not (cap_path / "meta.npz").is_file():
            probes.append(None)
            tests.append(None)
            continue
        w, b = dirs[f"w_{kind}_{label}"][layer], float(dirs[f"b_{kind}_{label}"][layer])
        probes.append((w, b) if np.any(w) else None)
        z = read_capture(cap_path)
        te = np.isin(z["problem"], dirs["test_problems"])
        if source != "all":
            te &= z["greedy"] == (1 if source == "greedy" else 0)
        tests.append((z.layer(kind, layer)[te].astype(np.float64), z[label][te]))
    m = []
    for p in probes:
        row = []
        for t in tests:
            if p is None or t is None or len(t[1]) == 0:
                row.append(None)
            else:
                row.append(float(((pr.predict(p[0], p[1], t[0]) > 0) == t[1]).mean()))
        m.append(row)
    return m


def direction_cosines(step_dirs: Sequence[Path], kind: str = "paren", label: str = "verdict") -> list[list]:
    """``c[i][layer]``: cosine of step i's direction with the final step's at the same layer."""
    all_dirs = [_load_dirs(d) for d in step_dirs]
    final = all_dirs[-1]
    out = []
    for dirs in all_dirs:
        if dirs is None or final is None:
            out.append([])
            continue
        w, wf = dirs[f"w_{kind}_{label}"], final[f"w_{kind}_{label}"]
        out.append([pr.cosine(w[i], wf[i]) for i in range(w.shape[0])])
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return out


def emergence(run_dir: Path, results: Sequence[dict[str, Any]], reach: float, source: str = "all") -> dict[str, Any]:
    """The across-checkpoint summary of every analysed (non-broken) step in ``results``."""
    ok = [r for r in results if "error" not in r]
    steps = [r["step"] for r in ok]
    step_dirs = [run_dir / "analysis" / f"step_{s}" for s in steps]
    grids = {f"{k}/{lab}": accuracy_grid(ok, k, lab) for k in KINDS for lab in LABELS}
    shuffled = {f"{k}/{lab}": accuracy_grid(ok, k, lab, "shuffled") for k in KINDS for lab in LABELS}
    final_row = grids["paren/verdict"][-1] if ok else []
    layer = best_layer(final_row)
    steer = []
    for r in ok:
        s = r["steering"]
        at = s.get("at_chosen") or {}
        free = s.get("free", {})
        steer.append(
            {
                "step": r["step"],
                "chosen_scale": s.get("chosen_scale"),
                "flip_direction": at.get("flip_direction"),
                "flip_random": at.get("flip_random"),
                "flip_negative_on_right": at.get("flip_negative_on_right"),
                "by_scale": {str(x["scale"]): x["flip_direction"] for x in s.get("sweep", [])},
                "free_wrong_accepted": {k: v.get("wrong_accepted") for k, v in free.items()},
                "free_success": {k: v.get("success") for k, v in free.items()},
            }
        )
    return {
        "steps": steps,
        "accuracy": grids,
        "shuffled": shuffled,
        "earliest_layer": {
            key: [earliest_layer(row, reach) for row in grid] for key, grid in grids.items() if key.endswith("verdict")
        },
        "best_layer_final": layer,
        "cosine_with_final": direction_cosines(step_dirs) if ok else [],
        "transfer_layer": layer,
        "transfer": transfer_matrix(step_dirs, layer, source) if ok and layer is not None else [],
        "steering": steer,
        "training": read_jsonl(run_dir / "metrics.jsonl"),
        "eval": read_jsonl(run_dir / "eval.jsonl"),
        "broken": [{"step": r["step"], "error": r["error"]} for r in results if "error" in r],
        "components": component_emergence(ok),
    }


def component_emergence(ok: Sequence[dict[str, Any]], top: int = 5) -> dict[str, Any] | None:
    """When the final step's top components first appear in a step's top set, how stable the top set is, their
    ranks in the base, the component x step score grid, and ablation change vs k per step."""
    runs = [(r["step"], r.get("components")) for r in ok]
    runs = [(s, c) for s, c in runs if c and "ranking" in c]
    if not runs:
        return None
    tops = {s: [x["component"] for x in c["ranking"][:top]] for s, c in runs}
    final_step, final = runs[-1]
    final_top = tops[final_step]
    names = list(dict.fromkeys(n for s, _ in runs for n in tops[s]))
    scores = {s: {x["component"]: x["score_final"] for x in c["ranking"]} for s, c in runs}
    base_rank = {x["component"]: i + 1 for i, x in enumerate(runs[0][1]["ranking"])}
    steps = [s for s, _ in runs]
    jacc = [
        len(set(tops[a]) & set(tops[b])) / len(set(tops[a]) | set(tops[b]))
        for a, b in zip(steps, steps[1:], strict=False)
    ]
    return {
        "steps": steps,
        "finding": head_finding(final_step, final),
        "top": tops,
        "final_top": final_top,
        "first_in_top": {n: next((s for s in steps if n in tops[s]), None) for n in final_top},
        "rank_in_first_step": {n: base_rank.get(n) for n in final_top},
        "jaccard_consecutive": jacc,
        "names": names,
        "score_grid": [[scores[s].get(n) for n in names] for s in steps],
        "ablation": [
            {
                "step": s,
                "by_k": c["ablate_heads"],
                "baseline_error": c["baseline_error"],
                "patching": c["patching_flips"],
                "free": c.get("free_generation_verdict_error"),
            }
            for s, c in runs
        ],
        "controls": [{"step": s, **(c.get("controls") or {})} for s, c in runs],
    }


def head_finding(step: int, comp: dict[str, Any], k: int = 3, factor: float = 3.0) -> str | None:
    """One sentence on whether a small set of heads carries the verdict: top-k ablation vs k random heads."""
    row = next((r for r in comp.get("ablate_heads", []) if r["k"] == k), None)
    if row is None:
        return None
    top, rand = row["top_change"], row["random_change_mean"]
    ratio = top / rand if rand else float("inf")
    verdict = (
        f"a small set of heads carries the verdict at this scale (>= {factor:g}x random)"
        if ratio >= factor
        else f"the top-{k} heads by attribution do not stand out from random ones at this scale (< {factor:g}x)"
    )
    return (
        f"step {step}: ablating the top-{k} heads changes the verdict-error rate by {top:.3f}, {k} random heads by "
        f"{rand:.3f} +- {row['random_change_std']:.3f} ({ratio:.1f}x): {verdict}"
    )
