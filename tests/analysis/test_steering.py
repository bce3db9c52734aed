"""The KV-cached token-conditional steering loop: exactness at scale 0, equality with the naive protocol, rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analysis.steering.loop import ParenCounter, SteerRule, naive_steered_generate, steered_generate, trigger_vocab
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


def _everything_triggers(voc):  # noqa: ANN001, ANN202
    """A vocabulary table in which every token is an attempt-line "(": the rule then fires on random models."""
    from analysis.steering.loop import TriggerVocab

    n = len(voc.paren)
    return TriggerVocab(
        torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    )


@pytest.mark.parametrize("which", ["digit_dir", "qwen_dir"])
def test_before_paren_lookahead_equals_full_recompute(which: str, request: pytest.FixtureRequest) -> None:
    """The lookahead drops the cached position, re-runs it with the vector and keeps its K/V: every new token is
    what a full uncached forward of the final sequence, with the vector at the marked positions, predicts."""
    from analysis.hooks import MaskHolder, add_to_residual

    model, tok = load(request.getfixturevalue(which))
    enc = _enc(tok, PROMPTS[:2])
    torch.manual_seed(3)
    vec = {2: 10 * torch.randn(model.config.hidden_size)}
    voc = _everything_triggers(trigger_vocab(tok))
    rule = SteerRule(every=3, position="before_paren", in_prompt=False)
    out, steered = steered_generate(model, enc.input_ids, enc.attention_mask, vec, voc, rule, 16, -1, tok.pad_token_id)
    assert out.shape[1] == 16
    # every prompt token after the first (which has no "=" before it) counts as a "(" too: new token i is "("
    # number P + i, and the vector goes on the token before each 3rd one
    for b, n_prompt in enumerate(enc.attention_mask.sum(1).tolist()):
        want = [i - 1 for i in range(1, 16) if (n_prompt + i) % 3 == 0]
        assert steered[b].nonzero().flatten().tolist() == want
    seq = torch.cat([enc.input_ids, out], 1)
    mask = torch.cat([enc.attention_mask, torch.ones_like(out)], 1)
    where = torch.cat([torch.zeros_like(enc.input_ids, dtype=torch.bool), steered], 1)
    where[:, enc.input_ids.shape[1] - 1] = enc.attention_mask.sum(1) % 3 == 0  # applied at the prompt's end, unmarked
    holder = MaskHolder()
    holder.mask = where.float()
    with torch.no_grad(), add_to_residual(model, vec, holder):
        logits = model(input_ids=seq, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    t = enc.input_ids.shape[1]
    assert logits[:, t - 1 : -1].argmax(-1).tolist() == out.tolist()
    plain, none = steered_generate(model, enc.input_ids, enc.attention_mask, {}, voc, rule, 16, -1, tok.pad_token_id)
    assert plain.tolist() != out.tolist()
    zero = {2: torch.zeros(model.config.hidden_size)}
    same, _ = steered_generate(model, enc.input_ids, enc.attention_mask, zero, voc, rule, 16, -1, tok.pad_token_id)
    assert same.tolist() == plain.tolist()  # scale 0: the lookahead changes nothing


def test_before_paren_line_keeps_its_ordinal_without_paren(digit_dir: Path) -> None:
    """A steered line that no longer writes "(" still counts, so the next steered line is the k-th after it."""
    model, tok = load(digit_dir)
    voc = trigger_vocab(tok)
    c = ParenCounter(1, voc, SteerRule(every=2), torch.device("cpu"))
    live = torch.ones(1, dtype=torch.bool)
    for t in tok("- 1 + 2 = 3", add_special_tokens=False, return_tensors="pt").input_ids[0]:
        c.step(t[None], live, True)
    paren = tok(" (", add_special_tokens=False).input_ids[-1]
    assert bool(c.next_is_steered(torch.tensor([paren]), live, True)) is False  # 1st "(" of every 2nd
    c.count += 1
    assert bool(c.next_is_steered(torch.tensor([paren]), live, True)) is True


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
    from analysis.steering.evaluate import continue_prefixes

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
    from analysis.steering.free_generation import _accepted_wrong
    from tasks.countdown.generate import Problem

    wrong, acc, _, _ = _accepted_wrong(completion, Problem((44, 19, 35), 28), set())
    assert (wrong, acc) == want


def test_steered_lines_are_found_by_offset_with_or_without_paren() -> None:
    """A steered token inside a line makes it a steered line, whether the line kept its "(" (paren position) or
    was accepted without one (before_paren: "= 52! Yes, we got it!")."""
    from analysis.steering.free_generation import _accepted_wrong
    from tasks.countdown.generate import Problem

    p = Problem((44, 19, 35), 28)
    text = "\n- 44 + 35 - 19 = 60 (not 28)\n- 44 + 35 - 19 = 52! Yes, we got it!\n"
    second = text.index("52")
    assert _accepted_wrong(text, p, {second}) == (2, 1, 1, 1)
    assert _accepted_wrong(text, p, {text.index("(")}) == (2, 1, 1, 0)
    assert _accepted_wrong(text, p, {len(text)}) == (2, 1, 0, 0)  # past every line: nothing steered


def test_free_summary_pools_draws_and_resamples_problems() -> None:
    import numpy as np

    from analysis.steering.free_generation import summarise_free

    # two draws over 3 problems: success 1/6, one of 4 wrong lines accepted
    rows = np.array(
        [
            [1, 1, 1, 0, 1, 0],
            [0, 1, 1, 1, 1, 1],
            [0, 0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0],
            [0, 1, 1, 0, 1, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        dtype=float,
    )
    m = summarise_free(rows, np.tile(np.arange(3), 2))
    assert m["completions"] == 6 and m["success"] == pytest.approx(1 / 6)
    assert m["format"] == pytest.approx(4 / 6) and m["wrong_accepted"] == pytest.approx(1 / 4)
    assert m["steered_wrong_accepted"] == pytest.approx(1 / 3) and m["steered_wrong_lines"] == 3
    for key in ("success", "format", "wrong_accepted", "steered_wrong_accepted"):
        ci = m[f"{key}_ci"]
        assert ci["groups"] == 3 and ci["lo"] <= m[key] <= ci["hi"]
    empty = summarise_free(np.zeros((0, 6)), np.zeros(0, dtype=int))
    assert empty["success"] is None and empty["wrong_accepted_ci"] is None


@pytest.mark.parametrize("which", ["digit_dir", "qwen_dir"])
def test_token_starts_match_prefix_decodes(which: str, request: pytest.FixtureRequest) -> None:
    from analysis.steering.free_generation import _token_starts

    _, tok = load(request.getfixturevalue(which))
    ids = tok("\n- 44 + 35 - 19 = 52 (not 28)\n- 9 = 9 (this works)</think>", add_special_tokens=False).input_ids
    assert _token_starts(tok, ids) == [len(tok.decode(ids[:j], skip_special_tokens=True)) for j in range(len(ids))]
    assert _token_starts(tok, []) == []


@pytest.mark.parametrize("rule", [SteerRule(every=0, mode="from_kth"), SteerRule(every=1, position="before_paren")])
def test_one_batched_generation_with_a_vector_per_row_equals_one_per_condition(
    rule: SteerRule, digit_dir: Path
) -> None:
    """Free generation runs every condition in one batch (a vector per row): the texts and steered offsets are
    those of one generation per condition."""
    from analysis.steering.free_generation import generate_steered
    from tasks.countdown.generate import Problem

    model, tok = load(digit_dir)
    probs = [Problem((3, 5, 7), 16), Problem((12, 34, 6), 52), Problem((9, 2, 4), 9)]
    torch.manual_seed(0)
    conds = [{2: torch.zeros(model.config.hidden_size)}] + [
        {2: 30 * torch.randn(model.config.hidden_size)} for _ in range(2)
    ]
    vocab = trigger_vocab(tok)
    each = [generate_steered(model, tok, probs, c, vocab, rule, 24, 8) for c in conds]
    stacked = {2: torch.stack([c[2] for c in conds for _ in probs])}
    texts, offsets = generate_steered(model, tok, probs * len(conds), stacked, vocab, rule, 24, 5)
    assert texts == [t for ts, _ in each for t in ts]
    assert offsets == [o for _, os_ in each for o in os_]
    if rule.mode == "from_kth":  # every token steered (k = 0): the vectors act
        assert texts[:3] != texts[3:6] and all(offsets[3:])


@pytest.mark.parametrize("rule", [SteerRule(every=0, mode="from_kth"), SteerRule(every=1, position="before_paren")])
def test_finished_rows_leave_the_batch_without_changing_the_others(rule: SteerRule, digit_dir: Path) -> None:
    """Rows that wrote EOS are dropped from the batch (and the KV cache) as they finish; every row's tokens, and the
    per-row vector each keeps, are those of a run where nothing is dropped, cut after its first EOS."""
    model, tok = load(digit_dir)
    prompts = PROMPTS + ["- 4 + 4 = 8 (", "<think> We have 1, 2"]
    enc = _enc(tok, prompts)
    torch.manual_seed(3)
    vec = {2: 20 * torch.randn(len(prompts), model.config.hidden_size)}
    voc = _everything_triggers(trigger_vocab(tok)) if rule.position == "before_paren" else trigger_vocab(tok)
    args = (model, enc.input_ids, enc.attention_mask, vec, voc, rule, 30)
    full, full_steered = steered_generate(*args, -1, tok.pad_token_id)
    # an "EOS" that the rows write at different steps (some never): rows finish one by one
    counts = torch.bincount(full.flatten())
    eos = int(max(range(len(counts)), key=lambda t: (0 < int((full == t).any(1).sum()) < len(prompts), counts[t])))
    assert 0 < int((full == eos).any(1).sum()) < len(prompts)
    out, steered = steered_generate(*args, eos, tok.pad_token_id)
    for r in range(len(prompts)):
        row = full[r].tolist()
        cut = row.index(eos) + 1 if eos in row else len(row)
        assert out[r, :cut].tolist() == row[:cut]
        # (before_paren marks a token whose *successor* was re-run steered: an EOS has none)
        assert steered[r, : cut - 1].tolist() == full_steered[r, : cut - 1].tolist()
        assert set(out[r, cut:].tolist()) <= {tok.pad_token_id}
        assert not steered[r, cut:].any()
