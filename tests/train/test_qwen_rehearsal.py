"""The Qwen-shaped rehearsal: the stand-in's exact shapes and tokenizer layout (train/standin.py), and the hub preset
``qwen2.5-0.5b`` run end to end on a 2-layer stand-in through the real CLIs (train, then analysis), as a GPU box would
run it on Qwen/Qwen2.5-0.5B."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import ROOT
from train.checkpoints import list_checkpoints
from train.standin import NOTE, SPECIAL_TOKENS, build_standin, build_tokenizer, corpus, main, standin_config

QWEN_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|file_sep|>": 151664}


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("standin-tok")
    build_tokenizer(corpus()).save_pretrained(out)
    return AutoTokenizer.from_pretrained(out)


def test_config_has_qwen25_05b_shapes() -> None:
    import torch
    from transformers import Qwen2ForCausalLM

    cfg = standin_config()
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (896, 4864, 24)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (14, 2)
    assert (cfg.vocab_size, cfg.max_position_embeddings, cfg.rms_norm_eps) == (151936, 32768, 1e-6)
    assert cfg.rope_parameters["rope_theta"] == 1e6 and cfg.tie_word_embeddings
    assert (cfg.bos_token_id, cfg.eos_token_id) == (151643, 151643) and cfg.standin == NOTE
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    assert sum(p.numel() for p in model.parameters()) == 494_032_768  # Qwen2.5-0.5B's count (tied embeddings)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    attn = model.model.layers[0].self_attn
    assert (attn.q_proj.weight.shape, attn.k_proj.weight.shape) == ((896, 896), (128, 896))  # head size 64
    short = standin_config(2).to_dict()
    full = cfg.to_dict()
    assert short["num_hidden_layers"] == 2
    same = set(full) - {"num_hidden_layers", "max_window_layers", "layer_types"}
    assert {k: short[k] for k in same} == {k: full[k] for k in same}  # the same width, heads, vocab and rope


def test_tokenizer_has_qwen_layout_special_tokens_and_chat_template(saved_tokenizer: Any) -> None:
    tok = saved_tokenizer
    assert type(tok).__name__ == "Qwen2Tokenizer" and (tok.vocab_size, len(tok)) == (151643, 151665)
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(151643, 151665))
    assert {t: tok.convert_tokens_to_ids(t) for t in QWEN_IDS} == QWEN_IDS
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|endoftext|>", "<|endoftext|>", None)
    assert "<|im_end|>" in tok.all_special_tokens and "<tool_call>" not in tok.all_special_tokens
    chat = tok.apply_chat_template([{"role": "user", "content": "2 + 3?"}], tokenize=False, add_generation_prompt=True)
    assert chat == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    own = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert (
        tok.apply_chat_template(own, tokenize=False)
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
    )
    ids = tok("<|im_start|>user\n 89 (not 89)<|im_end|>").input_ids
    assert ids[0] == 151644 and ids[-1] == 151645
    assert tok.convert_ids_to_tokens(ids[3:6]) == ["Ġ", "8", "9"]  # Qwen's split: one token per digit
    text = corpus(problems=2)[0]
    assert tok.decode(tok(text).input_ids) == text
    assert tok.decode([151700, 151935]) == ""  # embedding rows past the tokenizer, as in Qwen


def test_builder_refuses_a_directory_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="out: .* holds no earlier stand-in"):
        build_standin(tmp_path, layers=2)
    assert main(["--out", str(tmp_path / "new"), "--layers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: layers:"), err
    assert not (tmp_path / "new").exists()


def documented_rehearsal() -> list[str]:
    """docs/gpu.md's rehearsal: its first ``bash`` block, one command per entry (continuation lines joined)."""
    doc = (ROOT / "docs" / "gpu.md").read_text()
    block = re.search(r"```bash\n(.*?)```", doc, re.S)
    assert block is not None, "docs/gpu.md has no bash block"
    return [line.strip() for line in block.group(1).replace("\\\n", " ").splitlines() if line.strip()]


