"""What one checkpoint's analysis costs (time, host memory, GPU memory, disk), estimated before a run starts.

``python -m analysis --dry-run`` prints this for the run it would analyse (the architecture from the run's last
checkpoint's ``config.json``, else the model of the training preset named like the analysis preset), and
``python -m analysis.resources`` writes the table of docs/analysis-resources.md for the Qwen2.5 presets.

Nothing is guessed where it can be counted or measured. Counts come from the config and the architecture: sites =
rollouts x sites per rollout (an assumption, printed: the one number a config cannot give), bytes = sites x 3 position
kinds x (layers + 1) x d_model x the storage dtype. Rates are measured here, in this process, on reduced sizes of the
same code paths (:func:`measure`), and scaled by one rule each, printed with the table:

* forward passes and generation: time = tokens x 2 x non-embedding parameters / the FLOP rate of a hooked forward
  pass of a reduced Qwen2 (compute-bound: a lower bound for token-by-token generation, which waits on memory);
* torch probes: time = Newton unit cost x targets x train sites x (d_model + 1)^2 (the batched Hessian dominates
  and Newton's iteration count does not grow with d_model; the unit cost is measured at two widths to show it);
* scikit-learn probes: time = L-BFGS unit cost x fits x train sites x d_model (the same iteration count assumed).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.config import AnalysisConfig
from analysis.fixed_text.probe_fit import CHUNK_BYTES

# config.json numbers of the hub presets' models (Qwen2.5 base models; tied embeddings, bf16 checkpoints)
QWEN25 = {
    "Qwen/Qwen2.5-0.5B": dict(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2),
    "Qwen/Qwen2.5-1.5B": dict(hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2),
    "Qwen/Qwen2.5-3B": dict(hidden=2048, intermediate=11008, layers=36, heads=16, kv_heads=2),
}
SITES_PER_ROLLOUT = 12  # assumed probed sites ("(" lines) per hub-model rollout (issue 24's figure)
TINY_SITES_PER_ROLLOUT = 3  # assumed for the tiny base, whose completions have ~2-3 attempt lines (tiny.yaml)
PROMPT_TOKENS = 200  # assumed prompt length (the base template) added to max_new_tokens per text
GPU_GIB = 139.0  # the H200 the hub presets are sized for: vLLM's share is a share of this


@dataclass(frozen=True)
class Shape:
    """The architecture numbers the estimates need."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int = 151936
    tied: bool = True
    dtype_bytes: int = 2

    def block_params(self) -> int:
        h, f = self.hidden, self.intermediate
        kv = h // self.heads * self.kv_heads
        return 2 * h * h + 2 * h * kv + h + 2 * kv + 3 * h * f + 2 * h  # q,o; k,v; biases; MLP; norms

    def params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.layers * self.block_params() + self.hidden


def shape_from_config(cfg: dict[str, Any], name: str) -> Shape:
    """A :class:`Shape` from an HF ``config.json``."""
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    return Shape(
        name=name,
        hidden=int(cfg["hidden_size"]),
        intermediate=int(cfg["intermediate_size"]),
        layers=int(cfg["num_hidden_layers"]),
        heads=int(cfg["num_attention_heads"]),
        kv_heads=int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
        vocab=int(cfg["vocab_size"]),
        tied=bool(cfg.get("tie_word_embeddings", True)),
        dtype_bytes=2 if "16" in dtype else 4,
    )


def _name(preset: str) -> str:
    name = Path(preset).name
    return name[: -len(".yaml")] if name.endswith(".yaml") else name


def preset_shape(preset: str) -> Shape | None:
    """The model of training preset ``configs/<preset>.yaml`` (a Qwen2.5 hub model or the tiny base), if known."""
    from tasks.config import read_preset

    path = Path(__file__).resolve().parents[1] / "configs" / f"{_name(preset)}.yaml"
    if not path.is_file():
        return None
    data = read_preset(path)
    model = data.get("model", "tiny")
    if model in QWEN25:
        return Shape(name=model, **QWEN25[model])
    if model == "tiny":
        b = data.get("base", {})
        return Shape(
            name=f"tiny base ({path.name})", hidden=b.get("hidden_size", 128),
            intermediate=b.get("intermediate_size", 512), layers=b.get("num_layers", 4), heads=b.get("num_heads", 4),
            kv_heads=b.get("num_kv_heads", 4), vocab=b.get("vocab_size", 512), dtype_bytes=4,
        )  # fmt: skip
    return None


def run_shape(cfg: AnalysisConfig, preset: str) -> tuple[Shape | None, str]:
    """The architecture to estimate for, and where it came from."""
    from analysis.analyse_run import find_run
    from tasks.config import ConfigError
    from train.checkpoints import list_checkpoints

    try:
        last = list_checkpoints(find_run(cfg))[-1][1]
        return shape_from_config(json.loads((last / "config.json").read_text()), str(last)), f"{last}/config.json"
    except (ConfigError, OSError, KeyError, ValueError, IndexError):
        shape = preset_shape(preset)
        return shape, f"training preset configs/{_name(preset)}.yaml" if shape else "none found"


