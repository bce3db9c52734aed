"""Activation patching of the stated value: is the verdict at "(" fed by a check computed at the value?

A right line ("- R = T (") and a slip ("- W = T (": a wrong expression stated as the target) of the same problem,
after the same earlier lines, state the same value T. A model whose verdict only asks "is the stated value the
target?" treats them alike; a model that checks reads at the value's tokens whether the arithmetic before them
produces it. Copying the residual stream at T's tokens from the slip's forward pass into the right line's, at one
layer, and measuring the change in P("this") at "(" says how much of the check is carried there: 0 at layer 0 by
construction (the tokens are the same), 0 at the last layer (nothing reads it after), and where the check is
computed, a drop toward the slip's own P("this"). The texts are the fixed text's counterfactual lines (cut at the
tested line's "("), so every checkpoint patches the same pairs and the change from step 0 is paired per problem.

Why by hand: TransformerLens does not load these checkpoints' Qwen2 variant with our hooks' guarantees; the patch is
one forward hook (:func:`analysis.hooks.replace_residual`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis import stats
from analysis.splits import role_mask
from train.base_tokenizer import verdict_token_ids


def patch_pairs(texts: Sequence[dict[str, Any]]) -> list[tuple[int, int, int]]:
    """(problem, right text index, slip text index) per (problem, position) of the counterfactual lines: the first
    text of each (the written verdict is cut off, so any one serves)."""
    firsts: dict[tuple[int, str, int], int] = {}
    for i, t in enumerate(texts):
        if t.get("subset") == "counterfactual" and t["category"] in ("right", "slip"):
            firsts.setdefault((t["problem"], t["category"], t["position"]), i)
    return [
        (p, i, firsts[(p, "slip", k)])
        for (p, cat, k), i in sorted(firsts.items())
        if cat == "right" and (p, "slip", k) in firsts
    ]


def _cut(t: dict[str, Any]) -> tuple[str, int, int]:
    """Prompt + completion up to the tested line's "(", and the character span of its stated value."""
    c = t["completion"]
    paren = c.rindex("(")
    eq = c.rindex(" = ", 0, paren)
    start = len(t["prompt"]) + eq + 3
    return t["prompt"] + c[: paren + 1], start, len(t["prompt"]) + paren - 1


def _encode(tokenizer: Any, t: dict[str, Any]) -> tuple[list[int], list[int]] | None:
    """Token ids of the cut text and the value's token positions counted from the end (negative), or None."""
    text, start, end = _cut(t)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    pos = [j for j, (a, b) in enumerate(enc.offset_mapping) if a >= start and b <= end and b > a]
    n = len(enc.input_ids)
    return (list(enc.input_ids), [j - n for j in pos]) if pos else None


def _p_this(model: Any, ids: list[list[int]], pad: int, ids_tn: tuple[int, int], patch: Any = None) -> np.ndarray:
    """P("this") after the last token of each (left-padded) row, with ``patch`` = (layer, rows, cols, values)."""
    import torch

    from analysis.hooks import replace_residual

    width = max(len(r) for r in ids)
    dev = next(model.parameters()).device
    x = torch.tensor([[pad] * (width - len(r)) + r for r in ids], device=dev)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids], device=dev)
    with torch.no_grad():
        if patch is None:
            logits = model(input_ids=x, attention_mask=mask).logits[:, -1]
        else:
            layer, rows, cols, values = patch
            with replace_residual(model, layer, rows, cols + width, values):
                logits = model(input_ids=x, attention_mask=mask).logits[:, -1]
    return torch.softmax(logits.float(), -1)[:, ids_tn[0]].cpu().numpy()


