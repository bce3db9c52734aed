"""train.cpu.lean_loss: the lean pass has TRL's loss value and gradient, at a fraction of the rows and columns.

A real TRL ``GRPOTrainer`` (HF rollouts) on a tiny random Qwen2 built and saved here; the batch is built by hand
with TRL's input layout (left-padded prompts, right-padded completions of different lengths, a third of the
advantages exactly 0) so that both passes see the same tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tasks.config import ConfigError
from train.config import load_train_config
from train.cpu.lean_loss import lean_blockers, lean_chunks, lean_trainer_class, shared_prompt_logps

PROMPTS = ["the quick brown", "count down to", "reach a target", "42 with + - * /"]


def make_trainer(model_dir: Path, out: Path, lean: bool, **overrides: Any) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    settings: dict[str, Any] = dict(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=16,
        loss_type="dapo",
        beta=0.0,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        use_vllm=False,
        seed=0,
    )
    rows = overrides.pop("rows_per_chunk", 3)
    settings.update(overrides)
    cls = lean_trainer_class(GRPOTrainer, rows_per_chunk=rows) if lean else GRPOTrainer
    trainer = cls(
        model=str(model_dir),
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=GRPOConfig(**settings),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
    )
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which these tests do not run
    return trainer


def batch(groups: int = 3, size: int = 4, prompt_len: int = 7, width: int = 20, vocab: int = 200) -> dict:
    """TRL's layout: ``groups`` prompts x ``size`` completions; left-padded prompts (the second one shorter),
    right-padded completions, advantages (B,) with one group all 0 and one stray 0, the batch's token count."""
    g = torch.Generator().manual_seed(1)
    rows = groups * size
    prompt_mask = torch.ones(groups, prompt_len, dtype=torch.long)
    prompt_mask[1, :2] = 0
    prompts = torch.randint(3, vocab, (groups, prompt_len), generator=g) * prompt_mask
    lengths = torch.randint(3, width + 1, (rows,), generator=g)
    lengths[0] = width
    completion_mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    advantages = torch.randn(rows, generator=g)
    advantages[size : 2 * size] = 0.0  # a group whose rewards were all equal
    advantages[1] = 0.0
    return {
        "prompt_ids": prompts.repeat_interleave(size, dim=0),
        "prompt_mask": prompt_mask.repeat_interleave(size, dim=0),
        "completion_ids": torch.randint(3, vocab, (rows, width), generator=g) * completion_mask,
        "completion_mask": completion_mask,
        "advantages": advantages,
        "num_items_in_batch": completion_mask.sum(),
    }


