"""Fixtures every test directory shares. The analysis tests add their own (tests/analysis/conftest.py: models with
the tiny base's digit tokenizer and a Qwen2-style tokenizer, trained on synthetic traces)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import build_tiny_qwen


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`build_tiny_qwen` with 256 positions, shared by the session."""
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen2"))