def fresh_checkout(dst: Path) -> Path:
    """The working tree's files as a fresh clone has them (tracked and not ignored; no checkpoints, no runs), with
    this checkout's ``.venv`` linked in (a fresh clone's ``make setup`` would build the same one)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dst / name)
    (dst / ".venv").symlink_to(ROOT / ".venv")
    return dst


@pytest.mark.slow
def test_the_documented_rehearsal_runs_as_written_in_a_fresh_checkout(tmp_path: Path) -> None:
    """docs/gpu.md's commands, read from the file and run in order by bash in a fresh checkout, exactly as a user
    pastes them; then what they wrote is checked (Qwen shapes, checkpoints, every analysis stage, the report).
    ``MAKEFLAGS=-o .venv/.setup-stamp`` only tells make that the linked environment is current."""
    commands = documented_rehearsal()
    assert commands[0] == "make setup" and any(c.startswith("make analyze") for c in commands)
    clone = fresh_checkout(tmp_path / "clone")
    env = {**os.environ, "MAKEFLAGS": "-o .venv/.setup-stamp"}
    for cmd in commands:
        proc = subprocess.run(["bash", "-c", cmd], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    _check_rehearsal_run(clone / "checkpoints" / "qwen-standin")


def _check_rehearsal_run(run: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert [s for s, _ in list_checkpoints(run)] == [0, 2]
    assert json.loads((run / "summary.json").read_text())["checkpoints"] == [0, 2]
    last = run / "step_2"
    assert (last / "optimizer.pt").is_file() and (last / "trainer_state.json").is_file()
    policy = AutoModelForCausalLM.from_pretrained(last)
    assert policy.dtype == torch.float32  # trained on float32 master weights, not the bf16 checkpoint's dtype
    c = policy.config
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (
        151936,
        896,
        2,
        14,
        2,
    )
    assert policy.get_output_embeddings().weight.shape == (151936, 896) and c.tie_word_embeddings
    tok = AutoTokenizer.from_pretrained(last)
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645 and tok.pad_token == tok.eos_token == "<|endoftext|>"
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary["steps"] == [0, 2] and summary["broken_steps"] == []
    assert all({"rollouts", "capture", "fixed", "fixed_steering"} <= set(v) for v in summary["computed"].values())
    assert {"rollouts", "capture", "probes", "steering", "fixed"} <= set(summary["stage_seconds"])
    assert all(isinstance(v, float | int) and v >= 0 for v in summary["stage_seconds"].values())
    for h in summary["fixed_text"]["per_step"]:  # numbers, not placeholders, on texts every checkpoint reads
        assert 0 <= h["slip_p_not"]["value"] <= 1
    assert summary["deviations_from_study"]
    html = (run / "analysis" / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "data:image/png;base64" in html


@pytest.mark.slow
def test_gpu_check_dry_run_validates_every_stage(tmp_path: Path) -> None:
    """scripts/gpu_check.sh cannot run here, but each of its commands is checked: train stages under DRY_RUN=1,
    analysis overrides loaded, a 1-layer stand-in built, the bench's arguments parsed; the table lists each one."""
    script = ROOT / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1"}
    proc = subprocess.run(["bash", str(script), str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("\t") for line in (tmp_path / "timings.tsv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == [
        "tiny-train-dry",
        "tiny-analyze-dry",
        "standin-build-dry",
        "qwen-train-dry",
        "qwen-analyze-dry",
        "bench-args-dry",
    ]
    assert all(r[2] == "ok" and float(r[1]) >= 0 for r in rows), rows
    assert "config OK (dry run" in (tmp_path / "logs" / "qwen-train-dry.log").read_text()
    assert (tmp_path / "timings.md").read_text().startswith("| stage | seconds | status |")
    planned = dict(line.split("\t") for line in (tmp_path / "plan.tsv").read_text().splitlines()[1:])
    assert {"tiny-resume", "qwen-train", "qwen-resume", "qwen-check"} <= set(planned)  # ZeRO-3 run, then resumed
    total = sum(int(v) for v in planned.values())
    assert total <= 480 and f"-> {total} s of 480 s" in proc.stdout
    zero3 = (tmp_path / "logs" / "qwen-train-dry.log").read_text()
    assert "accelerate launch --num_processes 1 --config_file configs/accelerate/zero3.yaml" in zero3
