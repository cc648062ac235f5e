"""The ipywidgets explorers, driven without a browser: set a slider, check what was drawn."""
import io

import numpy as np
import pytest
import torch
from matplotlib import pyplot as plt

from vaelib import models, plots, widgets


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return models.VAE(latent_dim=3).eval()


def decoded_png(explorer) -> np.ndarray:
    return plt.imread(io.BytesIO(explorer.image.value))


def test_moving_a_slider_decodes_the_new_point(vae):
    explorer = widgets.LatentExplorer(vae)
    assert len(explorer.sliders) == 3 and torch.equal(explorer.z, torch.zeros(1, 3))
    before = explorer.image.value
    explorer.sliders[1].value = 2.0
    assert explorer.image.value != before
    with torch.no_grad():
        expected = vae.decode(torch.tensor([[0.0, 2.0, 0.0]]))[0]
    assert torch.allclose(explorer.decoded, expected)
    shown = decoded_png(explorer)[::5, ::5, 0]  # the 5x enlarged image, back to 28 x 28, red channel
    gray = plt.get_cmap("gray")(expected.view(28, 28).numpy())[..., 0]
    assert np.abs(shown - gray).max() < 0.01


def test_slider_range_and_start(vae):
    explorer = widgets.LatentExplorer(vae, low=-2, high=2, start=torch.tensor([0.5, -0.5, 1.0]))
    assert [s.value for s in explorer.sliders] == [0.5, -0.5, 1.0]
    assert explorer.sliders[0].min == -2 and explorer.sliders[0].max == 2


def test_beta_explorer_redraws_for_the_chosen_beta():
    torch.manual_seed(0)
    encoded = {0.0: (torch.randn(50, 2) * 5, torch.randint(0, 10, (50,))),
               4.0: (torch.randn(50, 2), torch.randint(0, 10, (50,)))}
    explorer = widgets.BetaExplorer(encoded)
    assert explorer.shown_beta == 0.0
    explorer.slider.value = 4.0
    assert explorer.shown_beta == 4.0
    assert explorer.figure.axes[0].get_title() == "latent means, beta = 4"
    plotted = np.concatenate([c.get_offsets() for c in explorer.figure.axes[0].collections])
    assert np.allclose(np.sort(plotted[:, 0]), np.sort(encoded[4.0][0][:, 0].numpy()))


def test_image_grid_tiles_in_order():
    images = torch.stack([torch.full((784,), v) for v in (0.0, 0.5, 1.0)])
    grid = plots.image_grid(images, nrow=2, padding=0)
    assert grid.shape == (56, 56)
    assert grid[0, 0] == 0.0 and grid[0, 28] == 0.5 and grid[28, 0] == 1.0 and grid[28, 28] == 1.0  # pad


def test_traversals_move_one_coordinate_per_row(vae):
    walk = plots.traversals(vae, steps=5)
    assert walk.shape == (15, 784)
    with torch.no_grad():
        assert torch.allclose(walk[5 + 4], vae.decode(torch.tensor([[0.0, 3.0, 0.0]]))[0])
