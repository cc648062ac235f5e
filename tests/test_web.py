"""The explorers' data (vaelib/web.py), the book's one axis convention, and the run page's setting."""
import importlib.util

import numpy as np
import torch

from vaelib import models, plots, web
from tests.conftest import REPO


def un_run_length(coded: bytes, count: int) -> np.ndarray:  # what nets.js unRunLength does
    out, o, i = np.zeros(count * 784, np.uint8), 0, 0
    while i < len(coded):
        if coded[i] == 0:
            o, i = o + coded[i + 1], i + 2
        else:
            out[o], o, i = coded[i], o + 1, i + 1
    return out


def test_run_length_coding_gives_back_the_bytes(mnist_test):
    images = mnist_test[0][:50]
    coded = web.run_length(images)
    assert len(coded) < 0.4 * images.numel()  # most pixels are 0
    assert np.array_equal(un_run_length(coded, 50), (images * 255).round().to(torch.uint8).numpy().ravel())
    long_gap = torch.zeros(2, 784)  # runs longer than 255 are split
    assert np.array_equal(un_run_length(web.run_length(long_gap), 2), np.zeros(2 * 784, np.uint8))


def test_map_range_fits_each_model():
    assert web.map_range(torch.randn(10_000, 2)) == 4.0  # a VAE near the prior: at least [-3, 3]
    assert 18 <= web.map_range(torch.randn(10_000, 2) * 7) <= 24  # beta = 0 spreads to about 20


def test_plane_grid_runs_z1_across_and_z2_up():
    grid = plots.plane_grid(-3, 3, 3).view(3, 3, 2)  # (row, column, (z1, z2))
    assert grid[0, 0].tolist() == [-3, 3] and grid[0, 2].tolist() == [3, 3]  # top row: z2 = 3
    assert grid[2, 0].tolist() == [-3, -3]  # bottom left
    assert sorted(map(tuple, grid.view(-1, 2).tolist())) == sorted(map(tuple, models.latent_grid(-3, 3, 3).tolist()))


def test_run_page_setting_is_a_link_only_when_it_is_an_address():
    spec = importlib.util.spec_from_file_location("offline_book", REPO / "book" / "_ext" / "offline_book.py")
    extension = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extension)
    assert extension.repository_url("https://example.org/owner/course") == "https://example.org/owner/course"
    assert extension.repository_url("REPOSITORY_URL_NOT_SET") is None
