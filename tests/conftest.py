"""Shared fixtures. MNIST is read from $VAELIB_DATA, else from ../shared/data beside the repository."""
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("VAELIB_DATA", str(REPO.parent / "shared" / "data"))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def mnist_test():
    from vaelib import data
    return data.load_mnist("test")


@pytest.fixture(scope="session")
def mnist_train():
    from vaelib import data
    return data.load_mnist("train")
