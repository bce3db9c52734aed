"""The tiny base's tokenizer: a byte-level BPE with isolated digits (like Qwen2's), built on the corpus itself.

Why by hand: no hub tokenizer can be downloaded here, and the tiny base needs one whose ids survive the reload
through ``AutoTokenizer`` that RL, evaluation and analysis do (:func:`check_reload`). The verdict words' ids are
found here too, through the tokenizer's own offsets, for every module that reads P("this").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EOS = "<|endoftext|>"
PAD = "<|pad|>"


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
