"""Fixtures for the tools' tests (helpers are in tools_testlib.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from tools_testlib import load_tool


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Training loops of tiny models on a shared 2-core machine: extra threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_tool() -> Any:
    return load_tool("train")


@pytest.fixture(scope="session")
def validate_tool() -> Any:
    return load_tool("validate")


@pytest.fixture(scope="session")
def bench_tool() -> Any:
    return load_tool("benchmark")
