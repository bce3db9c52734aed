"""TinyZero's two Countdown prompt templates (plus a compact one for tiny models) and the answer extraction.

They live in one module so that a template and the parser of its answers cannot drift apart. The template
text is TinyZero's (``examples/data_preprocess/countdown.py``) character for character, including its
``{numbers}`` rendered as a Python list and the leading space after ``user\\n`` in the instruct variant: a
base model's behaviour is sensitive to the exact prefix, so a reproduction must not paraphrase it.

``compact`` is not TinyZero's: it keeps only the instruction's first sentence. It exists for the offline tiny
preset, whose ~1M-parameter model with a 512-token vocabulary cannot use 100 words of boilerplate: TinyZero's
base prompt is ~141 tokens there against ~140 of completion, so it was over half of every GRPO step's forward
and backward pass. The compact prompt is ~27 tokens: a GRPO step is 30% cheaper and the base builds 35% faster,
but measured on the tiny preset success rose more slowly per step (README, "Tiny preset experiments"), so every
preset, tiny included, keeps TinyZero's templates; ``compact`` stays an option.

TinyZero scores ``prompt + completion``: it cuts at the first "Assistant:" (or "<|im_start|>assistant"),
keeps the last line, and takes the last ``<answer>...</answer>`` on it. Both prompts end with the line
"<think>", which holds no answer tag, so the same answer is found in the completion alone; that is what
:func:`extract_answer` reads (see its docstring for the one template-dependent corner).
"""

from __future__ import annotations

from collections.abc import Sequence

TEMPLATE_NAMES = ("base", "qwen-instruct", "compact")

_INSTRUCTION = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. "
    "And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
)

TEMPLATES = {
    "base": (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
        "The assistant first thinks about the reasoning process in the mind and then provides the user with "
        "the answer.\nUser: " + _INSTRUCTION + "\nAssistant: Let me solve this step by step.\n<think>"
    ),
    "qwen-instruct": (
        "<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning process in the "
        "mind and then provides the user with the answer.<|im_end|>\n<|im_start|>user\n "
        + _INSTRUCTION
        + "<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>"
    ),
    "compact": "Using the numbers {numbers}, create an equation that equals {target}.\n<think>",
}

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
THINK_CLOSE = "</think>"


def make_prompt(numbers: Sequence[int], target: int, template: str = "base") -> str:
    """The prompt given to the policy for one problem (``template``: "base", "qwen-instruct" or "compact")."""
    if template not in TEMPLATES:
        raise ValueError(f"template: expected one of {list(TEMPLATE_NAMES)}, got {template!r}")
    return TEMPLATES[template].format(numbers=[int(n) for n in numbers], target=int(target))


def extract_answer(completion: str, template: str = "base") -> str | None:
    """The stripped text of the last ``<answer>...</answer>`` on the completion's last line, else None.

    Equal to TinyZero's ``extract_solution(prompt + completion)``. The one corner where the template
    matters: TinyZero cuts at the first "Assistant:" anywhere, and the instruct prompt contains none, so a
    completion that writes "Assistant:" on its last line is cut there; we do the same.

    Runs in linear time: a non-greedy regex over a megabyte line of unclosed "<answer>" tags is quadratic,
    so the non-overlapping left-to-right matches are found with ``str.find`` instead.
    """
    if template == "qwen-instruct":
        cut = completion.find("Assistant:")
        if cut >= 0:
            completion = completion[cut + len("Assistant:") :]
    last_line = completion[completion.rfind("\n") + 1 :]
    answer = None
    pos = 0
    while True:
        start = last_line.find(ANSWER_OPEN, pos)
        if start < 0:
            break
        end = last_line.find(ANSWER_CLOSE, start + len(ANSWER_OPEN))
        if end < 0:
            break
        answer = last_line[start + len(ANSWER_OPEN) : end]
        pos = end + len(ANSWER_CLOSE)
    return None if answer is None else answer.strip()
