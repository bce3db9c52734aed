"""The offline tiny base model: a digit-level tokenizer, a small Qwen2, and pre-training on synthetic traces.

Why this exists: the tiny preset needs a base model that already writes the structured R1-Zero format (attempt
lines with "(not T)" / "(this works)" verdicts), does the arithmetic of its attempts reasonably well, and checks
them *imperfectly*, so that RL has verification to improve. No hub model can be downloaded here, so we build
one. A tokenizer with one token per digit learns arithmetic far better than whole-number tokens, and ~1M
parameters (4 layers x 128) reach useful behaviour in minutes on 2 cores (docs/experiments.md).

The tokenizer is a byte-level BPE (like Qwen's) whose pre-tokenizer isolates every digit (as Qwen2's does),
trained on the corpus itself, so the TinyZero prompt's words become single tokens. Pre-training uses
``transformers.Trainer`` for a fixed number of steps (reproducible, unlike a wall-time budget), and the result
is saved with ``save_pretrained`` as a plain HF model directory that AutoModelForCausalLM, AutoTokenizer and
vLLM load.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tasks.config import ConfigError, config_hash, dump_config, to_dict
from tasks.countdown.generate import Problem
from tasks.countdown.search_trace import SearchStyle, write_search_trace
from tasks.countdown.synth import TraceStyle, write_trace
from train.precision import resolve, resolved

EOS = "<|endoftext|>"
PAD = "<|pad|>"


@dataclass(frozen=True)
class BaseConfig:
    """How the tiny base is built: tokenizer, architecture, corpus and pre-training schedule."""

    vocab_size: int = 512
    # > 0: the whole numbers 0..number_tokens-1 are one token each, so "is the stated value the target?" is one
    # token matched against another. 0: digits one by one (as Qwen2's own tokenizer splits them)
    number_tokens: int = 0
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 1024
    corpus_traces: int = 40_000
    trace: TraceStyle = field(
        default_factory=lambda: TraceStyle(max_wrong=4, slip_rate=0.05, verdict_noise=0.3, reject_noise=0.1)
    )
    # A corpus whose checking is real (tasks/countdown/search_trace.py) instead of ``trace``'s: attempt lines from
    # the model's own random search, verdicts that follow the arithmetic, few traces that verify. None: ``trace``.
    search: SearchStyle | None = None
    # > 1: the loss on the verdict word (the token after "(") weighs this much more than any other token. The search
    # corpus writes verdicts in few traces, so the check itself gets few examples; a heavier verdict loss teaches
    # the comparison without changing how often a trace verifies (the "(" and the header are weighed as usual).
    verdict_loss_weight: float = 1.0
    # > 0 (search corpus only): first pre-train this many steps on traces that verify at ``prime_verdict_rate``,
    # then ``steps`` on the corpus as configured. The check is learned where it is common, the habit set where it
    # is rare: a base that knows how to verify but seldom does, like a hub model that saw much checking elsewhere.
    prime_steps: int = 0
    prime_verdict_rate: float = 0.5
    # the priming phase's learning rate (None: ``learning_rate``). A check learned in priming is erased by the
    # rare corpus at the priming rate; a lower ``learning_rate`` after it sets the habit and keeps the check
    prime_learning_rate: float | None = None
    steps: int = 2500
    batch_size: int = 8
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    # auto: bf16 autocast where the CPU/GPU computes bf16 natively, float32 elsewhere (train/precision.py). An fp32
    # base and a bf16 base are different models: the resolved value is part of the cache key and of base_dir
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # > 0: batch traces of similar token length (see LengthBucketSampler): pools of this many batches are sorted by
    # length and cut into batches, then all batches are shuffled. Same traces, same steps, less padding to compute
    # (a random batch of 8 pads to 318 tokens for a mean of 267 on the tiny corpus). 0: random batches.
    length_buckets: int = 0
    # attention in float32 inside the bf16 autocast (train/cpu/attention.py): the same model, a faster pre-training pass
    fp32_attention: bool = False
    seed: int = 0


def corpus(problems: list[Problem], cfg: BaseConfig, operators: tuple[str, ...], template: str = "base") -> list[str]:
    """Prompt + synthetic completion + EOS for ``cfg.corpus_traces`` traces drawn over ``problems``."""
    from tasks.countdown.prompts import make_prompt

    rng = random.Random(cfg.seed)
    texts = []
    for _ in range(cfg.corpus_traces):
        p = rng.choice(problems)
        tr = (
            write_trace(p, rng, cfg.trace, operators)
            if cfg.search is None
            else write_search_trace(p, rng, cfg.search, operators)
        )
        texts.append(make_prompt(p.numbers, p.target, template) + tr.completion + EOS)
    return texts


def build_tokenizer(texts: list[str], vocab_size: int, number_tokens: int = 0) -> Any:
    """Byte-level BPE trained on ``texts`` with isolated digits, plus the whole numbers ``0..number_tokens-1`` as
    added tokens; returned as a PreTrainedTokenizerFast.

    Why added tokens and not BPE merges of digits: transformers (5.x) reloads any tokenizer saved beside a
    ``qwen2`` config as ``Qwen2Tokenizer``, whose pre-tokenizer splits every digit apart whatever tokenizer.json
    says, so merged numbers would be trained on and then never seen again. Added tokens are matched before
    pre-tokenization and survive the reload (:func:`check_reload` verifies it on every build).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(str(n), normalized=False, special=False) for n in range(number_tokens)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False
    )


