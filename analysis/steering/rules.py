"""Which positions a steering rule puts the vector on: the trigger vocabulary, the rules, and the "(" counters.

Four rules, with k = ``every``. A *position* is where the vector is added to the residual stream; the token the
model predicts *from* that position is what the vector can change.

* ``every_kth`` + ``paren``: the k-th, 2k-th, ... attempt-line "(" (a "(" after an "=" on the same line) itself,
  so only the verdict word after it can change.
* ``every_kth`` + ``before_paren``: the position that *predicts* each k-th attempt-line "(" (the stated value):
  the original study's post ("for every 3rd occurrence of '('"), so the "(" itself may change ("= 52! Yes, we got
  it!"). Generation finds it by lookahead (run unsteered, see the "(" coming, re-run that position steered).
* ``from_kth``: *every* position from the k-th attempt-line "(" itself on (the "(" included, the position that
  predicted it not). A cumulative rule of this project's own, kept for comparison: it is neither the post's text
  (every k-th "(" only) nor the released code (which starts one position earlier, counts " (" tokens anywhere, and
  leaves the cached earlier positions unsteered; that is ``released``).
* ``released``: the released ``intervene.py``: count the " (" tokens the model *predicts* during generation (the
  exact " (" token, on any line, prompt not counted); from the step that predicts the k-th one on, every step's
  forward pass is steered at its last position only (the step predicting the k-th " (" included, so that " (" may
  change). Its loop recomputed the whole sequence each step with the hook on the last position, so every earlier
  position is unsteered in the context the model attends to; :mod:`analysis.steering.released` reproduces that
  with a KV cache.

Trigger tokens come from decoding the vocabulary, never from hard-coded ids, so Qwen's and the tiny tokenizer's
" (" both work. :func:`rule_positions` states each rule on a finished sequence (the test oracle, and the marks a
zero-vector generation must reproduce).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tasks.config import ConfigError

MODES = ("every_kth", "from_kth", "released")
POSITIONS = ("paren", "before_paren")


@dataclass(frozen=True)
class TriggerVocab:
    """Boolean lookup tables over the vocabulary: does token ``i``'s text contain "(", "=", a newline; is it
    exactly " (" (``open_paren``, the released code's trigger; None: fall back to ``paren``)."""

    paren: torch.Tensor
    eq: torch.Tensor
    newline: torch.Tensor
    open_paren: torch.Tensor | None = None

    def opener(self) -> torch.Tensor:
        """The released rule's counted tokens."""
        return self.paren if self.open_paren is None else self.open_paren

    def to(self, device: torch.device) -> TriggerVocab:
        o = None if self.open_paren is None else self.open_paren.to(device)
        return TriggerVocab(self.paren.to(device), self.eq.to(device), self.newline.to(device), o)


def trigger_vocab(tokenizer: Any, size: int | None = None) -> TriggerVocab:
    """Build the lookup tables by decoding every token id once. ``size`` is the model's vocabulary (embedding
    rows); ids the tokenizer does not have (padding rows of hub models) never trigger."""
    n = size or len(tokenizer)
    texts = [tokenizer.decode([i]) for i in range(min(n, len(tokenizer)))]
    texts += [""] * (n - len(texts))
    return TriggerVocab(
        paren=torch.tensor(["(" in t for t in texts]),
        eq=torch.tensor(["=" in t for t in texts]),
        newline=torch.tensor(["\n" in t for t in texts]),
        open_paren=torch.tensor([t == " (" for t in texts]),
    )


@dataclass(frozen=True)
class SteerRule:
    """Which positions are steered (see the module docstring), with k = ``every``."""

    every: int = 3
    mode: str = "every_kth"  # "every_kth" | "from_kth" | "released"
    position: str = "paren"  # "paren" | "before_paren" (every_kth; released is before_paren by definition)
    in_prompt: bool = True  # also steer qualifying "(" inside the prompt (prefilled text); released: never
    in_generation: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"steering.mode: expected one of {list(MODES)}, got {self.mode!r}")
        if self.position not in POSITIONS:
            raise ConfigError(f"steering.position: expected one of {list(POSITIONS)}, got {self.position!r}")
        if self.mode == "released" and self.position != "before_paren":
            raise ConfigError(
                "steering.position: mode released steers the step that predicts the k-th ' (' (before_paren), "
                f"got {self.position!r}"
            )


