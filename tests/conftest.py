"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

TEST_DEVICE_ENV = "DIFFWORLD_TEST_DEVICE"
"""The device ``tests/test_device.py`` runs the models on: ``cpu`` (the default), ``cuda``, ``cuda:1``."""


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a module of tiny models: a second thread only adds synchronization, which
    costs a lot on a busy machine. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def target_device() -> torch.device:
    """The device of ``tests/test_device.py``: ``$DIFFWORLD_TEST_DEVICE``, else the CPU. A CUDA device that is
    not there fails the tests that ask for it rather than skipping them."""
    device = torch.device(os.environ.get(TEST_DEVICE_ENV) or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"{TEST_DEVICE_ENV}={device} but torch sees no CUDA device")
    return device


@pytest.fixture(scope="session")
def device_explicit() -> bool:
    """Whether ``$DIFFWORLD_TEST_DEVICE`` names the device (even ``cpu``): the long device tests run then."""
    return bool(os.environ.get(TEST_DEVICE_ENV))