def check_reload(tokenizer: Any, model_config: Any, texts: list[str], where: Path) -> None:
    """Refuse a tokenizer that the loaders would read back differently from how the base is trained.

    RL, evaluation and analysis load the base with ``AutoTokenizer.from_pretrained``, which picks the tokenizer
    class from the model config (``Qwen2Tokenizer`` for a Qwen2 model) and may replace the saved pre-tokenizer;
    a base trained on other token ids than those it is later prompted with writes nonsense.
    """
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(where)
    model_config.save_pretrained(where)
    loaded = AutoTokenizer.from_pretrained(where)
    for text in texts:
        if loaded(text)["input_ids"] != tokenizer(text)["input_ids"]:
            raise RuntimeError(
                f"the base's tokenizer reloads as {type(loaded).__name__} and tokenizes differently from how it was "
                f"built (first difference in {text[:60]!r}); change base.number_tokens or the tokenizer settings"
            )


def build_model(cfg: BaseConfig, tokenizer: Any) -> Any:
    """A randomly initialised Qwen2ForCausalLM of the configured size (tied embeddings)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(cfg.seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(config)


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


def verdict_token_ids(tokenizer: Any) -> tuple[int, int]:
    """Token ids of the verdict word right after "(" in "(this works)" and in "(not N)", found through the
    tokenizer's own offsets on a short attempt line (no id is assumed)."""
    ids = []
    for verdict in ("(this works)", "(not 4)"):
        text = f"- 1 + 2 = 3 {verdict}\n"
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        at = text.index("(") + 1
        found = [t for t, (a, _) in zip(enc.input_ids, enc.offset_mapping, strict=True) if a == at]
        if not found:
            raise ValueError(f"the tokenizer does not split {verdict!r} into '(' and a verdict token")
        ids.append(int(found[0]))
    if ids[0] == ids[1]:
        raise ValueError("'this' and 'not' start with the same token after '('; the verdict margin is undefined")
    return ids[0], ids[1]


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
    """The config of the priming phase (``prime_steps`` on a corpus that verifies at ``prime_verdict_rate``, its
    own seed so its traces differ from the main corpus's), or None without one."""
    if not cfg.prime_steps:
        return None
    if cfg.search is None:
        raise ConfigError("base.prime_steps: priming needs the search corpus (set base.search)")
    search = dataclasses.replace(cfg.search, verdict_rate=cfg.prime_verdict_rate)
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


