"""The KV-cached token-conditional steering loop: exactness at scale 0, equality with the naive protocol, rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analysis.steering import ParenCounter, SteerRule, naive_steered_generate, steered_generate, trigger_vocab
from tests.analysis.conftest import load

PROMPTS = [
    "<think> We have 3, 5, 7.\n- 3 * 7 - 5 = 16 (not 22)\n- 12 + 34 = 52 (",
    "- 3 * 5 + 7 = 22 (this works)\n- 9 = 9 (",
    "x",
]


def _enc(tok, prompts):  # noqa: ANN001, ANN202
    tok.padding_side = "left"
    return tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


@pytest.mark.parametrize("which", ["digit_dir", "qwen_dir"])
def test_scale_zero_reproduces_unsteered_generation(which: str, request: pytest.FixtureRequest) -> None:
    model, tok = load(request.getfixturevalue(which))
    enc = _enc(tok, PROMPTS)
    d = model.config.hidden_size
    out, steered = steered_generate(
        model,
        enc.input_ids,
        enc.attention_mask,
        {1: torch.zeros(d), 2: torch.zeros(d)},
        trigger_vocab(tok),
        SteerRule(every=1),
        40,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    ref = model.generate(**enc, do_sample=False, max_new_tokens=40, pad_token_id=tok.pad_token_id)
    ref = ref[:, enc.input_ids.shape[1] :]
    for a, b in zip(out.tolist(), ref.tolist(), strict=True):
        n = min(len(a), len(b))
        assert a[:n] == b[:n]


@pytest.mark.parametrize("which", ["digit_dir", "qwen_dir"])
def test_cached_steering_equals_naive_full_rerun(which: str, request: pytest.FixtureRequest) -> None:
    model, tok = load(request.getfixturevalue(which))
    enc = _enc(tok, PROMPTS[:2])
    torch.manual_seed(1)
    vec = {2: 8 * torch.randn(model.config.hidden_size)}
    voc, rule = trigger_vocab(tok), SteerRule(every=1)
    fast, steered = steered_generate(model, enc.input_ids, enc.attention_mask, vec, voc, rule, 24, -1, tok.pad_token_id)
    slow = naive_steered_generate(model, enc.input_ids, enc.attention_mask, vec, voc, rule, 24)
    assert fast.tolist() == slow.tolist()
    unsteered, _ = steered_generate(model, enc.input_ids, enc.attention_mask, {}, voc, rule, 24, -1, tok.pad_token_id)
    assert unsteered.tolist() != fast.tolist()  # both prompts end in a steered "(": the vector mattered


@pytest.mark.parametrize("which", ["digit_dir", "qwen_dir"])
def test_counter_rules_every_kth_and_from_kth(which: str, request: pytest.FixtureRequest) -> None:
    _, tok = load(request.getfixturevalue(which))
    text = "a (b)\n" + "".join(f"- {i} + 1 = {i + 1} (not 9)\n" for i in range(7))  # 7 attempt-line parens
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    voc = trigger_vocab(tok)

    def hits(rule: SteerRule) -> list[bool]:
        c = ParenCounter(1, voc, rule, torch.device("cpu"))
        return [bool(c.step(t[None], torch.ones(1, dtype=torch.bool), True)) for t in ids]

    def steered_ordinals(rule: SteerRule) -> list[int]:
        return [int(n) for n, h in zip(_counts(ids, voc), hits(rule), strict=True) if h]

    assert steered_ordinals(SteerRule(every=3)) == [3, 6]
    # from_kth (the released code): every token from the 3rd attempt-line "(" on, not only the parens
    counts = _counts(ids, voc)
    assert hits(SteerRule(every=3, mode="from_kth")) == [n >= 3 for n in counts]
    assert sum(hits(SteerRule(every=3, mode="from_kth"))) > 5
    assert steered_ordinals(SteerRule(every=1)) == list(range(1, 8))  # the "(" of "a (b)" has no "=": not counted


def _counts(ids: torch.Tensor, voc) -> list[int]:  # noqa: ANN001
    c = ParenCounter(1, voc, SteerRule(every=1), torch.device("cpu"))
    out = []
    for t in ids:
        c.step(t[None], torch.ones(1, dtype=torch.bool), True)
        out.append(int(c.count))
    return out


def test_qwen_tokenizer_trigger_is_space_paren(qwen_dir: Path) -> None:
    _, tok = load(qwen_dir)
    voc = trigger_vocab(tok)
    names = {tok.decode([i]) for i in torch.nonzero(voc.paren).flatten().tolist()}
    assert " (" in names and all("(" in n for n in names)


def test_trigger_vocab_covers_padding_rows_of_the_embedding(qwen_dir: Path) -> None:
    """A model's embedding can have more rows than its tokenizer has tokens (hub Qwen models do): those ids exist
    in the tables and never trigger, and the tokenizer's own ids are unchanged."""
    _, tok = load(qwen_dir)
    own, padded = trigger_vocab(tok), trigger_vocab(tok, len(tok) + 7)
    for a, b in ((own.paren, padded.paren), (own.eq, padded.eq), (own.newline, padded.newline)):
        assert len(b) == len(a) + 7 and torch.equal(b[: len(a)], a) and not b[len(a) :].any()
    assert own.paren.any() and own.eq.any()


