"""Control directions for steering at the verdict "(", and a steering scale relative to the residual norm.

Steering along the verdict probe's direction and watching "(not" turn into "(this" shows little by itself: many
directions move the verdict. Each control below asks one question the probe direction has to beat, and each one
can fail (a random direction almost never moves anything in a high-dimensional stream, so it cannot tell us much):

* :func:`logit_direction`, the model's own readout. For Qwen2 the verdict logit difference at the last layer is
  ``(U[this] - U[not]) . (g * x / rms(x))``, so ``g * (U[this] - U[not])`` is the direction that moves it by
  construction ("through the final norm"). A probe direction that steers no better than it, or is nearly parallel
  to it (:func:`cosines`), has found the readout and nothing beyond it.
* :func:`mean_difference`, the class-mean difference: the simplest readout of a label, with no fitting. If it
  steers as well as the logistic direction, the fit adds nothing.
* :func:`first_operand_parity` and :func:`line_parity`: labels of things unrelated to the verdict (the first
  operand of the attempt's expression is odd; the attempt line's index is odd). A probe for one of them is fitted
  by the same pipeline on the same sites, so its direction lies in the same high-variance part of the stream as
  the verdict probe's. If it moves the verdict as much, steering measures "pushing hard along a fitted direction",
  not the verdict. The labels come from metadata every site already has: ``Site.line`` indexes
  :func:`tasks.countdown.trace.parse_attempts` of the record's completion, whose ``expression`` gives the operand
  (:func:`site_expressions`); that is simpler than re-reading the text around the site's tokens.
* :func:`equal_norm`: every direction, probe and controls alike, is a unit vector per layer, so a control that
  steers less cannot be a smaller push in disguise.

Scale: :func:`residual_norm` is the mean L2 norm of the residual stream at the steered layer on the steered sites,
and a relative scale is a fraction of it (:func:`absolute_scale`). A preset value of 0.5 then means "half the
typical residual" on the tiny 1M-parameter model and on a 3B model alike, where an absolute value would not
carry. :func:`check_scale_unit` stops a scale written in the other unit with a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks.config import ConfigError
from tasks.countdown.trace import parse_attempts

SCALE_UNITS = ("relative", "absolute")
MAX_RELATIVE = 4.0  # a relative scale above this many residual norms was almost surely meant as absolute
MIN_ABSOLUTE = 0.02  # an absolute scale below this fraction of the residual norm was almost surely meant as relative

_OPERAND = re.compile(r"\d+")


def logit_direction(model: Any, ids: tuple[int, int]) -> np.ndarray:
    """``g * (U[ids[0]] - U[ids[1]])`` (d,), float64: the residual direction whose dot product with the last
    layer's residual ``x``, divided by ``rms(x)`` (with the final norm's eps), is the model's own logit difference
    ``logit(ids[0]) - logit(ids[1])`` (plus the lm_head bias difference, which Qwen2 does not have).

    ``ids`` is ``(this_id, not_id)`` (:func:`train.base_tokenizer.verdict_token_ids`), so the direction points
    towards "this". ``g`` is the final RMSNorm's gain (``model.model.norm.weight``; 1 when it has none); ``U`` the
    output embedding, tied or not. Only two rows of ``U`` are read."""
    u = model.get_output_embeddings().weight
    rows = u[[int(ids[0]), int(ids[1])]].detach().to("cpu").double().numpy()
    norm = getattr(getattr(model, "model", None), "norm", None)
    weight = getattr(norm, "weight", None)
    gain = weight.detach().to("cpu").double().numpy() if weight is not None else np.ones(rows.shape[1])
    return gain * (rows[0] - rows[1])


def mean_difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean of the rows of ``x`` (n, d) with label 1 minus the mean of those with label 0, float64 (d,)."""
    y = np.asarray(y).astype(bool)
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels of shape {y.shape} for {x.shape[0]} rows")
    if y.all() or not y.any():
        raise ValueError("mean_difference needs both classes; one of them is empty")
    x = np.asarray(x, dtype=np.float64)
    return x[y].mean(0) - x[~y].mean(0)


def site_expressions(completion: str, numbers: Sequence[int], target: int, lines: Sequence[int]) -> list[str]:
    """The attempt expression of each site line (``Site.line`` indexes :func:`parse_attempts` of the completion)."""
    attempts = parse_attempts(completion, numbers, target)
    out = []
    for line in lines:
        expr = attempts[line].expression
        if expr is None:
            raise ValueError(f"attempt line {line} has no parsed expression")
        out.append(expr)
    return out


