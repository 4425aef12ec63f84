"""Shared fixtures of the OpenMMLab tests: the tiny data set (written once per session) and one torch thread.

One thread: on a shared 2-core machine two OpenMP threads that are descheduled in turn make small convs
100x slower; the smoke runs are tiny, a single thread is the fastest setting.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    import importlib.util
    from pathlib import Path

    tool = Path(__file__).resolve().parents[2] / "tools" / "make_tiny_data.py"
    spec = importlib.util.spec_from_file_location("make_tiny_data", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("tiny")
    module.write_tiny_data(root)
    return str(root)
