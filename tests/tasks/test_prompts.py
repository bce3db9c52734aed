"""TinyZero's templates verbatim, and answer extraction equal to TinyZero's on prompt + completion."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.countdown.prompts import extract_answer, make_prompt

BASE_44_19_35 = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer.\n"
    "User: Using the numbers [44, 19, 35], create an equation that equals 98. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. "
    "And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.\n"
    "Assistant: Let me solve this step by step.\n<think>"
)


def test_base_template_verbatim() -> None:
    assert make_prompt([44, 19, 35], 98) == BASE_44_19_35


def test_instruct_template_verbatim() -> None:
    p = make_prompt((44, 19, 35), 98, "qwen-instruct")
    assert p.startswith(
        "<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning process in the mind "
        "and then provides the user with the answer.<|im_end|>\n<|im_start|>user\n Using the numbers [44, 19, 35], "
    )
    assert p.endswith("</answer>.<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>")


def test_compact_template_is_the_instruction_sentence_and_reads_answers_like_base() -> None:
    p = make_prompt([44, 19, 35], 98, "compact")
    assert p == "Using the numbers [44, 19, 35], create an equation that equals 98.\n<think>"
    assert len(p) < len(BASE_44_19_35) // 4
    done = "- 44 + 19 + 35 = 98 (this works)\n</think>\n<answer> 44 + 19 + 35 </answer>"
    assert extract_answer(done, "compact") == extract_answer(done, "base") == "44 + 19 + 35"


def test_unknown_template_names_the_choices() -> None:
    with pytest.raises(ValueError, match="base"):
        make_prompt([1, 2], 3, "chatml")


def _tinyzero_extract(full_text: str) -> str | None:
    """Behavioural restatement of TinyZero's extract_solution."""
    if "Assistant:" in full_text:
        full_text = full_text.split("Assistant:", 1)[1]
    elif "<|im_start|>assistant" in full_text:
        full_text = full_text.split("<|im_start|>assistant", 1)[1]
    else:
        return None
    found = list(re.finditer(r"<answer>(.*?)</answer>", full_text.split("\n")[-1]))
    return found[-1].group(1).strip() if found else None


_PIECES = [
    "<answer>",
    "</answer>",
    "\n",
    "Assistant:",
    "<|im_start|>assistant",
    " 1 + 2 ",
    "x",
    "<",
    ">",
    "\r",
]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=25), st.sampled_from(["base", "qwen-instruct"]))
def test_extract_answer_equals_tinyzero_on_prompt_plus_completion(pieces: list[str], template: str) -> None:
    completion = "".join(pieces)
    prompt = make_prompt([1, 2, 3], 6, template)
    assert extract_answer(completion, template) == _tinyzero_extract(prompt + completion)
