"""The offline tiny base: a real tokenizer and Qwen2 saved with save_pretrained, cached, digit-level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.countdown.generate import ProblemSpec, generate_problems
from tasks.countdown.prompts import make_prompt
from train.base import BaseConfig, build_base

MICRO = BaseConfig(
    vocab_size=300,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    intermediate_size=64,
    corpus_traces=300,
    steps=6,
    batch_size=4,
    warmup_steps=1,
    precision="fp32",
)
PROBLEMS = generate_problems(
    ProblemSpec(num_operands=(3,), operand_max=20, target_max=None, operators=("+", "-")), 100, seed=0
)


@pytest.fixture(scope="module")
def micro_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_base(tmp_path_factory.mktemp("base") / "micro", PROBLEMS, ("+", "-"), MICRO)


def test_base_loads_with_from_pretrained_and_generates(micro_base: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_base)
    model = AutoModelForCausalLM.from_pretrained(micro_base)
    assert model.config.model_type == "qwen2" and model.config.num_hidden_layers == 2
    prompt = make_prompt([12, 7, 3], 16)
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == enc.input_ids.shape[1] + 5 or tok.eos_token_id in out[0].tolist()
    assert (micro_base / "base.json").is_file() and (micro_base / "base_config.yaml").is_file()
    assert not micro_base.with_name(micro_base.name + ".work").exists()


def test_tokenizer_is_digit_level_and_lossless(micro_base: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_base)
    text = "- 90 - 67 + 60 - 12 = 71 (not 49)\n- 67 + 60 + 12 - 90 = 49 (this works)"
    pieces = tok.convert_ids_to_tokens(tok(text).input_ids)
    assert all(not any(c.isdigit() for c in p) or len(p.strip("Ġ")) == 1 for p in pieces)  # one digit per token
    assert tok.decode(tok(text).input_ids) == text


def test_number_tokens_survive_the_reload_as_one_token_each(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, Qwen2Config

    from train.base_tokenizer import build_tokenizer, check_reload

    texts = ["- 9 + 3 = 12 + 12 = 24 (not 27)\n- 12 + 3 = 15 + 12 = 27 (this works)"] * 50
    tok = build_tokenizer(texts, 300, number_tokens=100)
    check_reload(tok, Qwen2Config(vocab_size=len(tok)), texts, tmp_path)  # raises on any difference
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "Qwen2Tokenizer"  # what the loaders pick for a Qwen2 model
    pieces = loaded.convert_ids_to_tokens(loaded(" 27 (not 99) 120").input_ids)
    assert pieces == ["Ġ", "27", "Ġ(", "not", "Ġ", "99", ")", "Ġ", "12", "0"]
    assert loaded.decode(loaded(texts[0]).input_ids) == texts[0]


def test_a_tokenizer_the_loaders_read_differently_is_refused(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config

    from train.base_tokenizer import check_reload

    texts = ["we need 27 and 12 and 27 again"] * 50
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # merges whole numbers: Qwen2's does not
    raw.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    with pytest.raises(RuntimeError, match="reloads as Qwen2Tokenizer and tokenizes differently"):
        check_reload(tok, Qwen2Config(vocab_size=len(tok)), texts, tmp_path)


def test_base_is_cached_and_never_silently_replaced(micro_base: Path) -> None:
    stamp = (micro_base / "model.safetensors").stat().st_mtime_ns
    assert build_base(micro_base, PROBLEMS, ("+", "-"), MICRO) == micro_base
    assert (micro_base / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="another config"):
        build_base(micro_base, PROBLEMS, ("+", "-"), BaseConfig(steps=7))
    with pytest.raises(FileExistsError, match="template"):  # a base only answers the template it was trained on
        build_base(micro_base, PROBLEMS, ("+", "-"), MICRO, "compact")
    with pytest.raises(FileExistsError, match="another config"):
        build_base(micro_base, PROBLEMS, ("+", "-", "*"), MICRO)


def test_interrupted_build_of_other_inputs_is_not_resumed(tmp_path: Path) -> None:
    out = tmp_path / "micro"
    stale = out.with_name("micro.work") / "trainer" / "checkpoint-5"
    stale.mkdir(parents=True)  # resuming from this empty checkpoint would fail inside the Trainer
    (stale.parent.parent / "inputs.key").write_text("another-config")
    assert build_base(out, PROBLEMS, ("+", "-"), MICRO) == out
    assert (out / "model.safetensors").is_file() and not out.with_name("micro.work").exists()


def test_trainer_sees_the_tokenizers_own_ids(micro_base: Path, tmp_path: Path) -> None:
    """The fast batch encoding feeds the Trainer exactly what ``tokenizer(text)`` gives, truncated to the context."""
    import dataclasses

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.base import corpus
    from train.base_pretrain import base_trainer

    tok = AutoTokenizer.from_pretrained(micro_base)
    model = AutoModelForCausalLM.from_pretrained(micro_base)
    texts = corpus(PROBLEMS, MICRO, ("+", "-"))
    short = dataclasses.replace(MICRO, max_position_embeddings=120)  # shorter than every trace: truncation counts
    for cfg in (MICRO, short):
        ds = base_trainer(model, tok, texts, cfg, tmp_path / str(cfg.max_position_embeddings)).train_dataset
        expected = tok(texts, truncation=True, max_length=cfg.max_position_embeddings)
        assert ds["input_ids"] == expected["input_ids"]
        assert ds["attention_mask"] == expected["attention_mask"]
        assert ds["length"] == [len(ids) for ids in expected["input_ids"]]
    assert max(ds["length"]) == 120 and max(len(tok(t).input_ids) for t in texts) > 120


def test_length_buckets_pad_less_and_keep_every_trace(micro_base: Path, tmp_path: Path) -> None:
    """base.length_buckets: the Trainer's batches hold every trace once, with less padding to compute."""
    import dataclasses

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.base import corpus
    from train.base_pretrain import base_trainer

    tok = AutoTokenizer.from_pretrained(micro_base)
    model = AutoModelForCausalLM.from_pretrained(micro_base)
    texts = corpus(PROBLEMS, MICRO, ("+", "-"))

    mean_len = sum(len(tok(t).input_ids) for t in texts) / len(texts)

    def padded_and_real(buckets: int) -> tuple[int, int]:
        cfg = dataclasses.replace(MICRO, length_buckets=buckets)
        trainer = base_trainer(model, tok, texts, cfg, tmp_path / str(buckets))
        padded = real = 0
        for batch in trainer.get_train_dataloader():
            padded += batch["attention_mask"].numel()
            real += int(batch["attention_mask"].sum())
            # the loss divisor: this batch's label tokens (random batches), the corpus mean per batch (buckets)
            divisor = float(trainer._get_num_items_in_batch([batch], "cpu"))
            own = int(batch["attention_mask"][:, 1:].sum())
            assert divisor == pytest.approx(MICRO.batch_size * (mean_len - 1) if buckets else own, rel=1e-5)
        return padded, real

    random_padded, random_real = padded_and_real(0)
    grouped_padded, grouped_real = padded_and_real(8)
    assert grouped_real == random_real == round(mean_len * len(texts))  # every trace, once
    assert grouped_padded < 0.95 * random_padded


