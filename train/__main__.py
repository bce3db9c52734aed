"""``python -m train [--preset tiny] [--resume] [--dry-run] [--base-only] [key=value ...]`` (what `make train` runs).

Examples::

    python -m train                                   # tiny preset, offline, CPU
    python -m train --preset qwen2.5-3b --dry-run     # print the resolved config and launch plan, validate
    python -m train --resume                          # continue the run from its last complete checkpoint
    python -m train grpo.steps=20 run_name=short      # any config field as key=value
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from tasks.config import ConfigError


def _report(summary: dict) -> None:
    def pct(key: str) -> str:
        ci = (summary.get("changes") or {}).get(key)
        band = f"  ({100 * ci['value']:+.1f} points [{100 * ci['lo']:+.1f}, {100 * ci['hi']:+.1f}])" if ci else ""
        return f"{summary[key + '/first']:.1%} -> {summary[key + '/final']:.1%}{band}"

    se = summary.get("success_gain_se_points")
    spread = f", standard error {se:.1f}" if se is not None else ""
    success = pct("success_rate")  # with its interval where the run logged per-problem counts
    if "[" not in success:
        success += f"  ({summary['success_gain_points']:+.1f} points{spread})"
    print(
        f"\n== steps {summary['first_step']} -> {summary['final_step']} on held-out problems ==\n"
        f"success            {success}\n"
        f"false accept|wrong {pct('false_accept_given_wrong')}\n"
        f"false reject|right {pct('false_reject_given_right')}\n"
        f"verdict = truth    {pct('line_verdict_matches_truth')}\n"
        f"lines/completion   {summary['lines_per_completion/first']:.2f} -> "
        f"{summary['lines_per_completion/final']:.2f}\n"
        f"truncated          {pct('truncation_rate')}"
    )
    if summary.get("repeated_lines/first") is not None:
        print(
            f"with verdict lines {pct('verdict_share')}\n"
            f"repeated lines     {pct('repeated_lines')}\n"
            f"fabricated '= T'   {pct('fabricated_equalities')}  (wrong lines stating the target)\n"
            f"both verdicts      {pct('both_verdicts')}  (expressions accepted and rejected in one completion)"
        )
    styles = summary.get("success_by_style") or {}
    for when in ("first", "final"):
        by = styles.get(when) or {}
        pairs = (("with verdict lines", by.get("success_verifying")), ("without", by.get("success_plain")))
        if any(c for _, c in pairs):
            text = "; ".join(
                f"{label} {c['value']:.1%} [{c['lo']:.1%}, {c['hi']:.1%}] (n={c['n']})" if c else f"{label} n/a"
                for label, c in pairs
            )
            print(f"success by style   step {summary[f'{when}_step']}: {text}")
    for when, row in (summary.get("advantage_by_style") or {}).items():
        if row and row.get("verifying") is not None:
            plain = row["plain"] if row["plain"] is not None else float("nan")
            print(
                f"RL advantage       {when} {row['steps']} steps: verifying {row['verifying']:+.2f}, plain {plain:+.2f}"
                f" (rollouts verifying {row['share_verifying']:.1%})"
            )
    for name, row in (summary.get("success_by_ways") or {}).items():
        label = f"success, {name} way{'s' if name != '1' else ''}"
        print(f"{label:<18} {row['first']:.1%} -> {row['final']:.1%}  ({row['problems']} problems)")
    print(f"checkpoints        {summary['checkpoints']}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="configs/<preset>.yaml or a path to a YAML file")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last complete checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and launch plan, then exit")
    parser.add_argument("--base-only", action="store_true", help="only build (or reuse) the tiny base model")
    parser.add_argument("overrides", nargs="*", help="config fields as key=value, e.g. grpo.steps=20")
    args = parser.parse_args(argv)

    from train.config import load_train_config
    from train.launch import execute, plan, serving, under_launcher

    try:
        cfg = load_train_config(args.preset, args.overrides)
        # a real launch from outside a launcher checks the GPU count (its children see only their own GPUs)
        check = not args.dry_run and not args.base_only and not under_launcher()
        launch_plan = plan(cfg, [a for a in argv if a != "--dry-run"], check_gpus=check)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        from train.grpo import check_grpo

        try:
            check_grpo(cfg, "cpu" if cfg.device == "auto" else cfg.device)
        except (ConfigError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(launch_plan.describe(cfg))
        print("\nconfig OK (dry run: nothing was started)")
        return 0
    if args.base_only:
        from tasks.countdown.dataset import load_problems, prepare
        from train.config import resolve_precision
        from train.run import ensure_base

        try:
            cfg = resolve_precision(cfg, "cpu")  # the tiny base is pre-trained on the CPU
            data_dir, _ = prepare(cfg.data)
            print(f"base model: {ensure_base(cfg, load_problems(data_dir, 'train'))}")
        except (FileExistsError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if launch_plan.launches and not under_launcher():
        return execute(launch_plan, cfg)

    from train.checkpoints import RunExists
    from train.run import train

    try:
        if under_launcher():
            summary = train(cfg, resume=args.resume)
        else:
            with serving(launch_plan, cfg):
                summary = train(cfg, resume=args.resume)
    except (RunExists, FileNotFoundError, TimeoutError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:  # the child that builds a missing tiny base (train.run.ensure_base)
        print(
            f"error: building the tiny base failed (exit {e.returncode}; its output is above); "
            "`make base` retries it and resumes an interrupted build",
            file=sys.stderr,
        )
        return 2
    from train.dist import is_main

    if is_main():  # one report for a multi-process run
        _report(summary)
        print(f"run directory: {cfg.run_dir} (summary.json, eval.jsonl, metrics.jsonl, step_<N>/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
