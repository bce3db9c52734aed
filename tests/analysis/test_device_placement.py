"""Device placement on a CPU-only build: the stand-in cuda:0 of tests/fake_device.py fails where a GPU would (the
control for tests/analysis/test_analyze_e2e.py::test_make_analyze_runs_every_stage_with_the_model_on_another_device,
which runs ``make analyze``'s whole pipeline under it with ``device=cuda``)."""

from __future__ import annotations

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