def test_length_bucket_sampler_groups_lengths_but_not_batch_order() -> None:
    import random
    import statistics

    from train.base_pretrain import LengthBucketSampler

    rng = random.Random(1)
    lengths = [rng.randint(200, 400) for _ in range(4000)]
    sampler = LengthBucketSampler(lengths, batch_size=8, pool_batches=64, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(4000)) and len(sampler) == 4000
    batches = [order[i : i + 8] for i in range(0, 4000, 8)]
    spread = statistics.mean(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread < 10  # a random batch of 8 spans ~155 here
    # batch order is random: a batch's mean length says nothing about the next one's (LengthGroupedSampler's
    # pools run longest to shortest, so consecutive batches there correlate ~1)
    means = [statistics.mean(lengths[i] for i in b) for b in batches]
    assert abs(statistics.correlation(means[:-1], means[1:])) < 0.15
    assert list(LengthBucketSampler(lengths, 8, 64, seed=0)) == order  # a resumed build skips into the same order
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_cache_key_holds_the_resolved_precision() -> None:
    """An fp32 base and a bf16 base are different models; ``auto`` is keyed as what it resolves to here."""
    import dataclasses

    from train.base import _base_key
    from train.precision import resolve

    keys = {p: _base_key(("+",), dataclasses.replace(MICRO, precision=p), "base") for p in ("auto", "bf16", "fp32")}
    assert keys["bf16"] != keys["fp32"]
    assert keys["auto"] == keys[resolve("auto")]
    assert _base_key(("+",), dataclasses.replace(MICRO, length_buckets=64), "base") != _base_key(("+",), MICRO, "base")


def test_fp32_attention_base_is_the_same_model_and_saves_plain_sdpa(micro_base: Path, tmp_path: Path) -> None:
    """Without bf16 autocast float32 attention is plain SDPA: the same weights bit for bit; the saved config names no
    custom attention, so transformers and vLLM load it without our registry."""
    import dataclasses
    import json

    from safetensors.torch import load_file

    out = build_base(tmp_path / "fp32", PROBLEMS, ("+", "-"), dataclasses.replace(MICRO, fp32_attention=True))
    ours, plain = load_file(out / "model.safetensors"), load_file(micro_base / "model.safetensors")
    assert ours.keys() == plain.keys() and all(ours[k].equal(plain[k]) for k in ours)
    assert "sdpa_fp32" not in json.dumps(json.loads((out / "config.json").read_text()))


def test_search_corpus_replaces_the_trace_writer_and_old_keys_stay() -> None:
    """base.search switches the corpus to tasks/countdown/search_trace.py (few traces judge, by the arithmetic); a
    config without it keeps the cache key it had before the field existed."""
    import dataclasses

    from tasks.config import config_hash, to_dict
    from tasks.countdown.search_trace import SearchStyle
    from train.base import _base_key, corpus
    from train.precision import resolve

    spec = ProblemSpec(num_operands=(3,), operand_min=1, operand_max=20, operators=("+", "-", "*", "/"))
    problems = generate_problems(spec, 50, seed=0)
    plain = BaseConfig(corpus_traces=400)
    search = dataclasses.replace(plain, search=SearchStyle(verdict_rate=0.1))
    texts = corpus(problems, search, spec.operators)
    judged = sum("(not " in t or "(this works)" in t for t in texts) / len(texts)
    assert 0.04 <= judged <= 0.18 and corpus(problems, search, spec.operators) == texts
    assert texts != corpus(problems, plain, spec.operators)
    newer = (
        "search",
        "verdict_loss_weight",
        "prime_steps",
        "prime_verdict_rate",
        "number_tokens",
        "prime_learning_rate",
        "prime_slip_rate",
        "prime_slip_target_share",
    )  # fields added since
    old = {k: v for k, v in to_dict(plain).items() if k not in newer}
    old["precision"] = resolve(plain.precision, "cpu", "base.precision")
    ops = ("+", "-", "*", "/")
    assert _base_key(ops, plain, "base") == config_hash({"base": old, "template": "base", "operators": list(ops)})
    assert _base_key(ops, search, "base") != _base_key(ops, plain, "base")
    heavy = dataclasses.replace(search, verdict_loss_weight=10.0)
    assert _base_key(ops, heavy, "base") != _base_key(ops, search, "base")


def test_verdict_weighted_loss_is_the_usual_loss_at_weight_one_and_weighs_the_verdict_word(micro_base: Path) -> None:
    """The weighted pre-training loss: the model's own causal LM loss at weight 1; at weight w, the verdict word's
    cross-entropy (the token after "(") counts w times, every other token once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.base_pretrain import verdict_weighted

    tok = AutoTokenizer.from_pretrained(micro_base)
    model = AutoModelForCausalLM.from_pretrained(micro_base)
    text = make_prompt((3, 5, 2), 6) + "\n- 3 + 5 = 8 - 2 = 6 (this works)\nSo the equation is 3 + 5 - 2."
    ids = torch.tensor([tok(text).input_ids])
    row = ids[0].tolist()
    opener = [i for i, t in enumerate(row[:-1]) if tok.decode([t]).endswith("(")]
    paren = [i for i in opener if "this".startswith(tok.decode([row[i + 1]]).strip() or "?")]  # "this" or "th"
    assert len(paren) == 1 and len(opener) > 1  # the prompt has "(" too: not a verdict
    with torch.no_grad():
        own = model(input_ids=ids, labels=ids).loss
        logits = model(input_ids=ids).logits[0, :-1].float()
    ce = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
    for w in (1.0, 5.0):
        trainer = verdict_weighted(object, tok, w)
        loss = trainer.compute_loss(None, model, {"input_ids": ids, "labels": ids.clone()})
        want = (ce.sum() + (w - 1) * ce[paren[0]]) / len(ce)
        assert float(loss) == pytest.approx(float(want), rel=1e-5)
    assert float(verdict_weighted(object, tok, 1.0).compute_loss(None, model, {"input_ids": ids, "labels": ids})) == (
        pytest.approx(float(own), rel=1e-5)
    )


def test_priming_phase_verifies_more_then_hands_over_to_the_configured_corpus(tmp_path: Path) -> None:
    """base.prime_steps: a first phase on traces that verify at prime_verdict_rate (own seed), then the configured
    corpus; the primed weights are kept so an interrupted build does not prime again; a key of its own."""
    import dataclasses

    import torch

    from tasks.config import ConfigError
    from tasks.countdown.search_trace import SearchStyle
    from train.base import _base_key, build_base, corpus
    from train.base_pretrain import priming

    search = dataclasses.replace(MICRO, search=SearchStyle(verdict_rate=0.05, chain=True), corpus_traces=200)
    primed = dataclasses.replace(search, prime_steps=3, prime_verdict_rate=0.9)
    p = priming(primed)
    assert priming(search) is None and p.steps == 3 and p.search.verdict_rate == 0.9 and p.seed != primed.seed
    assert p.learning_rate == primed.learning_rate  # unless prime_learning_rate says otherwise
    fast = dataclasses.replace(primed, prime_learning_rate=0.01, learning_rate=0.001)
    assert (priming(fast).learning_rate, fast.learning_rate) == (0.01, 0.001)
    assert _base_key(("+", "-"), fast, "base") != _base_key(
        ("+", "-"), dataclasses.replace(fast, learning_rate=0.01), "base"
    )
    judged = sum("(this works)" in t or "(not " in t for t in corpus(PROBLEMS, p, ("+", "-"))) / 200
    assert judged > 0.8
    # the priming corpus's own slips where set, the search corpus's otherwise; unset, the key is the one it had
    assert (p.search.slip_rate, p.search.slip_target_share) == (0.05, 0.3)
    slippy = priming(dataclasses.replace(primed, prime_slip_rate=0.2, prime_slip_target_share=1.0))
    assert (slippy.search.slip_rate, slippy.search.slip_target_share) == (0.2, 1.0)
    assert _base_key(("+", "-"), primed, "base") != _base_key(
        ("+", "-"), dataclasses.replace(primed, prime_slip_target_share=1.0), "base"
    )
    assert _base_key(("+", "-"), primed, "base") == _base_key(
        ("+", "-"), dataclasses.replace(primed, prime_slip_target_share=None), "base"
    )
    assert _base_key(("+", "-"), primed, "base") != _base_key(("+", "-"), search, "base")
    with pytest.raises(ConfigError, match="base.prime_steps"):
        priming(dataclasses.replace(MICRO, prime_steps=3))
    out = build_base(tmp_path / "primed", PROBLEMS, ("+", "-"), primed)
    assert (out / "model.safetensors").is_file() and json.loads((out / "base.json").read_text())["config_hash"] == (
        _base_key(("+", "-"), primed, "base")
    )
    # resume: a second priming into the same directory loads the kept weights instead of training again
    from transformers import AutoTokenizer

    from train.base import build_model
    from train.base_pretrain import prime

    tok = AutoTokenizer.from_pretrained(out)
    texts = corpus(PROBLEMS, p, ("+", "-"))
    first, second = build_model(primed, tok), build_model(dataclasses.replace(primed, seed=5), tok)
    prime(first, tok, texts, p, tmp_path / "done")
    assert (tmp_path / "done" / "weights.pt").is_file()
    prime(second, tok, texts, p, tmp_path / "done")
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
