"""Shared fixtures. MNIST is read from $VAELIB_DATA, else ../shared/data beside the repository where it
exists, else ./data (where `make book` downloads it), as the Makefile chooses."""
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
os.environ.setdefault("VAELIB_DATA", str(SHARED if (SHARED / "MNIST").is_dir() else REPO / "data"))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def mnist_test():
    from vaelib import data
    return data.load_mnist("test")


@pytest.fixture(scope="session")
def mnist_train():
    from vaelib import data
    return data.load_mnist("train")
