"""Each steering rule puts the vector on exactly the positions it names: a table of token sequences over a small
fake vocabulary, then the generation loops on tiny random Qwen2 models (zero vectors: the marks are the table's;
nonzero: the KV-cached released rule equals the released full-recompute loop token for token)."""

from __future__ import annotations

import pytest
import torch

from analysis.steering.loop import SteerRule, TriggerVocab, rule_positions, steered_generate, trigger_vocab
from analysis.steering.released import naive_released_generate
from tasks.config import ConfigError
from tests.analysis.conftest import load

# fake vocabulary: 0 "x", 1 " =", 2 " (", 3 "(", 4 "\n"
X, EQ, SP, BARE, NL = range(5)
FAKE = TriggerVocab(
    paren=torch.tensor([False, False, True, True, False]),
    eq=torch.tensor([False, True, False, False, False]),
    newline=torch.tensor([False, False, False, False, True]),
    open_paren=torch.tensor([False, False, True, False, False]),
)
POST = SteerRule(every=3, mode="every_kth", position="before_paren")
PAREN = SteerRule(every=3, mode="every_kth", position="paren")
FROM = SteerRule(every=3, mode="from_kth")
RELEASED = SteerRule(every=3, mode="released", position="before_paren")

# six attempt lines "= ( x \n" after a one-token prompt: every "(" is an attempt-line " ("
SIX = [X] + [EQ, SP, X, NL] * 6 + [X]
# prompt "= ( \n"; then " (" on a line without "=" (released counts it, attempt-line rules do not), a bare "(" on an
# attempt line (attempt-line rules count it, released does not), and two attempt-line " (" on one line
MIXED = [EQ, SP, NL] + [SP, X, NL, EQ, BARE, X, NL, EQ, SP, X, SP, X, NL, X]
SHORT = [X, EQ, SP, X, NL, EQ, SP, X]  # two " (": no rule reaches k = 3

TABLE = [
    (SIX, 1, PAREN, [10, 22]),
    (SIX, 1, POST, [9, 21]),  # the post: exactly the positions predicting the 3rd and 6th "("
    (SIX, 1, FROM, list(range(10, 25))),  # from the 3rd "(" itself on
    (SIX, 1, RELEASED, list(range(9, 25))),  # from the position predicting the 3rd " (" on, every position
    (MIXED, 3, PAREN, [11]),  # the prompt's "(" is the 1st, the bare "(" the 2nd
    (MIXED, 3, POST, [10]),
    (MIXED, 3, FROM, list(range(11, 16))),
    (MIXED, 3, RELEASED, list(range(12, 16))),  # " (" at 3, 11, 13 (the prompt's not counted, the bare "(" not)
    (MIXED, 3, SteerRule(every=1, position="paren"), [1, 7, 11, 13]),
    (MIXED, 3, SteerRule(every=1, position="paren", in_prompt=False), [7, 11, 13]),  # the prompt's "(" still counts
    (MIXED, 3, SteerRule(every=2, position="before_paren", in_prompt=False), [6, 12]),
    (SHORT, 1, PAREN, []),
    (SHORT, 1, POST, []),
    (SHORT, 1, FROM, []),
    (SHORT, 1, RELEASED, []),
    (SIX, 1, SteerRule(every=1, mode="released", position="before_paren"), list(range(1, 25))),
]


@pytest.mark.parametrize(("ids", "prompt_len", "rule", "want"), TABLE)
def test_rule_positions_table(ids: list[int], prompt_len: int, rule: SteerRule, want: list[int]) -> None:
    assert rule_positions(rule, ids, FAKE, prompt_len) == want


def test_released_rule_needs_the_before_paren_position() -> None:
    with pytest.raises(ConfigError, match="steering.position"):
        SteerRule(mode="released", position="paren")
    with pytest.raises(ConfigError, match="steering.mode"):
        SteerRule(mode="sometimes")


def test_released_trigger_is_the_exact_space_paren_token(qwen_dir) -> None:  # noqa: ANN001
    _, tok = load(qwen_dir)
    voc = trigger_vocab(tok)
    assert voc.open_paren is not None
    assert {tok.decode([i]) for i in voc.open_paren.nonzero().flatten().tolist()} == {" ("}
    assert bool((voc.paren & ~voc.open_paren).any())  # "(" alone and " (+," count for the attempt-line rules only


