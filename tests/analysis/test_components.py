"""Component hooks and attribution maths on random-weight Qwen2 models (digit and Qwen-style tokenizers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.components import measure as cm
from analysis.hooks import ablate, attention_out_proj, record_components
from tests.analysis.conftest import load
from tests.analysis.test_hooks_capture import COMPLETION, PROMPT

RECORD = {"prompt": PROMPT, "completion": COMPLETION, "numbers": [3, 5, 7], "target": 22, "kind": "greedy"}


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("which", ["digit_dir", "qwen_dir"])
def test_head_outputs_sum_to_the_attention_output(which: str, request: pytest.FixtureRequest) -> None:
    model, tok = load(request.getfixturevalue(which))
    sites = cm.Sites(tok, [RECORD], 10)
    ids, mask, rows, cols = next(sites.batches(4))
    outs = {}

    def keep(module, args, output) -> None:  # noqa: ANN001
        outs["attn"] = output[rows, cols]

    hook = attention_out_proj(model, 2).register_forward_hook(keep)
    try:
        with torch.no_grad(), record_components(model, rows, cols) as rec:
            model(input_ids=ids, attention_mask=mask)
    finally:
        hook.remove()
    wo = attention_out_proj(model, 2).weight
    hd = wo.shape[1] // model.config.num_attention_heads
    z = rec["heads"][2]
    per_head = sum(z[:, h * hd : (h + 1) * hd] @ wo[:, h * hd : (h + 1) * hd].T for h in range(wo.shape[1] // hd))
    torch.testing.assert_close(per_head, outs["attn"], atol=1e-5, rtol=1e-4)
    assert sites.verdict == [0, 0, 1] and sites.truth == [0, 0, 1]


def test_ablation_and_patching_hooks(digit_dir) -> None:  # noqa: ANN001
    model, tok = load(digit_dir)
    sites = cm.Sites(tok, [RECORD], 10)
    ids, mask, rows, cols = next(sites.batches(4))
    before = _hooks(model)
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask).logits
        with record_components(model, rows, cols) as rec:
            model(input_ids=ids, attention_mask=mask)
        # patching a head with its own value changes nothing; zero-ablating it does
        last = cols[-1:]
        with ablate(model, {2: [1]}, [], 16, patch={2: rec["heads"][2][-1:]}, positions=last):
            same = model(input_ids=ids, attention_mask=mask).logits
        with ablate(model, {2: [1]}, [2], 16):
            moved = model(input_ids=ids, attention_mask=mask).logits
        with pytest.raises(RuntimeError), ablate(model, {1: [0, 1]}, [1], 16):
            raise RuntimeError("body fails")
    torch.testing.assert_close(same, base)
    assert (moved - base).abs().max() > 1e-4
    assert _hooks(model) == before


def test_attribution_ranks_by_separation(digit_dir) -> None:  # noqa: ANN001
    model, tok = load(digit_dir)
    sites = cm.Sites(tok, [RECORD, dict(RECORD, completion=COMPLETION.replace("(not 22)", "(this works)"))], 10)
    comp = cm.collect(model, sites, 8)
    d = model.config.hidden_size
    w = np.random.default_rng(0).standard_normal((model.config.num_hidden_layers + 1, d))
    rows = cm.attribution(model, comp, np.asarray(sites.verdict), w, model.config.num_attention_heads)
    n_components = model.config.num_hidden_layers * (model.config.num_attention_heads + 1)
    assert len(rows) == n_components and len({r["component"] for r in rows}) == n_components
    scores = [abs(r["score_final"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert set(comp["head_means"]) == set(range(1, model.config.num_hidden_layers + 1))
    dec = cm.decisions(model, sites, 8, *cm.verdict_token_ids(tok))
    assert dec.shape == (len(sites.verdict),) and set(dec.tolist()) <= {0, 1}


def test_batched_patching_equals_one_site_at_a_time(digit_dir) -> None:  # noqa: ANN001
    """Every "not" site is patched in its own row of a padded batch: same flips as one forward pass per site."""
    model, tok = load(digit_dir)
    longer = {**RECORD, "completion": RECORD["completion"].replace("</think>", "- 7 - 5 + 3 = 5 (not 22)\n</think>")}
    sites = cm.Sites(tok, [RECORD, longer, RECORD], 10)
    comp = cm.collect(model, sites, 2)
    heads = {2: [0, 1], 3: [1]}
    v = np.asarray(sites.verdict)
    sites_at = [(seq, c) for seq, cols in enumerate(sites.pos) for c in cols]
    nots = np.flatnonzero(v == 0)
    donors = np.random.default_rng(5).choice(np.flatnonzero(v == 1), len(nots))
    ref = []  # patched next-token logits, one forward pass per site
    with torch.no_grad():
        for i, donor in zip(nots, donors, strict=True):
            seq, c = sites_at[i]
            ids = torch.tensor([sites.seqs[seq][: c + 1]])
            patch = {layer: comp["heads"][layer][donor : donor + 1] for layer in heads}
            with ablate(model, heads, [], 16, patch=patch, positions=torch.tensor([c])):
                ref.append(model(input_ids=ids).logits[0, c])
    ref_t = torch.stack(ref)
    # a random model has no verdict: pick two tokens whose comparison differs across sites, so flips are mixed
    a, b = next((a, b) for a in range(40) for b in range(40) if 0 < (ref_t[:, a] > ref_t[:, b]).float().mean() < 1)
    expected = float((ref_t[:, a] > ref_t[:, b]).float().mean())
    for batch in (1, 3, 64):
        assert cm.patch_flips(model, sites, comp, heads, 16, [b], [a], seed=5, batch=batch) == pytest.approx(expected)
    assert len(nots) >= 4 and _hooks(model) == 0
