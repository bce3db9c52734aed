"""Our side of the Trainer loop: step checkpoints in the ``step_<N>`` layout, held-out evaluation, metrics and samples.

What TRL's trainer cannot know: every Trainer checkpoint becomes an atomic ``step_<N>`` directory with the run's
state (train/checkpoints.py), each checkpoint is evaluated on held-out problems (``eval.jsonl``), the logged rows go
to ``metrics.jsonl`` and a warning is printed when completions are being truncated (a silent failure of GRPO runs:
truncated completions score 0 and teach the policy to stop early).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from train import checkpoints as ck
from train import dist
from train.config import TrainConfig
from train.evaluate import EvalMetrics


class SampleLog:
    """Sample completions the reward saw, kept until :class:`RunCallback` writes them to ``samples.jsonl`` at the
    end of the step (the reward function computes; the callback does the logging)."""

    def __init__(self, every: int, keep: int = 4) -> None:
        self.every, self.keep = every, keep
        self.pending: list[dict[str, Any]] = []

    def offer(self, step: int, completions: list[str], numbers: list, target: list, rewards: list[float]) -> None:
        """Keep the first ``keep`` completions of every ``every``-th step."""
        if step % self.every:
            return
        for c, n, t, r in list(zip(completions, numbers, target, rewards, strict=True))[: self.keep]:
            self.pending.append({"step": step, "numbers": n, "target": t, "reward": r, "completion": c})

    def flush(self, path: Path) -> None:
        for record in self.pending:
            ck.append_jsonl(path, record)
        self.pending = []


class RunCallback:
    """Our side of the Trainer loop: metrics.jsonl, truncation warnings, eval + atomic step checkpoints.

    In a multi-process run every process evaluates its share (train/dist.py) and only the main one writes.

    Built as a ``transformers.TrainerCallback`` subclass lazily (see :func:`make_callback`) so that importing
    this module does not import transformers.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        tokenizer: Any,
        evaluate: Callable[[Any], EvalMetrics],
        samples: SampleLog | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.tokenizer, self.evaluate = cfg, run_dir, tokenizer, evaluate
        self.samples = samples
        self.trainer: Any = None
        self.last_log: dict[str, Any] = {}
        self.step_t0 = time.perf_counter()
        self.step_time = 0.0

    def eval_and_record(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        metrics = self.evaluate(self.trainer).as_dict()
        seconds = time.perf_counter() - t0
        if not dist.is_main():
            return metrics
        ck.append_jsonl(self.run_dir / "eval.jsonl", {"step": step, **metrics, "eval_s": seconds})
        print(
            f"[eval step {step}] success {metrics['success_rate']:.1%}  format {metrics['format_rate']:.1%}  "
            f"false-accept|wrong {metrics['false_accept_given_wrong']:.1%}  "
            f"verdict=truth {metrics['line_verdict_matches_truth']:.1%}  lines/compl "
            f"{metrics['lines_per_completion']:.2f}  ({metrics['completions']} completions, {seconds:.1f} s)",
            flush=True,
        )
        return metrics

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        dist.barrier()  # every process looks before the main one can write step_0 (after the shared evaluation)
        if state.global_step == 0 and ck.latest_checkpoint(self.run_dir) is None:
            metrics = self.eval_and_record(0)
            staging = ck.manual_staging(self.run_dir, 0)
            if dist.is_main():
                shutil.rmtree(staging, ignore_errors=True)
            dist.barrier()
            # every process calls the Trainer's save: under ZeRO-3 it gathers the sharded weights collectively (a
            # main-process save_pretrained would write empty partitions); only the main process writes
            self.trainer.save_model(str(staging))
            if dist.is_main():
                ck.finalize(staging, self.run_dir, 0, self.tokenizer, ck.run_state(self.cfg, {"eval": metrics}))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.step_t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.step_time = time.perf_counter() - self.step_t0
        if self.samples is not None and dist.is_main():
            self.samples.flush(self.run_dir / "samples.jsonl")
        elif self.samples is not None:
            self.samples.pending = []  # the main process's samples are the ones kept

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or "loss" not in logs and "reward" not in logs or not dist.is_main():
            return
        record = {"step": state.global_step, "time": time.time(), "time/step_s": self.step_time, **logs}
        self.last_log = record
        ck.append_jsonl(self.run_dir / "metrics.jsonl", record)
        clipped = logs.get("completions/clipped_ratio", 0.0)
        if clipped > self.cfg.grpo.truncation_warn:
            print(
                f"\nWARNING step {state.global_step}: {clipped:.0%} of completions hit max_completion_length="
                f"{self.cfg.grpo.max_completion_length}; truncated completions score 0 and teach the policy to stop "
                "early. Raise grpo.max_completion_length.",
                file=sys.stderr,
                flush=True,
            )

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        step = state.global_step
        src = Path(args.output_dir) / f"checkpoint-{step}"
        dist.barrier()  # every process has written its part (rng_state_<rank>.pth) and sees the same directory
        if not src.is_dir():
            return
        metrics = self.eval_and_record(step)
        if dist.is_main():
            saved = ck.run_state(self.cfg, {"train": self.last_log, "eval": metrics})
            ck.finalize(src, self.run_dir, step, self.tokenizer, saved)
            if self.cfg.resume_state == "last":
                ck.prune_resume_state(self.run_dir, step)


def tensorboard_callback(run_dir: Path) -> Any:
    """transformers' TensorBoard callback writing to ``<run>/tb`` (v5 dropped ``logging_dir``)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / "tb")))


def make_callback(*args: Any, **kwargs: Any) -> Any:
    """A ``TrainerCallback`` instance with :class:`RunCallback`'s behaviour (arguments as :class:`RunCallback`)."""
    from transformers import TrainerCallback

    class CountdownRunCallback(RunCallback, TrainerCallback):
        """:class:`RunCallback` as a transformers callback (defined here: transformers is imported only now)."""

    return CountdownRunCallback(*args, **kwargs)