def measure(widths: tuple[int, ...] = (128, 256)) -> dict[str, Any]:
    """Rates of this machine on reduced sizes of the analysis's own code paths (a few seconds)."""
    import numpy as np
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from analysis.hooks import record_residuals
    from analysis.probes import fit_logistic
    from analysis.probes_torch import fit_logistic_batch

    torch.manual_seed(0)
    out: dict[str, Any] = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    out["threads"] = torch.get_num_threads()
    d = 384
    shape = Shape("reduced", hidden=d, intermediate=round(d * 5.375), layers=4, heads=6, kv_heads=2, vocab=1024)
    cfg = Qwen2Config(hidden_size=d, intermediate_size=shape.intermediate, num_hidden_layers=4, num_attention_heads=6,
                      num_key_value_heads=2, vocab_size=1024, max_position_embeddings=512)  # fmt: skip
    model = Qwen2ForCausalLM(cfg).eval()
    ids = torch.randint(0, 1024, (8, 256))
    rows, cols = torch.arange(8).repeat_interleave(12), torch.randint(0, 256, (96,))

    def forward() -> None:
        with torch.no_grad(), record_residuals(model, rows, cols):
            model(input_ids=ids, use_cache=False, logits_to_keep=1)

    forward()
    t0 = time.perf_counter()
    for _ in range(3):
        forward()
    sec = (time.perf_counter() - t0) / 3
    out["forward_flops"] = 2 * shape.layers * shape.block_params() * ids.numel() / sec
    rng = np.random.default_rng(0)
    n = 2000
    for w in widths:
        x = rng.standard_normal((n, w)) + 0.3 * rng.integers(0, 2, (n, 1))
        y = (x[:, :4].sum(1) + rng.standard_normal(n) > 1.2).astype(np.int64)
        t0 = time.perf_counter()
        fit_logistic_batch([x] * 6, [y] * 6, 1.0)
        out[f"newton_unit_s_d{w}"] = (time.perf_counter() - t0) / (6 * n * (w + 1) ** 2)
        t0 = time.perf_counter()
        fit_logistic(x, y, 1.0, 2000)
        out[f"lbfgs_unit_s_d{w}"] = (time.perf_counter() - t0) / (n * w)
    out["newton_unit_s"] = out[f"newton_unit_s_d{widths[-1]}"]
    out["lbfgs_unit_s"] = out[f"lbfgs_unit_s_d{widths[-1]}"]
    return out