def loss_and_grads(trainer: Any, inputs: dict[str, torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


@pytest.mark.parametrize(("rows_per_chunk", "passes"), [(3, 6), (8, 2)])
def test_lean_pass_equals_trl_loss_and_gradient(
    model_dir: Path, tmp_path: Path, rows_per_chunk: int, passes: int
) -> None:
    inputs = batch()
    trl_loss, trl_grads = loss_and_grads(make_trainer(model_dir, tmp_path / "trl", lean=False), inputs)
    lean = make_trainer(model_dir, tmp_path / "lean", lean=True, rows_per_chunk=rows_per_chunk)
    calls = []
    hook = lean.model.base_model.register_forward_hook(lambda m, a, k: calls.append(1))
    lean_loss, lean_grads = loss_and_grads(lean, inputs)
    hook.remove()
    # per chunk (see test_chunks_drop_zero_rows_sort_and_trim): its prompts once, then its completions;
    # 3 rows: 3 chunks of one prompt each; 8 rows: both prompts' 7 rows in one chunk
    assert len(calls) == passes
    assert abs(trl_loss) > 1e-6 and any(g.abs().max() > 1e-6 for g in trl_grads)
    assert lean_loss == pytest.approx(trl_loss, rel=1e-5, abs=1e-7)
    assert len(lean_grads) == len(trl_grads)
    for a, b in zip(lean_grads, trl_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_chunks_drop_zero_rows_sort_and_trim() -> None:
    inputs = batch()
    chunks = lean_chunks(inputs, rows_per_chunk=3)
    # 12 rows, 5 with advantage 0: group 0 keeps 3 rows, group 2 all 4 (split at 3 rows per chunk); pieces that
    # do not fit together stay apart, in order of their longest completion
    assert sorted(len(c["advantages"]) for c in chunks) == [1, 3, 3]
    widths = [c["completion_ids"].shape[1] for c in chunks]
    assert widths == sorted(widths) and widths[-1] == 20 and widths[0] < 20
    kept = torch.cat([c["advantages"] for c in chunks])
    assert bool((kept != 0).all()) and len(kept) == 7
    for c in chunks:
        assert len({tuple(r) for r in c["prompt_ids"].tolist()}) == 1  # one prompt per chunk
        lengths = c["completion_mask"].sum(1).tolist()
        assert lengths == sorted(lengths)
    for c in chunks + lean_chunks(inputs, rows_per_chunk=8):
        assert int(c["completion_mask"].sum(1).max()) == c["completion_ids"].shape[1]  # trimmed to the longest
        assert c["prompt_ids"].shape[1] == 7  # prompt columns kept: positions stay as in TRL's pass
        assert c["num_items_in_batch"] is inputs["num_items_in_batch"]  # the normaliser is the whole batch's
    # room for 8 rows: both groups' 7 rows in one chunk, two prompts
    (whole,) = lean_chunks(inputs, rows_per_chunk=8)
    assert len(whole["advantages"]) == 7 and len({tuple(r) for r in whole["prompt_ids"].tolist()}) == 2
    assert sorted(whole["advantages"].tolist()) == sorted(kept.tolist())
    with pytest.raises(ValueError, match="rows_per_chunk"):
        lean_chunks(inputs, 0)


def test_shared_prompt_pass_matches_trl_logps_and_entropies(model_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer(model_dir, tmp_path / "trl", lean=False)
    inputs = batch(groups=2, size=5)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    width = inputs["completion_ids"].shape[1]
    calls = []
    hook = trainer.model.base_model.register_forward_hook(lambda m, a, k: calls.append(1))
    ref_lp, ref_ent, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, ids, mask, width, compute_entropy=True
    )
    assert len(calls) == 1
    lp, ent = shared_prompt_logps(trainer.model, ids, mask, width, trainer.accelerator.autocast)
    hook.remove()
    assert len(calls) == 1 + 2  # one pass over the two distinct prompts, one over all rows' completions
    scored = inputs["completion_mask"].bool()
    torch.testing.assert_close(lp[scored], ref_lp[scored], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent[scored], ref_ent[scored], rtol=1e-5, atol=1e-5)


def test_all_zero_advantages_keep_one_row_for_a_zero_gradient(model_dir: Path, tmp_path: Path) -> None:
    inputs = batch()
    inputs["advantages"] = torch.zeros_like(inputs["advantages"])
    assert [len(c["advantages"]) for c in lean_chunks(inputs, 4)] == [1]
    loss, grads = loss_and_grads(make_trainer(model_dir, tmp_path / "lean", lean=True), inputs)
    assert loss == 0.0 and all(float(g.abs().max()) == 0.0 for g in grads)


def test_blockers_fall_back_to_trl_loudly(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trainer = make_trainer(model_dir, tmp_path / "grpo", lean=True, loss_type="grpo")
    inputs = batch()
    assert any("loss_type='grpo'" in b for b in lean_blockers(trainer, inputs))
    assert lean_blockers(trainer, {**inputs, "pixel_values": torch.zeros(1)})[-1].startswith("inputs TRL builds")
    loss, _ = loss_and_grads(trainer, inputs)
    assert "using TRL's full loss pass because of loss_type='grpo'" in capsys.readouterr().out
    trl_loss, _ = loss_and_grads(make_trainer(model_dir, tmp_path / "trl", lean=False, loss_type="grpo"), inputs)
    assert loss == pytest.approx(trl_loss, rel=1e-6)


def test_config_rejects_lean_loss_where_it_is_not_exact() -> None:
    assert load_train_config("tiny").grpo.lean_loss
    with pytest.raises(ConfigError, match="grpo.lean_loss: exact only with"):
        load_train_config("tiny", ["grpo.beta=0.001"])
    with pytest.raises(ConfigError, match="grpo.lean_loss_rows"):
        load_train_config("tiny", ["grpo.lean_loss_rows=0"])
    assert not load_train_config("tiny", ["grpo.beta=0.001", "grpo.lean_loss=false"]).grpo.lean_loss