def value_patching(
    model: Any,
    tokenizer: Any,
    texts: Sequence[dict[str, Any]],
    batch: int = 32,
    problems: set[int] | None = None,
    ends: bool = False,
) -> dict[str, Any]:
    """Per pair (:func:`patch_pairs` whose value tokens align from the end, of ``problems`` when given): ``problem``,
    ``p_right`` and ``p_slip`` (P("this") unpatched) and ``p_patched`` (pairs, residual layers): the right line with
    the slip's residual at the value's tokens of that layer. The embeddings (layer 0) and the last layer cannot
    change P("this") (same tokens; nothing reads the value's last residual at "("; a test checks both): they are
    patched only with ``ends``, else written as ``p_right``."""
    import torch

    from analysis.hooks import decoder_layers, record_residuals

    ids_tn = verdict_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pairs = []
    for p, i, j in patch_pairs(texts):
        if problems is not None and p not in problems:
            continue
        a, b = _encode(tokenizer, texts[i]), _encode(tokenizer, texts[j])
        if a and b and a[1] == b[1]:  # same value tokens at the same offsets from the end
            pairs.append((p, a, b))
    layers = len(decoder_layers(model)) + 1
    out = {"problem": [], "p_right": [], "p_slip": [], "p_patched": []}
    for s in range(0, len(pairs), batch):
        chunk = pairs[s : s + batch]
        right, slip = [a[0] for _, a, _ in chunk], [b[0] for _, _, b in chunk]
        offs = [a[1] for _, a, _ in chunk]
        rows = torch.tensor([r for r, o in enumerate(offs) for _ in o])
        cols = torch.tensor([c for o in offs for c in o])
        width = max(len(r) for r in slip)
        slip_ids = [[pad] * (width - len(r)) + r for r in slip]
        with record_residuals(model, rows, cols + width) as res:
            p_slip = _p_this(model, slip_ids, pad, ids_tn)
        p_right = _p_this(model, right, pad, ids_tn)
        patched = [
            _p_this(model, right, pad, ids_tn, (k, rows, cols, res[k])) if ends or 0 < k < layers - 1 else p_right
            for k in range(layers)
        ]
        out["problem"] += [p for p, _, _ in chunk]
        out["p_right"] += p_right.tolist()
        out["p_slip"] += p_slip.tolist()
        out["p_patched"] += np.stack(patched, 1).tolist()
    return out


def patch_effects(rows: dict[str, Any], roles: np.ndarray, role: str, n_boot: int) -> list[dict[str, Any] | None]:
    """Per residual layer: the mean change in P("this") from patching (patched - right) on ``role`` problems, with
    a bootstrap interval over problems (None per layer when no pair has that role)."""
    prob = np.asarray(rows["problem"], dtype=np.int64)
    keep = role_mask(prob, roles, role)
    patched = np.asarray(rows["p_patched"])
    if not keep.any():
        return [None] * (patched.shape[1] if patched.ndim == 2 else 0)
    delta = patched[keep] - np.asarray(rows["p_right"])[keep][:, None]
    return [stats.mean_ci(delta[:, k], prob[keep], n_boot=n_boot) for k in range(delta.shape[1])]


def patch_summary(
    steps: Sequence[int], per_step: dict[int, dict[str, Any]], roles: np.ndarray, n_boot: int
) -> dict[str, Any]:
    """Per step the per-layer effect on report problems; the headline layer (largest mean drop at the last step
    on calibration problems, never the reported ones, among the layers where a patch can act); at that layer each
    step's paired change from the first step (same pairs, per problem) and the step at which it first reaches half
    of the last step's change."""
    from analysis.fixed_text.changes import half_step

    last = per_step[steps[-1]]
    calib = patch_effects(last, roles, "calibration", n_boot)
    drops = [(-(c or {}).get("value", 0.0) or 0.0) for c in calib][1:-1]  # the ends are zero by construction
    layer = 1 + int(np.argmax(drops)) if drops else 0
    effects = {s: patch_effects(per_step[s], roles, "report", n_boot) for s in steps}
    first = per_step[steps[0]]
    changes = []
    for s in steps:
        r = per_step[s]
        prob = np.asarray(r["problem"], dtype=np.int64)
        keep = role_mask(prob, roles, "report")
        if not keep.any() or not np.array_equal(prob, np.asarray(first["problem"], dtype=np.int64)):
            changes.append(None)
            continue
        d = np.asarray(r["p_patched"])[keep, layer] - np.asarray(r["p_right"])[keep]
        d0 = np.asarray(first["p_patched"])[keep, layer] - np.asarray(first["p_right"])[keep]
        changes.append(stats.paired_diff_ci(d, d0, prob[keep], n_boot=n_boot))
    return {
        "layer": layer,
        "layer_source": "largest drop in P(this) on calibration problems at the last step",
        "pairs": int(role_mask(np.asarray(last["problem"], dtype=np.int64), roles, "report").sum()),
        "effects": {str(s): effects[s] for s in steps},
        "change_from_first": changes,
        "half_step": half_step(list(steps), changes),
    }
