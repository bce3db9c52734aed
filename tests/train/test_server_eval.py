"""The held-out evaluation in ``rollout.vllm_mode=server``: TRL keeps no local engine there (``llm`` exists only in
colocate mode), so the evaluator syncs weights and asks TRL's vLLM client. ``trl vllm-serve`` needs a GPU, so the
server is a stand-in here: an object with TRL's client's ``generate`` signature answering with token ids of fixed
completions through the real tokenizer; the evaluator, scoring and tokenizer are the real ones."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from transformers import AutoTokenizer

from tasks.countdown.generate import Problem
from train.config import load_train_config
from train.run import make_evaluator


class StandInServerClient:
    """Answers like ``trl.generation.vllm_client.VLLMClient.generate``: ``completion_ids``, ``n`` per prompt."""

    def __init__(self, tok: Any, answers: dict[str, list[str]]) -> None:
        self.tok, self.answers, self.calls = tok, answers, []

    def generate(self, prompts: list[str], n: int = 1, temperature: float = 1.0, max_tokens: int = 16, **kw: Any):
        self.calls.append({"prompts": len(prompts), "n": n, "temperature": temperature, "max_tokens": max_tokens})
        ids = []
        for p in prompts:
            key = next(k for k in self.answers if k in p)
            ids += [self.tok(t, add_special_tokens=False).input_ids[:max_tokens] for t in self.answers[key][:n]]
        return {"prompt_ids": [[0]] * len(prompts), "completion_ids": ids, "logprobs": None}


def test_server_mode_evaluation_asks_the_server_after_a_weight_sync(model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = load_train_config("tiny", ["eval.samples=2", "eval.temperature=0.7"])
    problems = [Problem((3, 5, 7), 22), Problem((2, 4, 6), 3)]
    right = "3 * 5 + 7 = 22 (this works)\n<answer>3 * 5 + 7</answer>"
    wrong = "2 + 4 + 6 = 12 (not 3)\n<answer>2 + 4 + 6</answer>"
    client = StandInServerClient(tok, {"[3, 5, 7]": [right, wrong], "[2, 4, 6]": [wrong, "no answer " * 200]})
    syncs = []
    gen = SimpleNamespace(mode="server", vllm_client=client, sync_weights=lambda: syncs.append(1))
    metrics = make_evaluator(cfg, problems, "vllm", tok)(SimpleNamespace(vllm_generation=gen))
    assert syncs == [1]
    assert client.calls == [{"prompts": 2, "n": 2, "temperature": 0.7, "max_tokens": cfg.eval_max_new_tokens}]
    assert metrics.completions == 4
    assert metrics.success_rate == 0.25  # one right answer of four completions
    assert metrics.truncation_rate == 0.25  # the long one hit max_tokens