def estimate(shape: Shape, cfg: AnalysisConfig, rates: dict[str, Any], sites_per_rollout: int) -> dict[str, float]:
    """Per-checkpoint estimates (seconds, bytes) for ``shape`` under ``cfg``; keys are what the table shows."""
    r, fx, st = cfg.rollout, cfg.fixed, cfg.steering
    h, lay = shape.hidden, shape.layers + 1
    rollouts = r.problems * (1 + r.samples)
    tokens = PROMPT_TOKENS + r.max_new_tokens
    sites = rollouts * sites_per_rollout
    cf = fx.counterfactual_problems or r.problems
    cf_texts = cf * (4 * (fx.max_prior + 1) + 4)  # every tested line at every position, plus the leak pairs
    fixed_sites = 2 * fx.rollouts * sites_per_rollout + cf_texts * (fx.max_prior / 2 + 1)
    store = 2 if cfg.capture.dtype == "float16" else 4
    flop = 2 * shape.layers * shape.block_params()
    gen_tokens = rollouts * r.max_new_tokens + st.problems * (2 + st.random_draws) * st.max_new_tokens
    fwd_tokens = rollouts * tokens + (2 * fx.rollouts + cf_texts) * tokens
    n_train = sites * (1 - cfg.probe.test_fraction - cfg.probe.calibration_fraction)
    fits = lay * (3 * 3 * 2 + fx.shuffles - 1)  # layers x (kinds x labels x (real, shuffled) + verdict's extra)
    newton = rates["newton_unit_s"] * fits * n_train * (h + 1) ** 2
    lbfgs = rates["lbfgs_unit_s"] * fits * n_train * h
    weights = shape.params() * shape.dtype_bytes
    capture_bytes = sites * 3 * lay * h * store
    fixed_bytes = fixed_sites * 3 * lay * h * store
    batch_site_bytes = cfg.capture.batch_size * sites_per_rollout * 3 * lay * h * (4 + store)
    if cfg.capture.max_batch_bytes is not None:  # a batch is cut at this many float32 bytes
        batch_site_bytes = min(batch_site_bytes, cfg.capture.max_batch_bytes * (4 + store) / 4)
    layer_bytes = sites * h * (store + 8 * 3)  # one layer read, its float64 copy and the train-row copies
    # the fixed-text capture is streamed too: a probe fit holds one chunk of layers (CHUNK_BYTES) and its float64
    # copy, scoring one layer and its float64 copy, plus the lens margins of every site and layer
    chunk = min(CHUNK_BYTES, fixed_sites * lay * h * store)
    fixed_host = chunk * (1 + 8 / store) + fixed_sites * h * (store + 8) + fixed_sites * lay * 4
    kv_bytes = st.free_batch_size * (PROMPT_TOKENS + st.max_new_tokens) * shape.layers * 2 * (
        h // shape.heads * shape.kv_heads) * shape.dtype_bytes  # fmt: skip
    on_gpu = cfg.device.startswith("cuda")
    extras = max(batch_site_bytes, layer_bytes, fixed_host)
    share = r.gpu_memory_share if r.gpu_memory_share is not None else 0.9
    return {
        "generation_s": (gen_tokens * flop) / rates["forward_flops"],
        "forward_s": (fwd_tokens * flop) / rates["forward_flops"],
        "probes_torch_s": newton,
        "probes_sklearn_s": lbfgs,
        # from_pretrained loads the weights on the host; on a GPU they leave it after .to(device)
        "host_bytes": (max(weights, extras) if on_gpu else weights + extras),
        "host_capture_bytes": batch_site_bytes,
        "host_fixed_bytes": fixed_host,
        "gpu_bytes": max(share * GPU_GIB * 2**30, weights + kv_bytes + (1 << 30)) if on_gpu else 0.0,
        "gpu_hf_bytes": weights + kv_bytes + (1 << 30),
        "disk_bytes": capture_bytes + fixed_bytes + rollouts * r.max_new_tokens * 12,
        "capture_disk_bytes": capture_bytes,
        "sites": sites,
        "fixed_sites": fixed_sites,
    }


def _gib(x: float) -> str:
    return f"{x / 2**30:.1f} GiB" if x >= 2**27 else f"{x / 2**20:.0f} MiB"


def _dur(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


HEADER = (
    "| model | sites | generation + forward (this CPU) | probes torch / sklearn (this CPU) | host memory | "
    "GPU memory (vLLM share / HF stages) | disk |\n| --- | --- | --- | --- | --- | --- | --- |"
)


def row(shape: Shape, cfg: AnalysisConfig, rates: dict[str, Any], spr: int) -> str:
    """One markdown table row of :func:`estimate`."""
    e = estimate(shape, cfg, rates, spr)
    share = cfg.rollout.gpu_memory_share if cfg.rollout.gpu_memory_share is not None else 0.9
    gpu = f"{share:g} x {GPU_GIB:g} GiB / {_gib(e['gpu_hf_bytes'])}" if cfg.device.startswith("cuda") else "none (cpu)"
    return (
        f"| {shape.name} ({shape.params() / 1e9:.2f}B) | {e['sites']:.0f} + {e['fixed_sites']:.0f} fixed | "
        f"{_dur(e['generation_s'])} + {_dur(e['forward_s'])} | {_dur(e['probes_torch_s'])} / "
        f"{_dur(e['probes_sklearn_s'])} | {_gib(e['host_bytes'])} (capture batch {_gib(e['host_capture_bytes'])}, "
        f"fixed text {_gib(e['host_fixed_bytes'])}) | {gpu} | {_gib(e['disk_bytes'])} "
        f"(capture {_gib(e['capture_disk_bytes'])}) |"
    )


def describe_rates(rates: dict[str, Any]) -> str:
    from train.precision import cpu_model

    units = ", ".join(f"{k} {v:.3g}" for k, v in rates.items() if k.startswith(("newton_unit_s_d", "lbfgs_unit_s_d")))
    return (
        f"measured on {cpu_model()} (torch cpu capability {rates['cpu_capability']}, {rates['threads']} threads): "
        f"hooked forward {rates['forward_flops'] / 1e9:.1f} GFLOP/s (float32); probe unit costs {units}"
    )


def dry_run(cfg: AnalysisConfig, preset: str) -> str:
    """The resource table for the run ``cfg`` would analyse, as printed by ``python -m analysis --dry-run``."""
    shape, source = run_shape(cfg, preset)
    if shape is None:
        return f"dry run: no model architecture found ({source}); nothing to estimate"
    rates = measure()
    spr = SITES_PER_ROLLOUT if shape.vocab > 10_000 else TINY_SITES_PER_ROLLOUT
    lines = [
        f"dry run: resources per checkpoint for {shape.name} (from {source}), preset {preset}, device {cfg.device}",
        f"assumed: {spr} probed sites per rollout, {PROMPT_TOKENS} prompt tokens + rollout.max_new_tokens per text",
        describe_rates(rates),
        "",
        HEADER,
        row(shape, cfg, rates, spr),
    ]
    return "\n".join(lines)


def main() -> int:
    """Print docs/analysis-resources.md's table for the hub presets, measured now."""
    from analysis.config import load_analysis_config

    rates = measure()
    print(describe_rates(rates) + "\n\n" + HEADER)
    for preset in ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b"):
        print(row(preset_shape(preset), load_analysis_config(preset), rates, SITES_PER_ROLLOUT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
