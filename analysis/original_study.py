"""The original verification-vector study's protocol in its two readings, and how far an analysis config departs.

The study (blog "Unraveling DeepSeek-R1-Zero One Step at a Time: Verification Vectors") analysed a TinyZero
Qwen2.5-3B Countdown checkpoint (3-4 numbers). Two sources describe its protocol and disagree:

* ``post``, the text: a two-class probe (W of shape [2, d], W[1] = "correct") on hidden states at every "(",
  labelled by the next token ("not" 0, "this" 1); steering adds W[1], normalised, x 20 at "layers 24~36" (decoder
  blocks 24..35 = residual layers 25..36 here: 0 = embeddings, l = output of decoder block l) "for every 3rd
  occurrence of '('" (``mode: every_kth``, ``position: before_paren``, ``every: 3``); unembedding ``lm_head @ W``.
  It does not name the probe's optimiser, nor which completions fed it.
* ``released``, the author's TinyZero fork (probe.py, intervene.py): a float32 model; greedy completions of at most
  150 tokens, only those holding both a "(not" and a "(this"; residual outputs of every block; parameters
  [layers, d, 2] = randn/sqrt(d), no bias, AdamW lr 1e-4, betas (0.9, 0.99), wd 0.01, early stopping with
  patience 10 (``probe.method: released``). Steering: greedy, from the step predicting the 3rd generated " (" on,
  every step, last position only, at decoder blocks 24..32 (residual 25..33), each with its own layer's W[1],
  normalised, x 20, 300 new tokens (``mode: released``); unembedding without the final norm's gain.

:func:`deviations` lists, for the reading a config is closest to, every axis on which it differs, each line naming
the reading. What no config can change is listed with "cannot be the same because ...": the model (this project
analyses the runs it trains), a tokenizer other than Qwen2.5's, probe sites that must parse as attempt lines, the
probe's schedule on captured sites, and the flip test this project adds. Other depths keep the study's fraction of
the model (:func:`study_layers`, :func:`released_layers`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

STUDY_DEPTH = 36  # Qwen2.5-3B
STUDY_FIRST = 25  # first steered residual layer there (decoder block 24)
RELEASED_LAST = 33  # last steered residual layer of the released intervene.py (decoder block 32)
READINGS = ("released", "post")
SOURCE = {"released": "the released scripts", "post": "the post"}
QWEN25_VOCAB = range(151643, 151667)  # Qwen2.5 tokenizers: 151643 regular tokens plus up to 22 special ones

UNAVOIDABLE = {
    "sites": "probe sites: attempt lines with an '=' and a stated value before '(' (analysis/positions.py); the "
    "study took every ' (' followed by 'not'/'this' — cannot be the same because the stated value and the last '=' "
    "are probed at the same line",
    "flip": "flip test: counterfactual wrong lines cut at the steered position, {n} new tokens, judged by "
    "acceptance in any form — this project's addition (the study: free generation only); cannot be the same "
    "because the study had no flip test; free generation under the configured rule is reported beside it",
}


def study_layers(num_layers: int) -> tuple[int, ...]:
    """The post's steered residual layers (25..36 of 36) at the same depth fraction for ``num_layers`` blocks."""
    return tuple(range(math.ceil(num_layers * STUDY_FIRST / STUDY_DEPTH), num_layers + 1))


def released_layers(num_layers: int) -> tuple[int, ...]:
    """The released code's steered residual layers (25..33 of 36) at the same depth fraction."""
    first = math.ceil(num_layers * STUDY_FIRST / STUDY_DEPTH)
    return tuple(range(first, round(num_layers * RELEASED_LAST / STUDY_DEPTH) + 1))


def study_settings(num_layers: int, reading: str = "released") -> dict[str, Any]:
    """A reading's protocol as dotted config keys (only what that source states)."""
    common = {
        "steering.direction": "verdict",
        "steering.direction_layer": None,
        "steering.position": "before_paren",
        "steering.every": 3,
        "steering.scale": 20.0,
        "steering.scale_unit": "absolute",
        "report.unembed_gain": False,
    }
    if reading == "post":
        return {**common, "steering.layers": study_layers(num_layers), "steering.mode": "every_kth"}
    return {
        **common,
        "precision": "fp32",
        "rollout.max_new_tokens": 150,
        "probe.method": "released",
        "probe.source": "greedy",
        "probe.require_both_verdicts": True,
        "steering.layers": released_layers(num_layers),
        "steering.mode": "released",
        "steering.max_new_tokens": 300,
    }


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return tuple(cfg) if isinstance(cfg, list | tuple) else cfg