class ParenCounter:
    """Per-sequence attempt-line "(" counters and "an = was seen on this line" flags, advanced token by token
    (``every_kth`` and ``from_kth``; ``released`` counts predicted " (" in :mod:`analysis.steering.released`)."""

    def __init__(self, batch: int, vocab: TriggerVocab, rule: SteerRule, device: torch.device) -> None:
        self.count = torch.zeros(batch, dtype=torch.long, device=device)
        self.line_eq = torch.zeros(batch, dtype=torch.bool, device=device)
        self.vocab = vocab.to(device)
        self.rule = rule

    def step(self, tok: torch.Tensor, live: torch.Tensor, allowed: bool) -> torch.Tensor:
        """Advance on token column ``tok`` (batch,) for rows in ``live``; return which rows steer this token."""
        v = self.vocab
        tok = tok.clamp(0, len(v.paren) - 1)
        is_paren = self.is_paren(tok) & live
        self.count += is_paren.long()
        k = self.rule.every
        if self.rule.mode == "every_kth":
            steer = is_paren & (self.count % k == 0) & allowed
        else:
            steer = (self.count >= k) & live & allowed
        self.line_eq |= v.eq[tok] & live
        self.line_eq &= ~(v.newline[tok] & live)
        return steer

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (finished rows dropped from the batch)."""
        self.count, self.line_eq = self.count[keep], self.line_eq[keep]

    def next_is_steered(self, tok: torch.Tensor, live: torch.Tensor, allowed: bool) -> torch.Tensor:
        """Rows where ``tok`` (not yet stepped) would be a "(" that ``every_kth`` steers: the ``before_paren``
        lookahead's trigger."""
        return self.is_paren(tok) & live & ((self.count + 1) % self.rule.every == 0) & allowed

    def is_paren(self, tok: torch.Tensor) -> torch.Tensor:
        """Rows where ``tok`` (not yet stepped) is an attempt-line "("."""
        return self.vocab.paren[tok.clamp(0, len(self.vocab.paren) - 1)] & self.line_eq


def rule_positions(rule: SteerRule, ids: list[int], vocab: TriggerVocab, prompt_len: int) -> list[int]:
    """The positions of the finished sequence ``ids`` (prompt of ``prompt_len`` tokens, then generated tokens)
    that carry the vector under ``rule`` when nothing the vector does changes a token (a zero vector). Positions
    predicting a generated token only (the last token predicts nothing); the prompt counts per ``in_prompt``."""
    last = len(ids) - 1  # the final token is never fed
    if rule.mode == "released":
        opener = vocab.opener()
        hits = [p for p in range(prompt_len, len(ids)) if bool(opener[ids[p]])]
        if len(hits) < rule.every:
            return []
        return list(range(hits[rule.every - 1] - 1, last))
    c = ParenCounter(1, vocab, rule, torch.device("cpu"))
    out = []
    for p, t in enumerate(ids):
        allowed = rule.in_prompt if p < prompt_len else rule.in_generation
        live = torch.ones(1, dtype=torch.bool)
        if rule.mode == "every_kth" and rule.position == "before_paren":
            if bool(c.next_is_steered(torch.tensor([t]), live, allowed)) and p >= 1:
                out.append(p - 1)
            c.step(torch.tensor([t]), live, allowed)
        elif bool(c.step(torch.tensor([t]), live, allowed)):
            out.append(p)
    return [p for p in out if p < last]
