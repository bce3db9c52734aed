"""`python -m analysis.bench` runs end to end on a random-weight tiny model and writes its section of results.json."""

from __future__ import annotations

import json
from pathlib import Path

from analysis import bench


def test_bench_writes_every_ratio(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"tasks": {"kept": 1}}))
    args = ["--root", str(tmp_path / "no-runs"), "--repeats", "1", "--batch", "2", "--new-tokens", "6"]
    assert bench.main([*args, "--skip-memory", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["tasks"] == {"kept": 1}  # other benches' sections survive
    fig = got["analysis"]
    assert fig["model"].startswith("random-weight tiny Qwen2") and fig["device"] == "cpu"
    for key in ("steer_vs_naive", "steer_vs_unsteered", "capture_vs_plain"):
        assert fig[key] > 0
    assert fig["steer_naive_s"] > 0 and fig["steer_cached_s"] > 0 and "rss_8_vs_2" not in fig


def test_hub_sized_architecture_matches_qwen25_05b() -> None:
    """The 0.5B stand-in is built from Qwen2.5-0.5B's config numbers (494M parameters with tied embeddings)."""
    from transformers import Qwen2Config

    from train.standin import QWEN25_05B

    cfg = Qwen2Config(**QWEN25_05B)
    d, f, n, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    kv = d // cfg.num_attention_heads * cfg.num_key_value_heads
    per_layer = d * d * 2 + d * kv * 2 + d + 2 * kv + 3 * d * f + 2 * d  # q,o + k,v weights, biases, MLP, norms
    total = v * d + n * per_layer + d
    assert 490e6 < total < 500e6