def first_operand_parity(expressions: Sequence[str]) -> np.ndarray:
    """1 where the first number written in the expression is odd, else 0 (int64): ``"(9 - 20) * 6"`` gives 1.
    Signs and brackets are skipped (``"-4 + 7"`` reads 4)."""
    out = np.zeros(len(expressions), dtype=np.int64)
    for i, expr in enumerate(expressions):
        m = _OPERAND.search(expr)
        if m is None:
            raise ValueError(f"expression {expr!r} has no operand")
        out[i] = int(m.group()) % 2
    return out


def line_parity(line_index: np.ndarray) -> np.ndarray:
    """1 for an odd attempt-line index (the 2nd, 4th, ... attempt line), 0 for an even one (int64)."""
    idx = np.asarray(line_index)
    if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0):
        raise ValueError("line indices must be non-negative integers")
    return (idx % 2).astype(np.int64)


def equal_norm(directions: dict[str, dict[int, np.ndarray]]) -> dict[str, dict[int, np.ndarray]]:
    """Every direction divided by its L2 norm, per name and layer (float64); a zero direction is an error."""
    out: dict[str, dict[int, np.ndarray]] = {}
    for name, layers in directions.items():
        out[name] = {}
        for layer, v in layers.items():
            v = np.asarray(v, dtype=np.float64)
            n = float(np.linalg.norm(v))
            if not np.isfinite(n) or n == 0:
                raise ValueError(f"direction {name!r} at layer {layer} has norm {n}; it cannot be unit-normalised")
            out[name][layer] = v / n
    return out


def cosines(directions: dict[str, dict[int, np.ndarray]], reference: str = "probe") -> dict[str, dict[int, float]]:
    """Cosine between ``directions[reference]`` and every other direction, per layer both have:
    ``{name: {layer: cos}}``. A zero vector gives NaN."""
    if reference not in directions:
        raise KeyError(f"no {reference!r} direction among {sorted(directions)}")
    ref = directions[reference]
    out: dict[str, dict[int, float]] = {}
    for name, layers in directions.items():
        if name == reference:
            continue
        out[name] = {}
        for layer, v in layers.items():
            if layer not in ref:
                continue
            a, b = np.asarray(ref[layer], dtype=np.float64), np.asarray(v, dtype=np.float64)
            den = float(np.linalg.norm(a) * np.linalg.norm(b))
            out[name][layer] = float(a @ b / den) if den > 0 else float("nan")
    return out


def residual_norm(x: np.ndarray) -> float:
    """Mean L2 norm of the rows of ``x`` (n, d): residual vectors at the steered layer on the steered sites."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty (n, d) array, got shape {x.shape}")
    return float(np.linalg.norm(x, axis=1).mean())


def absolute_scale(relative: float, norm: float) -> float:
    """The absolute steering scale (length of the added vector) for a scale ``relative`` to the residual norm."""
    return float(relative) * float(norm)


def check_scale_unit(
    scale: float,
    unit: str,
    norm: float,
    field: str,
    layer: int | None = None,
    unit_field: str = "steering.scale_unit",
) -> None:
    """Raise a one-line :class:`ConfigError` naming ``field`` when ``scale`` looks like it was given in the other
    unit: a ``"relative"`` scale above 4 residual norms, or an ``"absolute"`` one in (0, 0.02 x norm)."""
    if unit not in SCALE_UNITS:
        raise ConfigError(f"{unit_field}: expected one of {', '.join(SCALE_UNITS)}, got {unit!r}")
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError(f"residual norm must be positive and finite, got {norm}")
    at = f" at layer {layer}" if layer is not None else ""
    if unit == "relative" and scale > MAX_RELATIVE:
        raise ConfigError(
            f"{field}: {scale:g} is {scale:g}x the residual norm ({norm:.3g}){at}; relative scales are fractions of "
            f"that norm (typically 0.1-2); give a fraction or set {unit_field}=absolute"
        )
    if unit == "absolute" and 0 < scale < MIN_ABSOLUTE * norm:
        raise ConfigError(
            f"{field}: {scale:g} is {scale / norm:.2g}x the residual norm ({norm:.3g}){at}, which looks like a "
            f"relative scale; set {unit_field}=relative"
        )
