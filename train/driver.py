"""Whether this GPU host's NVIDIA driver can run the installed torch wheel (``make setup`` checks it on GPU hosts).

Why: a torch wheel built for CUDA 13 on a driver that only knows CUDA 12 does not fail loudly; torch reports no CUDA
device, and the user sees "no CUDA device is visible" without the reason. CUDA's minor-version compatibility lets
a driver run every toolkit of its major version from that major's first compatible driver on; the minimums below are
NVIDIA's (CUDA compatibility guide, Linux x86_64).
"""

from __future__ import annotations

import subprocess
import sys

MIN_DRIVER = {12: (525, 60), 13: (580, 65)}  # CUDA major -> the oldest driver that runs it (minor-version compat)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.strip().split(".") if x.isdigit())


def driver_problem(torch_cuda: str | None, driver: str | None) -> str | None:
    """One line saying what to install when ``driver`` (e.g. "550.54.15") cannot run a torch built for CUDA
    ``torch_cuda`` (e.g. "13.0"); None when it can, or when there is nothing to check (a CPU wheel, no driver)."""
    if not torch_cuda or not driver:
        return None
    major = _version(torch_cuda)[0]
    need = MIN_DRIVER.get(major)
    if need is None or _version(driver)[: len(need)] >= need:
        return None
    wanted = ".".join(map(str, need))
    return (
        f"NVIDIA driver {driver} cannot run this torch (built for CUDA {torch_cuda}, needs driver >= {wanted}): "
        f"install driver >= {wanted}, or a torch wheel for the CUDA your driver supports (nvidia-smi shows it)"
    )


def installed_driver() -> str | None:
    """The driver version nvidia-smi reports for the first GPU (None without nvidia-smi or a GPU)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def main() -> int:
    import torch

    problem = driver_problem(torch.version.cuda, installed_driver())
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
