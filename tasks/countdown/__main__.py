"""``python -m tasks.countdown [--config PRESET.yaml] [key=value ...]``: write Countdown train/test splits.

``make data`` runs this with ``configs/data/default.yaml``. Re-running with the same config reuses the
complete directory; a different config refuses to overwrite it (see :func:`tasks.countdown.dataset.prepare`).
"""

from __future__ import annotations

import argparse
import sys
import time

from tasks.config import ConfigError, load_config
from tasks.countdown.dataset import DataConfig, HubUnavailable, prepare
from tasks.countdown.generate import GenerationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.countdown", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML preset (configs/data/*.yaml); fields of DataConfig")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seed=7 train_size=1000")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        cfg = load_config(DataConfig, args.config, args.overrides)
        out, written = prepare(cfg)
    except (ConfigError, GenerationError, HubUnavailable, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    what = "wrote" if written else "up to date, reused"
    print(
        f"{what} {out} (train {cfg.train_size}, test {cfg.test_size}, source {cfg.source}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
