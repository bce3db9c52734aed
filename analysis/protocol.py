"""The original verification-vector study's protocol, and how far an analysis config departs from it.

The study (blog "Unraveling DeepSeek-R1-Zero One Step at a Time: Verification Vectors", on a TinyZero
Qwen2.5-3B Countdown run) fitted a two-class softmax probe on raw residual activations with AdamW, took the
normalised accept row W[1], and added 20 x W[1] at "layers 24~36": decoder blocks 24..35 (0-indexed), which are
residual layers 25..36 in this project's convention (0 = embeddings, l = output of decoder block l). Its released
code steers at every token once three " (" have appeared (``mode: from_kth``, ``every: 3``), and its steered
lines change the " (" itself ("= 52! Yes, we got it!"), i.e. the vector acts at the position that predicts " ("
(``position: before_paren``). It unembedded W as ``lm_head @ W``, without the final norm's gain.

For other depths the steered band keeps the same fraction of the model: residual layers from
ceil(L * 25 / 36) to L. :func:`deviations` lists every setting of a config that differs, for the report.
"""

from __future__ import annotations

import math
from typing import Any

STUDY_DEPTH = 36  # Qwen2.5-3B
STUDY_FIRST = 25  # first steered residual layer there


def study_layers(num_layers: int) -> tuple[int, ...]:
    """Residual layers at the study's depth fraction for a model with ``num_layers`` decoder blocks."""
    return tuple(range(math.ceil(num_layers * STUDY_FIRST / STUDY_DEPTH), num_layers + 1))


def study_settings(num_layers: int) -> dict[str, Any]:
    """The study's protocol as dotted config keys."""
    return {
        "probe.method": "softmax",
        "steering.layers": study_layers(num_layers),
        "steering.direction_layer": None,
        "steering.position": "before_paren",
        "steering.mode": "from_kth",
        "steering.every": 3,
        "steering.scale": 20.0,
        "report.unembed_gain": False,
    }


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return tuple(cfg) if isinstance(cfg, list | tuple) else cfg


def deviations(cfg: Any, num_layers: int | None) -> list[str]:
    """One line per setting of ``cfg`` that differs from the study's protocol (empty: the study exactly)."""
    if num_layers is None:
        return ["model depth unknown: deviations not computed"]
    out = []
    for key, want in study_settings(num_layers).items():
        have = _get(cfg, key)
        if have != want:
            out.append(f"{key}: {have!r} (the study: {want!r})")
    if num_layers != STUDY_DEPTH:
        out.append(f"model depth {num_layers} decoder blocks (the study: {STUDY_DEPTH}, Qwen2.5-3B)")
    return out
