"""The streamed capture (analysis/capture.py): written batch by batch to layer-major files, read one layer at a time,
equal to the in-memory capture, and a kill mid-way never leaves it marked valid (analysis/cache.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.cache import StepCache
from analysis.capture import capture, capture_to_dir
from analysis.capture_files import read_capture
from analysis.positions import KINDS
from tasks.countdown.generate import ProblemSpec, generate_problems
from tasks.countdown.prompts import make_prompt
from tasks.countdown.synth import TraceStyle, write_trace
from tests.analysis.conftest import load


def trace_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` synthetic rollout records (the tiny base's trace format), with repeated texts (shared passes)."""
    rng = random.Random(seed)
    spec = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=20, operators=("+", "-", "*", "/"))
    problems = generate_problems(spec, max(4, n // 3), seed=seed)
    style = TraceStyle(max_wrong=3, slip_rate=0.1, verdict_noise=0.2)
    out = []
    for i in range(n):
        k = i % len(problems)
        p = problems[k]
        out.append(
            {
                "prompt": make_prompt(p.numbers, p.target),
                "completion": write_trace(p, rng, style, spec.operators).completion,
                "numbers": list(p.numbers),
                "target": p.target,
                "problem": k,
                "kind": "greedy" if i % 3 == 0 else "sampled",
            }
        )
    return out + [dict(out[0], kind="sampled")]  # identical text: shares the first record's pass


def test_streamed_capture_equals_in_memory(digit_dir: Path, tmp_path: Path) -> None:
    model, tok = load(digit_dir)
    records = trace_records(40)
    mem = capture(model, tok, records, batch_size=8)
    capture_to_dir(model, tok, records, tmp_path / "cap", batch_size=8)
    cap = read_capture(tmp_path / "cap")
    n = len(mem["problem"])
    assert n > 40 and (cap.n_layers, cap.n_sites, cap.d) == (4, n, 64)
    for key in ("record", "problem", "greedy", "line", "paren_pos", "verdict", "truth", "stated"):
        np.testing.assert_array_equal(cap[key], mem[key])
    for kind in KINDS:
        on_disk = np.load(tmp_path / "cap" / f"act_{kind}.npy")  # a plain .npy, layer-major
        assert on_disk.shape == (4, n, 64) and on_disk.dtype == np.float16
        for layer in range(4):
            np.testing.assert_array_equal(cap.layer(kind, layer), mem[f"act_{kind}"][:, layer])
    twin = np.flatnonzero(cap["record"] == len(records) - 1)  # the repeated text got the first record's rows
    np.testing.assert_array_equal(cap.layer("paren", 3)[twin], cap.layer("paren", 3)[cap["record"] == 0])
    assert not list((tmp_path / "cap").glob(".*tmp*"))  # no temporary file left behind
    with pytest.raises(IndexError):
        cap.layer("paren", 4)
    # read in layer chunks within a byte budget: the same activations, the budget's number of layers per chunk
    rows = cap["greedy"] == 1
    one_layer = int(rows.sum()) * 64 * 2
    for budget, sizes in ((10**9, [4]), (2 * one_layer, [2, 2]), (1, [1, 1, 1, 1])):
        got = list(cap.chunks(KINDS[2], rows, budget))
        assert [len(r) for r, _ in got] == sizes
        np.testing.assert_array_equal(np.concatenate([x for _, x in got], 1), mem[f"act_{KINDS[2]}"][rows])
    whole = np.concatenate([x for _, x in cap.chunks("paren", None, 10**9)], 1)
    np.testing.assert_array_equal(whole, mem["act_paren"])


def test_capture_directory_is_valid_only_when_complete(digit_dir: Path, tmp_path: Path) -> None:
    model, tok = load(digit_dir)
    records = trace_records(6)
    cache = StepCache(tmp_path / "step_0")

    def killed(directory: Path) -> None:
        capture_to_dir(model, tok, records, directory, batch_size=2)
        raise KeyboardInterrupt  # after the files, before the key: as a kill there would

    with pytest.raises(KeyboardInterrupt):
        cache.directory("capture", "k1", killed)
    again = StepCache(tmp_path / "step_0")
    assert "capture" not in again.keys and not again.valid("capture", "k1")
    calls = []

    def ok(directory: Path) -> None:
        calls.append(1)
        capture_to_dir(model, tok, records, directory, batch_size=2)

    path = again.directory("capture", "k1", ok)
    assert again.directory("capture", "k1", ok) == path and calls == [1]  # second time: read, not recomputed
    assert StepCache(tmp_path / "step_0").directory("capture", "k2", ok) == path and calls == [1, 1]  # new key
    assert read_capture(path).n_sites > 0


def test_new_settings_keep_existing_cache_keys() -> None:
    """probe.solver at sklearn and rollout.gpu_memory_share (any value) leave every stage key as it was, so caches
    written before them stay valid; the torch solver changes the probe keys (it changes the fits)."""
    import dataclasses

    from analysis.cache import stage_key
    from analysis.config import load_analysis_config
    from tasks.config import to_dict

    cfg = load_analysis_config("tiny-cue")
    before = {k: v for k, v in to_dict(cfg.probe).items() if k != "solver"}  # the settings as they were
    old_repr = "ProbeSettings(" + ", ".join(f"{k}={v!r}" for k, v in before.items()) + ")"
    assert stage_key(cfg.probe, "up") == stage_key(before, "up")
    assert stage_key(cfg.fixed, cfg.probe) == stage_key(cfg.fixed, old_repr)
    rollout = {k: v for k, v in to_dict(cfg.rollout).items() if k != "gpu_memory_share"}
    shared = dataclasses.replace(cfg.rollout, gpu_memory_share=0.5)
    assert stage_key(cfg.rollout, "fp") == stage_key(shared, "fp") == stage_key(rollout, "fp")
    torch_probe = dataclasses.replace(cfg.probe, solver="torch")
    assert stage_key(torch_probe, "up") != stage_key(cfg.probe, "up")
    assert stage_key(cfg.fixed, torch_probe) != stage_key(cfg.fixed, cfg.probe)


def test_release_frees_the_checkpoint_model(digit_dir: Path) -> None:
    """Between checkpoints the model is dropped and collected (then CUDA's cache emptied where there is one)."""
    import weakref

    from analysis.checkpoint_stages import load_model, release

    loaded = {"m": load_model(digit_dir, "cpu", "fp32")}
    ref = weakref.ref(loaded["m"][0])
    release(loaded)
    assert loaded == {} and ref() is None
    release(loaded)  # nothing loaded: a no-op


def test_a_batch_is_cut_at_max_batch_bytes(digit_dir: Path, tmp_path: Path) -> None:
    """capture.max_batch_bytes bounds a batch's activations by its sites, whatever the records' lengths; the
    capture is the same (up to float16 rounding of a different batch shape)."""
    from analysis.capture import _batches, _plan

    model, tok = load(digit_dir)
    records = trace_records(40)
    plan = _plan(tok, records, chunk=7)  # tokenized in chunks: the same plan as in one call
    assert all(np.array_equal(a, b) for a, b in zip(plan.ids, _plan(tok, records).ids, strict=True))
    per_site = 3 * 5 * 64 * 4  # kinds x (layers + 1) x d_model x float32
    batches = list(_batches(plan, 8, 5))
    assert sorted(i for b in batches for i in b) == sorted(plan.order)
    assert all(len(b) <= 8 and (len(b) == 1 or sum(len(plan.sites[i]) for i in b) <= 5) for b in batches)
    assert len(batches) > len(list(_batches(plan, 8, None)))
    whole = capture(model, tok, records, batch_size=8)
    capture_to_dir(model, tok, records, tmp_path / "cap", batch_size=8, max_batch_bytes=5 * per_site)
    cap = read_capture(tmp_path / "cap")
    for kind in KINDS:
        for layer in range(4):
            np.testing.assert_allclose(
                cap.layer(kind, layer).astype(np.float32), whole[f"act_{kind}"][:, layer].astype(np.float32), atol=2e-2
            )
