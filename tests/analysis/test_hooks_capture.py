"""Hooks, positions and capture on real tokenizers and random-weight Qwen2 models loaded with from_pretrained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.capture import capture
from analysis.hooks import MaskHolder, add_to_residual, decoder_layers, record_residuals
from analysis.positions import find_sites
from tests.analysis.conftest import load

COMPLETION = (
    " Let me solve this step by step.\n<think> We have the numbers 3, 5, 7 and need to reach 22. "
    "Let's try different combinations:\n- 3 * 7 - 5 = 16 (not 22)\n- 12 + 34 = 52 (not 46)\n"
    "- 3 * 5 + 7 = 22 (this works)\n</think>\n<answer> 3 * 5 + 7 </answer>"
)
PROMPT = "User: use [3, 5, 7] to make 22.\nAssistant:"


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("which", ["digit_dir", "qwen_dir"])
def test_sites_map_to_paren_eq_and_value_tokens(which: str, request: pytest.FixtureRequest) -> None:
    _, tok = load(request.getfixturevalue(which))
    enc = tok(PROMPT + COMPLETION, return_offsets_mapping=True, add_special_tokens=False)
    sites = find_sites(COMPLETION, [3, 5, 7], 22, enc.offset_mapping, len(PROMPT))
    ids = enc.input_ids
    assert [(s.verdict, s.truth, s.stated) for s in sites] == [(0, 0, 0), (0, 0, 0), (1, 1, 1)]
    for s in sites:
        assert "(" in tok.decode([ids[s.paren]])
        nxt = tok.decode(ids[s.paren + 1 : s.paren + 2]).strip()  # the next token starts the verdict word
        assert nxt and ("not".startswith(nxt) or "this".startswith(nxt))
        assert "=" in tok.decode([ids[s.eq]])
        assert tok.decode([ids[s.value]]).strip()[0].isdigit()
    if which == "qwen_dir":  # Qwen's " (" token, not a bare "("
        assert tok.decode([ids[sites[0].paren]]) == " ("


def test_record_residuals_matches_output_hidden_states(digit_dir: Path) -> None:
    model, tok = load(digit_dir)
    enc = tok([PROMPT + COMPLETION], return_tensors="pt", add_special_tokens=False)
    cols = torch.tensor([3, 10, 40])
    before = _hook_count(model)
    with torch.no_grad(), record_residuals(model, torch.zeros(3, dtype=torch.long), cols) as out:
        ref = model(**enc, output_hidden_states=True).hidden_states
    n = len(decoder_layers(model))
    assert sorted(out) == list(range(n + 1))
    for layer in range(n):  # HF's last hidden state is after the final norm; ours is the raw residual
        torch.testing.assert_close(out[layer], ref[layer][0, cols])
    # ours are gone (transformers may keep its own output-capturing hooks after output_hidden_states)
    assert _hook_count(model) <= before + 6 and not any(
        "record_residuals" in repr(h) for m in model.modules() for h in m._forward_hooks.values()
    )


def test_hooks_removed_when_body_raises(digit_dir: Path) -> None:
    model, _ = load(digit_dir)
    holder = MaskHolder()
    with (
        pytest.raises(RuntimeError, match="boom"),
        add_to_residual(model, {1: torch.ones(64), 2: torch.ones(64)}, holder),
    ):
        assert _hook_count(model) == 2
        raise RuntimeError("boom")
    with pytest.raises(KeyError), record_residuals(model, torch.tensor([0]), torch.tensor([0])):
        assert _hook_count(model) == 4  # embeddings + 3 layers
        raise KeyError("x")
    assert _hook_count(model) == 0


def test_add_to_residual_changes_only_masked_and_later_positions(digit_dir: Path) -> None:
    model, tok = load(digit_dir)
    ids = tok([PROMPT + COMPLETION], return_tensors="pt", add_special_tokens=False).input_ids[:, :30]
    holder = MaskHolder()
    with torch.no_grad():
        base = model(ids).logits
        with add_to_residual(model, {2: 10 * torch.ones(64)}, holder):
            holder.mask = torch.zeros(ids.shape)
            same = model(ids).logits
            holder.mask[0, 20] = 1.0
            moved = model(ids).logits
    torch.testing.assert_close(same, base)
    torch.testing.assert_close(moved[0, :20], base[0, :20])  # causal: earlier positions untouched
    assert (moved[0, 20] - base[0, 20]).abs().max() > 1e-3


@pytest.mark.parametrize("which", ["digit_dir", "qwen_dir"])
def test_capture_one_pass_per_batch_with_labels(which: str, request: pytest.FixtureRequest) -> None:
    model, tok = load(request.getfixturevalue(which))
    rec = {
        "prompt": PROMPT,
        "completion": COMPLETION,
        "numbers": [3, 5, 7],
        "target": 22,
        "problem": 0,
        "kind": "greedy",
    }
    other = dict(rec, completion=COMPLETION.replace("16 (not 22)", "16 (this works)"), problem=1, kind="sampled")
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = capture(model, tok, [rec, other, dict(rec, completion="no attempts here")], batch_size=8)
    finally:
        handle.remove()
    assert len(calls) == 1  # one teacher-forced forward pass, not one per token or per site
    assert out["act_paren"].shape == (6, len(decoder_layers(model)) + 1, model.config.hidden_size)
    assert out["verdict"].tolist() == [0, 0, 1, 1, 0, 1] and out["truth"].tolist() == [0, 0, 1, 0, 0, 1]
    assert out["greedy"].tolist() == [1, 1, 1, 0, 0, 0] and out["problem"].tolist() == [0, 0, 0, 1, 1, 1]
    # activations equal a separate single-sequence pass (right padding is invisible to causal attention)
    enc = tok(PROMPT + COMPLETION, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(out["act_paren"][0, 1], hs[1][0, out["paren_pos"][0]].numpy(), atol=2e-2, rtol=1e-2)
