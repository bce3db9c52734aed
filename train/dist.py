"""Which process of a multi-process run this is, and the few collective steps a run needs of its own.

Under ``accelerate launch`` (``launch.trainer_gpus > 1``: DDP over NCCL on GPUs, over gloo on CPU) every process
runs :func:`train.run.train`. The Trainer itself saves weights, optimizer and trainer state from the main process
only (each process adds its own ``rng_state_<rank>.pth``), but everything this project writes beside it (the run
directory, the data splits, the tiny base, ``step_<N>``, ``metrics.jsonl``, ``eval.jsonl``, ``summary.json``) must
also be written once: by the main process, with the others waiting where a file they read is being made. The
held-out evaluation is split across the processes and gathered, so every process takes part in it (a collective
weight sync inside it cannot hang) and each one samples only its share.

Outside a launcher (one process) every function here is a no-op or the trivial answer.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tasks.config import ConfigError

T = TypeVar("T")
# what torchrun / accelerate set for a process of a launch; a child that must run alone is started without them
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


def world_size() -> int:
    """Processes in this launch (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 outside a launcher)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True in the process that writes the run's files (rank 0, or the only process)."""
    return rank() == 0


def single_process_env() -> dict[str, str]:
    """``os.environ`` without the launcher's variables: for a child that must not join this launch."""
    return {k: v for k, v in os.environ.items() if k not in DIST_VARS}


def init(device: str, trainer_processes: int) -> None:
    """Join the launch's process group (before any file is written) and check it is the planned size.

    ``accelerate``'s ``PartialState`` picks the backend as the Trainer would (gloo on CPU, NCCL or DeepSpeed on
    GPUs) and the Trainer later reuses the initialised group.
    """
    n = world_size()
    if n != trainer_processes and (n > 1 or "LOCAL_RANK" in os.environ):
        raise ConfigError(
            f"launch.trainer_gpus: the config plans {trainer_processes} trainer process(es) but {n} were launched "
            "(WORLD_SIZE); start the run with `python -m train` (it launches them) or launch that many"
        )
    if n > 1:
        import torch.distributed
        from accelerate import PartialState

        if not torch.distributed.is_initialized():
            PartialState(cpu=device == "cpu")


def barrier() -> None:
    """Wait until every process of the launch gets here."""
    if world_size() > 1:
        import torch.distributed

        torch.distributed.barrier()


def finish() -> None:
    """Leave the launch's process group once every process is done with it (a no-op outside a launcher).

    Why: a gloo group still alive when the interpreter shuts down can abort the process ("terminate called without
    an active exception", SIGABRT) after the run has finished and written everything (pytorch/pytorch#190489), and
    the launcher then reports the whole run as failed. Called only after a successful run: destroying the group
    while another process is still inside a collective would hang instead. A colocated vLLM engine built its own
    groups inside this one; they go first, through vLLM's own teardown, else its exit hook later destroys groups
    that are gone and prints a "ValueError: Invalid process group specified" traceback on every process.
    """
    if world_size() > 1:
        import torch.distributed

        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            vllm_groups = sys.modules.get("vllm.distributed.parallel_state")
            if vllm_groups is not None:
                vllm_groups.destroy_model_parallel()
                vllm_groups.destroy_distributed_environment()  # vLLM's world group, then the launch's
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (writing what the others then read), the others after it."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def shared_map(func: Callable[[list[Any]], list[T]], items: list[Any]) -> list[T]:
    """``func(items)`` computed by all processes together: each runs ``func`` on every ``world_size()``-th item
    from its rank on, and every process gets the whole result back in the order of ``items``."""
    n = world_size()
    if n == 1:
        return func(items)
    import torch.distributed

    mine = list(range(rank(), len(items), n))
    part = func([items[i] for i in mine])  # also when empty: func may hold a collective step (a weight sync)
    gathered: list[Any] = [None] * n
    torch.distributed.all_gather_object(gathered, (mine, part))
    out: list[Any] = [None] * len(items)
    for idx, values in gathered:
        for i, v in zip(idx, values, strict=True):
            out[i] = v
    return out


def from_main(func: Callable[[], T]) -> T:
    """``func()`` computed by the main process only and handed to every process (for what only the main process
    can do, e.g. ask the vLLM server, whose client TRL builds on the main process alone)."""
    out = [func() if is_main() else None]
    if world_size() > 1:
        import torch.distributed

        torch.distributed.broadcast_object_list(out, src=0)
    return out[0]
