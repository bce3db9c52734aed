"""Pre-training the tiny base: ``transformers.Trainer`` for exactly ``steps`` optimizer steps, resumable.

A fixed number of steps keeps builds reproducible (a wall-time budget would not). Two options change the loss or the
batches, and transformers offers neither: length-bucketed batches in random order (:class:`LengthBucketSampler`)
and a heavier loss on the verdict word (:func:`verdict_weighted`). An optional priming phase (:func:`priming`,
:func:`prime`) teaches the check on a corpus that verifies often before the rare corpus sets the habit.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.config import ConfigError
from train.base_tokenizer import verdict_token_ids
from train.precision import resolved

if TYPE_CHECKING:
    from train.base import BaseConfig


class LengthBucketSampler:
    """Trace indices in batches of similar length, the batches in random order (a ``torch`` Sampler).

    Why not transformers' ``group_by_length``: its ``LengthGroupedSampler`` yields each pool's batches longest
    first, so every 50 steps the model sees the longest traces, then ever shorter ones (a curriculum nobody asked
    for). Here only a batch's members are alike; the order of batches is as random as with no grouping. Seeded, so
    a resumed build sees the same order. Off in the tiny preset: the bases it built were weaker (docs/experiments.md).
    """

    def __init__(self, lengths: list[int], batch_size: int, pool_batches: int, seed: int) -> None:
        self.lengths, self.batch_size, self.pool, self.seed, self.epoch = lengths, batch_size, pool_batches, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Any:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            pool = sorted(order[start : start + size], key=self.lengths.__getitem__)
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        rng.shuffle(batches)
        return iter([i for batch in batches for i in batch])


def base_trainer(model: Any, tokenizer: Any, texts: list[str], cfg: BaseConfig, work_dir: Path) -> Any:
    """The ``transformers.Trainer`` that pre-trains the base: causal LM loss, exactly ``cfg.steps`` optimizer steps."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    # the Rust tokenizer's batch encoder without offsets: the same ids as ``tokenizer(texts, truncation=True)``
    # (a test checks) in ~5 s for the tiny corpus instead of ~13 s through ``Dataset.map``
    ids = [e.ids[: cfg.max_position_embeddings] for e in tokenizer.backend_tokenizer.encode_batch_fast(texts)]
    lengths = [len(x) for x in ids]
    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * n for n in lengths], "length": lengths})
    args = TrainingArguments(
        output_dir=str(work_dir),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.95,
        bf16=resolved(cfg.precision, "base.precision") == "bf16",
        use_cpu=True,
        logging_steps=100,
        save_strategy="steps",
        save_steps=500,
        save_total_limit=1,
        report_to=[],
        seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer_cls = Trainer
    if cfg.length_buckets > 0:
        sampler = LengthBucketSampler(lengths, cfg.batch_size, cfg.length_buckets, cfg.seed)

        # every token weighs the same in every batch, as on average with random batches: the loss is summed over a
        # batch's tokens and divided by the corpus's mean tokens per batch, not by this batch's own count (which
        # would weigh the tokens of a batch of short traces more than those of a batch of long ones)
        items_per_batch = cfg.batch_size * (sum(lengths) / len(lengths) - 1)

        class BucketedTrainer(Trainer):
            def _get_train_sampler(self, train_dataset: Any = None) -> Any:
                return sampler

            def _get_num_items_in_batch(self, batch_samples: list[Any], device: Any) -> Any:
                import torch

                counted = super()._get_num_items_in_batch(batch_samples, device)
                if counted is None:
                    return None
                return torch.as_tensor(items_per_batch * len(batch_samples), dtype=torch.float32, device=counted.device)

        trainer_cls = BucketedTrainer
    if cfg.verdict_loss_weight != 1.0:
        trainer_cls = verdict_weighted(trainer_cls, tokenizer, cfg.verdict_loss_weight)
    return trainer_cls(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )


def verdict_weighted(trainer_cls: Any, tokenizer: Any, weight: float) -> Any:
    """``trainer_cls`` with a causal LM loss in which predicting the verdict word (a "this" or "not" token right after
    an opening "(") weighs ``weight`` times; normalised by the count of predicted tokens, so ``weight`` 1 is the
    usual mean loss.

    Why by hand: transformers' loss has no per-token weights, and the weights depend on the tokens."""
    import torch

    opens = torch.tensor([tokenizer.decode([i]).endswith("(") for i in range(len(tokenizer))])
    verdicts = torch.zeros(len(tokenizer), dtype=torch.bool)
    verdicts[list(verdict_token_ids(tokenizer))] = True

    class VerdictWeightedTrainer(trainer_cls):
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None):
            labels = inputs.pop("labels")
            out = model(**inputs)
            target = labels[:, 1:]
            logits = out.logits[:, :-1].float()
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="none"
            ).view_as(target)
            counted = target != -100
            after_paren = opens.to(target.device)[inputs["input_ids"][:, :-1]]
            judged = after_paren & verdicts.to(target.device)[target.clamp(min=0)]
            w = torch.where(judged, weight, 1.0) * counted
            denom = num_items_in_batch if num_items_in_batch is not None else counted.sum()
            loss = (ce * w).sum() / denom
            return (loss, out) if return_outputs else loss

    return VerdictWeightedTrainer


def pretrain(model: Any, tokenizer: Any, texts: list[str], cfg: BaseConfig, work_dir: Path) -> dict[str, float]:
    """Pre-train ``model`` (see :func:`base_trainer`), resuming from a checkpoint in ``work_dir`` if one exists."""
    trainer = base_trainer(model, tokenizer, texts, cfg, work_dir)
    resume = any(work_dir.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    return {"train_loss": float(result.training_loss), "steps": float(result.global_step)}


def priming(cfg: BaseConfig) -> BaseConfig | None:
    """The config of the priming phase (``prime_steps`` on a corpus that verifies at ``prime_verdict_rate``, with the
    priming slips where set, its own seed so its traces differ from the main corpus's), or None without one."""
    if not cfg.prime_steps:
        return None
    if cfg.search is None:
        raise ConfigError("base.prime_steps: priming needs the search corpus (set base.search)")
    slips = {"slip_rate": cfg.prime_slip_rate, "slip_target_share": cfg.prime_slip_target_share}
    search = dataclasses.replace(
        cfg.search, verdict_rate=cfg.prime_verdict_rate, **{k: v for k, v in slips.items() if v is not None}
    )
    lr = cfg.learning_rate if cfg.prime_learning_rate is None else cfg.prime_learning_rate
    return dataclasses.replace(
        cfg, steps=cfg.prime_steps, search=search, prime_steps=0, seed=cfg.seed + 1, learning_rate=lr
    )


def prime(model: Any, tokenizer: Any, texts: list[str], cfg: BaseConfig, done: Path) -> None:
    """Run the priming phase on ``model`` in place; its result is saved to ``done`` so that an interrupted build
    resumes after it instead of priming again."""
    import torch

    weights = done / "weights.pt"
    if weights.is_file():
        model.load_state_dict(torch.load(weights))
        return
    pretrain(model, tokenizer, texts, cfg, done.with_name("prime_trainer"))
    done.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), done / "weights.tmp")
    (done / "weights.tmp").replace(weights)