def _settings_lines(cfg: Any, num_layers: int, reading: str) -> list[str]:
    out = []
    for key, want in study_settings(num_layers, reading).items():
        have = _get(cfg, key)
        if have != want:
            out.append(f"{reading}: {key}: {have!r} ({SOURCE[reading]}: {want!r})")
    if reading == "post" and cfg.probe.method not in ("softmax", "released"):
        out.append(f"post: probe.method: {cfg.probe.method!r} (the post: a two-class softmax probe, W of shape [2, d])")
    return out


def _fixed_lines(cfg: Any, num_layers: int, reading: str, model_name: str | None, tokenizer: Any) -> list[str]:
    """The axes no config value can match (or that are known only from the run), each with its reason."""
    out = []
    if not (model_name and "tinyzero" in model_name.lower()):
        what = model_name or "this run's checkpoint"
        out.append(
            f"{reading}: model: {what} (the study: its TinyZero Qwen2.5-3B Countdown actor) — cannot be the same "
            "because this project analyses the runs it trains"
        )
    if num_layers != STUDY_DEPTH:
        out.append(
            f"{reading}: model depth: {num_layers} decoder blocks (the study: {STUDY_DEPTH}, Qwen2.5-3B) — steered "
            "layers keep the study's depth fraction"
        )
    if tokenizer is None:
        out.append(f"{reading}: tokenizer: not checked (not given)")
    elif len(tokenizer) not in QWEN25_VOCAB or len(tokenizer(" (", add_special_tokens=False)["input_ids"]) != 1:
        out.append(
            f"{reading}: tokenizer: {type(tokenizer).__name__} of {len(tokenizer)} tokens (the study: Qwen2.5's, "
            "151k, ' (' one token) — cannot be the same because this model was trained with its own tokenizer"
        )
    if reading == "released":
        out.append(
            "released: probe schedule: epochs over captured sites, one validation per epoch (probe.py: one pass "
            "over streamed greedy generations, validation every 50 batches of 128 prompts) — cannot be the same "
            "because sites are captured once here"
        )
        if cfg.probe.method == "released" and not cfg.probe.accumulate_grad:
            out.append(
                "released: probe.accumulate_grad: False (probe.py called zero_grad once, before its loop, so its "
                "gradients accumulated; on synthetic data that leaves the probe near its random start)"
            )
    if cfg.probe.method == "released":
        out.append(
            f"{reading}: direction: unit(W[1] - W[0]) of the released probe (the study steered and unembedded W[1] "
            "alone; from a random start W[0] is not -W[1], so the two differ) — cannot be the same because the "
            "stages keep one binary weight per layer for every probe method "
            "(analysis/fixed_text/probe_fit.py::fit_layers)"
        )
    out.append(
        f"{reading}: free generation direction: the own-rollout stage's logistic verdict probe (probe.method is the "
        "fixed-text stage's; the study steered free generation with its softmax probe) — cannot be the same because "
        "the own-rollout probes (analysis/probes.py::probe_kind) fit logistic regressions only"
    )
    out.append(f"{reading}: {UNAVOIDABLE['sites']}")
    out.append(f"{reading}: " + UNAVOIDABLE["flip"].format(n=cfg.steering.flip_new_tokens))
    return out


def deviations(
    cfg: Any,
    num_layers: int | None,
    model_name: str | None = None,
    tokenizer: Any = None,
    reading: str | None = None,
    num_operands: tuple[int, ...] | None = None,
) -> list[str]:
    """One line per axis on which ``cfg`` (and the run's model and tokenizer, when given) differs from a reading
    of the study, each line starting with the reading's name. ``reading`` None: the reading the config's settings
    are closest to (fewest differing settings; a tie goes to ``released``). The task (Countdown, 3-4 numbers) is
    the run's data preset, not the analysis config's: checked when ``num_operands`` is given."""
    if num_layers is None:
        return ["model depth unknown: deviations not computed"]
    if reading is None:
        reading = min(READINGS, key=lambda r: len(_settings_lines(cfg, num_layers, r)))
    if reading not in READINGS:
        raise ValueError(f"reading: expected one of {list(READINGS)}, got {reading!r}")
    out = _settings_lines(cfg, num_layers, reading) + _fixed_lines(cfg, num_layers, reading, model_name, tokenizer)
    if num_operands is not None and tuple(sorted(num_operands)) != (3, 4):
        out.append(f"{reading}: task: Countdown with {list(num_operands)} numbers (the study: 3-4 numbers)")
    return out


def both_verdict_sites(record: np.ndarray, verdict: np.ndarray) -> np.ndarray:
    """Per site: does its completion (``record``) hold both a "(not" (verdict 0) and a "(this" (1) site — the
    released probe.py's filter on which completions give probe texts."""
    record, verdict = np.asarray(record), np.asarray(verdict)
    ok = [r for r in np.unique(record) if {0, 1} <= set(verdict[record == r].tolist())]
    return np.isin(record, ok)
