"""Look at what a trained and analysed run wrote, not only at exit codes: the GPU check runs this after each run.

An exit code of 0 says a job ended; it does not say that step 0 holds weights, that every checkpoint was
evaluated, that the loss was a number or that the report drew its figures. Each check below reads the files a
user would read and prints one line; any failure makes the exit status 1.

    python scripts/check_run.py checkpoints/<run> [--analysed]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def check_training(run: Path) -> list[str]:
    """Failures of the training side: checkpoints complete and non-empty, the last at grpo.steps, every one
    evaluated with rates in [0, 1], a finite loss logged for every step, resume state only where configured."""
    from analysis.checkpoint_stages import CheckpointError, check_checkpoint
    from tasks.config import load_config
    from train.checkpoints import RESUME_ONLY, list_checkpoints
    from train.config import TrainConfig

    cfg = load_config(TrainConfig, run / "config.yaml")
    ckpts = list_checkpoints(run)
    steps = [s for s, _ in ckpts]
    bad = []
    if not steps or steps[0] != 0 or steps[-1] != cfg.grpo.steps:
        bad.append(f"{run}: checkpoints at steps {steps}, expected 0 ... {cfg.grpo.steps}")
    for step, path in ckpts:
        try:
            check_checkpoint(path)
        except CheckpointError as e:
            bad.append(f"step {step}: {e}")
        resume = [f.name for pattern in RESUME_ONLY for f in path.glob(pattern)]
        if cfg.resume_state == "last" and step != steps[-1] and resume:
            bad.append(f"step {step}: keeps resume state {resume} (resume_state: last keeps it in the last only)")
    evals = {r["step"]: r for r in _jsonl(run / "eval.jsonl")}
    for step in steps:
        row = evals.get(step)
        if row is None:
            bad.append(f"{run / 'eval.jsonl'}: no evaluation of step {step}")
        elif not (row["completions"] > 0 and all(0 <= row[k] <= 1 for k in ("success_rate", "format_rate"))):
            n = row["completions"]
            bad.append(f"{run / 'eval.jsonl'}: step {step} has {n} completions or a rate outside [0, 1]")
    logged = {r["step"]: r for r in _jsonl(run / "metrics.jsonl") if "loss" in r}
    # a step whose groups all scored alike has no advantage, so no gradient: weights stay put, rightly. Once any
    # step logged a gradient, the last checkpoint must differ from step 0
    stepped = any((r.get("grad_norm") or 0) > 0 for r in logged.values())
    if stepped and len(ckpts) > 1 and not bad and not weights_changed(ckpts[0][1], ckpts[-1][1]):
        bad.append(f"step {steps[-1]}: the same weights as step 0 although a gradient was logged (no update saved)")
    missing = [s for s in range(1, cfg.grpo.steps + 1) if s not in logged]
    if missing:
        bad.append(f"{run / 'metrics.jsonl'}: no loss logged at steps {missing[:5]}")
    if any(not math.isfinite(r["loss"]) for r in logged.values()):
        bad.append(f"{run / 'metrics.jsonl'}: a loss that is not a finite number")
    return bad


def weights_changed(first: Path, last: Path) -> bool:
    """Whether any tensor of ``last``'s model differs from ``first``'s (a run whose optimizer never stepped, or whose
    saves were gathered from the wrong place, writes the base again). Tensor by tensor, stopping at the first
    difference: two whole checkpoints of a 3B model would not fit in a host's memory at once."""
    from safetensors import safe_open

    files = sorted(p.name for p in first.glob("*.safetensors"))
    if files != sorted(p.name for p in last.glob("*.safetensors")):
        return True
    for name in files:
        with safe_open(str(first / name), framework="pt") as a, safe_open(str(last / name), framework="pt") as b:
            if set(a.keys()) != set(b.keys()):
                return True
            if any(not a.get_tensor(k).equal(b.get_tensor(k)) for k in a.keys()):
                return True
    return False


def check_analysis(run: Path) -> list[str]:
    """Failures of the analysis side: every checkpoint analysed, none broken, the fixed-text headline there, and
    a report with its figures embedded."""
    from train.checkpoints import list_checkpoints

    summary_path = run / "analysis" / "summary.json"
    if not summary_path.is_file():
        return [f"{summary_path}: missing (run make analyze)"]
    summary = json.loads(summary_path.read_text())
    bad = []
    import yaml

    chosen = (yaml.safe_load((run / "analysis" / "config.yaml").read_text()) or {}).get("steps") or []
    steps = [s for s, _ in list_checkpoints(run) if not chosen or s in chosen]  # the analysis's steps: selection
    if summary["steps"] != steps or summary["broken_steps"]:
        broken = summary["broken_steps"]
        bad.append(f"{summary_path}: analysed {summary['steps']} (broken {broken}), checkpoints {steps}")
    if not summary.get("fixed_text"):
        bad.append(f"{summary_path}: no fixed-text results")
    report = run / "analysis" / "report.html"
    figures = report.read_text().count("data:image/png;base64") if report.is_file() else 0
    if figures < len(steps):
        bad.append(f"{report}: {figures} embedded figures (expected at least one per checkpoint)")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="checkpoints/<run>")
    parser.add_argument("--analysed", action="store_true", help="also check what make analyze wrote")
    args = parser.parse_args(argv)
    bad = check_training(args.run) + (check_analysis(args.run) if args.analysed else [])
    for line in bad:
        print(f"FAILED {line}")
    if not bad:
        print(f"ok: {args.run}: checkpoints, evaluations, losses" + (", analysis and report" if args.analysed else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
