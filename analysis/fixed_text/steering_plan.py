"""The fixed-text stage's steering at the run level: which directions are steered (the probes' and the controls
that can fail), the run's one scale (calibrated on calibration problems), and the rates on line sets fixed before
analysis. Split from :mod:`analysis.fixed_text.per_run`, which orders the checkpoints and caches each stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from analysis import probes as pr
from analysis.cache import StepCache, stage_key
from analysis.config import AnalysisConfig
from analysis.fixed_text.changes import flip_changes
from analysis.fixed_text.flips import POSITIONS, choose_scale, flip_outcomes, rates_on, scaled_vectors, wrong_line_cases
from analysis.steering.evaluate import random_units
from tasks.config import ConfigError


def _units(w: np.ndarray, cfg: AnalysisConfig) -> dict[int, np.ndarray]:
    s = cfg.steering
    return {layer: pr.unit(w[s.direction_layer if s.direction_layer is not None else layer]) for layer in s.layers}


def steering_rates(outcomes: Sequence[dict[str, Any]], n_boot: int) -> list[dict[str, Any]]:
    """Per step and position: rates on the two fixed line sets (the wrong lines the first checkpoint rejects
    unsteered, and all wrong lines), and each direction's change from the first step on the first set."""
    out: list[dict[str, Any]] = [{} for _ in outcomes]
    for pos in POSITIONS:
        per = [o[pos] for o in outcomes]
        base_rejected = np.asarray(per[0]["unsteered"]) == 0
        every = np.ones(len(base_rejected), dtype=bool)
        names = list(per[0]["accept"])
        changes = flip_changes(per, base_rejected, names, n_boot)
        for i, o in enumerate(per):
            out[i][pos] = {
                "base_rejected": rates_on(o, base_rejected, n_boot),
                "all_wrong": rates_on(o, every, n_boot),
                "change_from_first": changes[i],
                "example": o.get("example"),
            }
    return out


def steering_directions(
    arrays: dict[str, np.ndarray], final: dict[str, np.ndarray], cfg: AnalysisConfig, scale: float
) -> tuple[dict[str, dict[int, np.ndarray]], list[dict[int, np.ndarray]], dict[int, float] | None]:
    """The unit directions steered at one checkpoint (its own, the final checkpoint's, and the controls that can
    fail: the logit direction, the class-mean difference, an unrelated label's probe; random ones of equal norm),
    and the per-layer residual norms a relative scale multiplies (None for absolute scales, after checking that the
    scale does not look relative)."""
    from analysis.directions import check_scale_unit

    s = cfg.steering
    src = "w_paren_own" if s.direction == "own" else "w_paren_verdict"
    named = {
        "own": _units(arrays[src], cfg),
        "final": _units(final[src], cfg),
        "logit": {layer: pr.unit(arrays["d_logit"]) for layer in s.layers},
        "meandiff": _units(arrays["d_meandiff"], cfg),
        "parity": _units(arrays["d_parity"], cfg),
    }
    dirs = {n: u for n, u in named.items() if all(np.any(v) for v in u.values())}
    rands = random_units(named["own"], s.random_seed, s.random_draws)
    norms = {layer: float(arrays["resid_norm"][layer]) for layer in s.layers}
    if s.scale_unit == "absolute":
        for layer in s.layers:
            check_scale_unit(scale, "absolute", norms[layer], "steering.scale", layer=layer)
        return dirs, rands, None
    return dirs, rands, norms


def calibrate(
    cfg: AnalysisConfig,
    run_cache: StepCache,
    key: str,
    texts: list,
    roles: np.ndarray,
    final: dict,
    arrays: dict,
    model: Callable,
    say: Any,
) -> dict[str, Any]:
    """The run's one steering scale (in ``steering.scale_unit``): the preset's, or the smallest swept scale whose
    final direction flips ``flip_target`` of the calibration problems' wrong lines that the last checkpoint
    rejects (headline position)."""
    s = cfg.steering
    if s.scale is not None:
        return {"scale": float(s.scale), "unit": s.scale_unit, "source": "preset (steering.scale)"}

    def sweep() -> dict[str, Any]:
        say(f"calibration: steering scale on {int((roles == 'calibration').sum())} calibration problems")
        m, tok = model()
        cases = wrong_line_cases(texts, roles, "calibration", s.position, cfg.fixed.steer_cases)
        if not cases:
            raise ConfigError(
                f"probe.calibration_fraction: the calibration split ({int((roles == 'calibration').sum())} problems)"
                f" holds no wrong counterfactual line to calibrate steering.scale on; raise it, or set steering.scale"
            )
        rows = []
        for x in s.scales:
            dirs, _, norms = steering_directions(arrays, final, cfg, x)
            vecs = {"final": scaled_vectors(dirs["final"], x, norms)} if "final" in dirs else {}
            o = flip_outcomes(m, tok, cases, vecs, [], s.flip_new_tokens, s.batch_size)
            rows.append({"scale": float(x), **rates_on(o, np.asarray(o["unsteered"]) == 0, cfg.fixed.bootstrap)})
        chosen = choose_scale(rows, "final", s.flip_target)
        source = f"calibration problems, position {s.position}"
        return {"scale": float(chosen), "unit": s.scale_unit, "source": source, "sweep": rows}

    return run_cache.json("calibration", stage_key(s, key, "outcomes"), sweep)