def _resolve(cfg: BaseConfig) -> BaseConfig:
    """``cfg`` with its precision resolved for the CPU, where the tiny base is always pre-trained (a no-op on a config
    resolved at the door, :func:`train.config.resolve_precision`)."""
    if cfg.precision != "auto":
        return cfg
    return dataclasses.replace(cfg, precision=resolve(cfg.precision, "cpu", "base.precision"))


def _base_key(operators: tuple[str, ...], cfg: BaseConfig, template: str) -> str:
    """The cache key of a base: its config (precision resolved), the template and the operators."""
    base = to_dict(_resolve(cfg))
    if base.get("search") is None:  # bases built before the field existed keep their key
        base.pop("search", None)
    if base.get("verdict_loss_weight") == 1.0:
        base.pop("verdict_loss_weight", None)
    if not base.get("number_tokens"):
        base.pop("number_tokens", None)
    if base.get("prime_learning_rate") is None:
        base.pop("prime_learning_rate", None)
    if not base.get("prime_steps"):
        base.pop("prime_steps", None)
        base.pop("prime_verdict_rate", None)
    return config_hash({"base": base, "template": template, "operators": list(operators)})


def base_is_built(out_dir: str | Path, operators: tuple[str, ...], cfg: BaseConfig, template: str = "base") -> bool:
    """Whether ``out_dir`` holds a complete base built from exactly these inputs (so ``build_base`` reuses it)."""
    info = Path(out_dir) / "base.json"
    return info.is_file() and json.loads(info.read_text()).get("config_hash") == _base_key(operators, cfg, template)


def build_base(
    out_dir: str | Path, problems: list[Problem], operators: tuple[str, ...], cfg: BaseConfig, template: str = "base"
) -> Path:
    """Build the tiny base into ``out_dir`` (cached: a complete directory with the same inputs is reused).

    The cache key covers the base config, the prompt ``template`` its corpus is written in and the operators:
    a base pre-trained on one template has never seen another and answers it with end-of-text. Interrupted
    builds resume from the Trainer's last checkpoint in ``out_dir``.work (only when it was building the same
    inputs); the final directory is renamed into place only when complete.
    """
    out, cfg = Path(out_dir), _resolve(cfg)
    key = _base_key(operators, cfg, template)
    if base_is_built(out, operators, cfg, template):
        return out
    if out.exists():
        raise FileExistsError(
            f"{out} holds a base built from another config (base.*, template or data.operators differ); "
            "delete it or set base_dir to another path"
        )
    t0 = time.perf_counter()
    work = out.with_name(out.name + ".work")
    stamp = work / "inputs.key"
    if work.is_dir() and (not stamp.is_file() or stamp.read_text() != key):
        print(f"{work}: an interrupted build of other inputs; starting this one from scratch")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    texts = corpus(problems, cfg, operators, template)
    primer = priming(cfg)
    prime_texts = corpus(problems, primer, operators, template) if primer else []
    tokenizer = build_tokenizer(texts + prime_texts, cfg.vocab_size, cfg.number_tokens)
    model = build_model(cfg, tokenizer)
    check_reload(tokenizer, model.config, texts[:200], work / "tokenizer")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny base: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}, {len(texts)} traces")
    if cfg.fp32_attention:
        from train.cpu import use_fp32_attention

        use_fp32_attention(model)
    if primer:
        prime(model, tokenizer, prime_texts, primer, work / "primed")
    stats = pretrain(model, tokenizer, texts, cfg, work / "trainer")
    if cfg.fp32_attention:
        model.set_attn_implementation("sdpa")  # what the saved config.json names: loaders need no registration
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    dump_config(cfg, staging / "base_config.yaml")
    meta = {
        "config_hash": key,
        "template": template,
        "operators": list(operators),
        "parameters": n_params,
        "seconds": time.perf_counter() - t0,
        **stats,
    }
    (staging / "base.json").write_text(json.dumps(meta, indent=2) + "\n")
    staging.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    return out