@pytest.mark.parametrize("which", ["digit_dir", "qwen_dir"])
def test_flip_continuations_reuse_prefix_cache_exactly(which: str, request: pytest.FixtureRequest) -> None:
    """The sweep's shared-prefix KV reuse gives the same tokens as a fresh steered generation per condition."""
    from analysis.steer_eval import continue_prefixes

    model, tok = load(request.getfixturevalue(which))
    prefixes = [PROMPTS[0], PROMPTS[1]]
    torch.manual_seed(2)
    vec = {2: 12 * torch.randn(model.config.hidden_size)}
    got = continue_prefixes(model, tok, prefixes, [{}, vec], new_tokens=6, batch_size=8)
    enc = _enc(tok, prefixes)
    last = torch.zeros_like(enc.input_ids, dtype=torch.bool)
    last[:, -1] = True
    for cond, texts in zip([{}, vec], got, strict=True):
        ref, _ = steered_generate(
            model,
            enc.input_ids,
            enc.attention_mask,
            cond,
            trigger_vocab(tok),
            SteerRule(in_prompt=False, in_generation=False),
            6,
            -1,
            tok.pad_token_id,
            prompt_mask=last,
        )
        assert texts == tok.batch_decode(ref, skip_special_tokens=True)
    assert got[0] != got[1]


@pytest.mark.parametrize(
    ("completion", "want"),
    [
        # the original study's steered lines: accepted without "(" count as accepting the wrong line
        ("\n- 44 + 35 - 19 = 52! Yes, we got it!\n", (1, 1)),
        ("\n- 8 * 8 + 2 = 28 exactly!\n", (1, 1)),
        ("\n- 44 + 35 - 19 = 28 (this works)\n", (1, 1)),
        ("\n- 44 + 35 - 19 = 60 (not 28)\n", (1, 0)),
        ("\n- 44 + 35 - 19 = 28\n</think>\n<answer> 44 + 35 - 19 </answer>", (1, 1)),  # answered right after it
        ("\n- 44 + 35 - 19 = 60\n- 44 * 35 - 19 = 1521\n", (0, 0)),  # no verdict in any form: not counted
        ("\n- 44 + 19 - 35 = 28 (this works)\n", (0, 0)),  # a right line is not a wrong one
    ],
)
def test_free_generation_counts_acceptance_in_any_form(completion: str, want: tuple[int, int]) -> None:
    from analysis.steer_eval import _accepted_wrong
    from tasks.countdown.generate import Problem

    wrong, acc, _, _ = _accepted_wrong(completion, Problem((44, 19, 35), 28), set())
    assert (wrong, acc) == want
