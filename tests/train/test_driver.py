"""The GPU driver check of ``make setup`` (train/driver.py) on hand-written versions."""

from __future__ import annotations

import subprocess
import sys

from train.driver import driver_problem


def test_an_old_driver_for_a_cuda_13_torch_is_one_line_naming_what_to_install() -> None:
    msg = driver_problem("13.0", "550.54.15")
    assert msg is not None and "\n" not in msg
    assert "driver 550.54.15" in msg and "CUDA 13.0" in msg and "needs driver >= 580.65" in msg


def test_new_enough_drivers_cpu_wheels_and_hosts_without_a_driver_pass() -> None:
    assert driver_problem("13.0", "580.65.06") is None and driver_problem("13.0", "590.1") is None
    assert driver_problem("12.8", "550.54.15") is None  # minor-version compatibility within CUDA 12
    assert driver_problem("12.4", "470.1") is not None
    assert driver_problem(None, "550.54.15") is None and driver_problem("13.0", None) is None


def test_the_check_passes_on_this_host() -> None:
    """A CPU torch or a host without nvidia-smi has nothing to check: exit 0, silent."""
    out = subprocess.run([sys.executable, "-m", "train.driver"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr
