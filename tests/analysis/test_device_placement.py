"""Device placement on a CPU-only build: the stand-in cuda:0 of tests/fake_device.py fails where a GPU would (the
control for tests/analysis/test_analyze_e2e.py::test_make_analyze_runs_every_stage_with_the_model_on_another_device,
which runs ``make analyze``'s whole pipeline under it with ``device=cuda``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.analysis.conftest import qwen_like_tokenizer, random_qwen2, traces
from tests.fake_device import OnFakeCuda


def test_the_stand_in_device_fails_where_a_gpu_would(fake_cuda: None) -> None:
    tok = qwen_like_tokenizer(traces(60))
    model = random_qwen2(tok).to("cuda").eval()
    weight = model.lm_head.weight
    assert isinstance(weight, OnFakeCuda) and weight.device.type == "cuda"
    ids = tok(["Using the numbers [3, 5, 7]"], return_tensors="pt").input_ids
    with pytest.raises(RuntimeError, match="same device"):
        model(ids)  # inputs left on the CPU
    with pytest.raises(RuntimeError, match="same device"):
        weight @ torch.ones(weight.shape[1])  # a GPU weight times a CPU vector (analysis/components, before the fix)
    with torch.no_grad():
        logits = model(ids.to(model.device)).logits
        with pytest.raises(TypeError, match="numpy"):
            logits.numpy()  # .numpy() on GPU logits
        assert logits.cpu().numpy().shape == (1, ids.shape[1], model.config.vocab_size)
        assert logits[0, torch.tensor([0, 1])].device.type == "cuda"  # CPU indices are allowed, as on CUDA
        out = model.generate(ids.to(model.device), max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.device.type == "cuda" and out.shape == (1, ids.shape[1] + 3)


def test_the_component_measures_run_with_the_model_on_another_device(digit_dir: Path, fake_cuda: None) -> None:
    """The component stage's maths (analysis/components/measure.py) on sites that exist: a micro run's own
    completions may have no "(" site at all, so the whole-pipeline test alone would not reach it."""
    import numpy as np

    from analysis.components import measure as cm
    from tests.analysis.conftest import load
    from tests.analysis.test_components import RECORD

    model, tok = load(digit_dir)
    model = model.to("cuda")
    right = dict(RECORD, completion=RECORD["completion"].replace("(not 22)", "(this works)"))
    sites = cm.Sites(tok, [RECORD, right, RECORD], 10)
    comp = cm.collect(model, sites, 2)
    w = np.random.default_rng(0).standard_normal((model.config.num_hidden_layers + 1, model.config.hidden_size))
    rows = cm.attribution(model, comp, np.asarray(sites.verdict), w, model.config.num_attention_heads)
    assert rows and all(np.isfinite(r["score_final"]) for r in rows)
    ids_not, ids_this = cm.verdict_token_ids(tok)
    assert set(cm.decisions(model, sites, 2, ids_not, ids_this).tolist()) <= {0, 1}
    flips = cm.patch_flips(model, sites, comp, {2: [0, 1]}, 16, ids_not, ids_this, seed=5, batch=2)
    assert flips is None or 0 <= flips <= 1