def _table_vocab(n: int, seed: int) -> TriggerVocab:
    """A random trigger table over a real model's vocabulary, so random-weight models hit every rule."""
    g = torch.Generator().manual_seed(seed)
    paren = torch.rand(n, generator=g) < 0.35
    return TriggerVocab(
        paren=paren,
        eq=torch.rand(n, generator=g) < 0.5,
        newline=torch.rand(n, generator=g) < 0.1,
        open_paren=paren & (torch.rand(n, generator=g) < 0.7),
    )


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


PROMPTS = ["- 3 * 7 - 5 = 16 (not 22)\n- 12 + 34 = 52 (", "<think> We have 3, 5, 7.", "x"]


@pytest.fixture(scope="module", params=["digit_dir", "qwen_dir"])
def varied(request: pytest.FixtureRequest):  # noqa: ANN201
    """A tiny random Qwen2 whose weight matrices are redrawn at std 0.2: at the default 0.02 greedy decoding
    repeats one token forever, and no rule would be tested past its first trigger."""
    model, tok = load(request.getfixturevalue(request.param))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    tok.padding_side = "left"
    return model, tok


@pytest.mark.parametrize("rule", [POST, PAREN, FROM, RELEASED], ids=["post", "paren", "from_kth", "released"])
def test_generation_marks_are_the_rule_positions(rule: SteerRule, varied) -> None:  # noqa: ANN001
    """With zero vectors nothing changes a token, so the loop's marks on new tokens are the rule's positions on the
    finished sequence (the prompt's last position is applied, never marked; ``paren`` and ``from_kth`` also mark a
    final token that would carry the vector if it were fed)."""
    model, tok = varied
    d = model.config.hidden_size
    for seed in range(2):
        voc = _table_vocab(model.config.vocab_size, seed)
        for prompt in PROMPTS:
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            zero = {2: torch.zeros(d)}
            out, steered = steered_generate(model, ids, torch.ones_like(ids), zero, voc, rule, 24, -1, 0)
            seq, t = ids[0].tolist() + out[0].tolist(), ids.shape[1]
            want = [p - t for p in rule_positions(rule, seq, voc, t) if p >= t]
            marks = steered[0, :-1].nonzero().flatten().tolist()  # the last new token is never fed
            assert marks == want


def test_cached_released_rule_equals_the_released_full_recompute(varied) -> None:  # noqa: ANN001
    """Batched, left-padded, KV-cached (steered positions re-fed clean) vs the released loop, one prompt at a time
    with a full unsteered and a full last-position-steered forward per step: the same tokens."""
    model, tok = varied
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    d = model.config.hidden_size
    torch.manual_seed(5)
    vec = {1: 12 * torch.randn(d), 2: 12 * torch.randn(d)}
    changed = 0
    for seed in range(2):
        voc = _table_vocab(model.config.vocab_size, seed)
        out, _ = steered_generate(model, enc.input_ids, enc.attention_mask, vec, voc, RELEASED, 20, -1, 0)
        plain, _ = steered_generate(model, enc.input_ids, enc.attention_mask, {}, voc, RELEASED, 20, -1, 0)
        for r, prompt in enumerate(PROMPTS):
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            ref = naive_released_generate(model, ids, vec, voc, RELEASED, 20)
            assert out[r].tolist() == ref[0].tolist()
            changed += out[r].tolist() != plain[r].tolist()
    assert changed > 0  # the vector acted somewhere


def test_released_rows_that_finish_leave_the_batch_without_changing_the_others(varied) -> None:  # noqa: ANN001
    """Per-row vectors (one condition per row, as free generation batches them) and rows dropped at EOS: every
    row's tokens and marks are those of a run where nothing is dropped, cut after its first EOS."""
    model, tok = varied
    prompts = PROMPTS + ["- 4 + 4 = 8 (", "<think> We have 1, 2"]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(3)
    vec = {2: 12 * torch.randn(len(prompts), model.config.hidden_size)}
    voc = _table_vocab(model.config.vocab_size, 0)
    args = (model, enc.input_ids, enc.attention_mask, vec, voc, RELEASED, 30)
    full, full_marks = steered_generate(*args, -1, 0)
    assert full_marks.any()
    counts = torch.bincount(full.flatten())
    eos = int(max(range(len(counts)), key=lambda t: (0 < int((full == t).any(1).sum()) < len(prompts), counts[t])))
    out, marks = steered_generate(*args, eos, 0)
    for r in range(len(prompts)):
        row = full[r].tolist()
        cut = row.index(eos) + 1 if eos in row else len(row)
        assert out[r, :cut].tolist() == row[:cut]
        assert marks[r, : cut - 1].tolist() == full_marks[r, : cut - 1].tolist()
