"""Pytest plugin loaded by every test: fixed seeds and one thread per test process."""

import random

import pytest


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def pytest_configure(config: pytest.Config) -> None:
    import torch

    # Bazel runs tests side by side on every core; one intra-op thread each avoids
    # oversubscription and keeps results independent of the machine's core count.
    torch.set_num_threads(1)
