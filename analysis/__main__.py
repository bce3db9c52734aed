"""``python -m analysis [--preset tiny] [key=value ...]`` (what `make analyze` runs).

Examples::

    python -m analysis                               # latest run under checkpoints/, tiny analysis preset
    python -m analysis run=checkpoints/tiny          # a given run
    python -m analysis steering.scales=[0,16,32] steps=[0,100]
    python -m analysis --preset qwen2.5-3b --dry-run  # resources per checkpoint (analysis/resources.py), then exit
"""

from __future__ import annotations

import argparse
import json
import sys

from tasks.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="configs/analysis/<preset>.yaml or a path to a YAML file")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the estimated time, memory and disk per checkpoint, then exit"
    )
    parser.add_argument("overrides", nargs="*", help="config fields as key=value, e.g. run=checkpoints/tiny")
    args = parser.parse_intermixed_args(argv)

    from analysis.analyse_run import analyse_run
    from analysis.config import load_analysis_config

    try:
        cfg = load_analysis_config(args.preset, args.overrides)
        if args.dry_run:
            from analysis.resources import dry_run

            print(dry_run(cfg, args.preset))
            return 0
        summary = analyse_run(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "computed"}, indent=1))
    print(f"\nreport: {summary['report']}")
    return 0 if not summary["broken_steps"] else 1


if __name__ == "__main__":
    sys.exit(main())
