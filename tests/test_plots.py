"""The figures that the chapters draw from vaelib.plots, checked without looking at them."""
import pytest
import torch
from matplotlib import pyplot as plt
from matplotlib.image import AxesImage

from vaelib import plots


def test_vae_diagram_names_every_part_of_the_model_and_the_loss():
    ax = plots.vae_diagram()
    text = " ".join(t.get_text() for t in ax.texts)
    for part in ("encoder", "decoder", r"\mu", r"\sigma", r"\varepsilon", r"z = \mu + \sigma \odot \varepsilon",
                 "reconstruction", "KL", r"\beta"):
        assert part in text, part
    assert not [a for a in ax.get_children() if isinstance(a, AxesImage)]  # no pictures asked for
    plt.close(ax.figure)


def test_vae_diagram_draws_the_two_pictures_it_is_given():
    x = torch.zeros(784)
    x[300:320] = 1.0
    ax = plots.vae_diagram(x, 0.5 * x)
    images = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    assert len(images) == 2
    assert images[0].get_array().max() == 1.0 and images[1].get_array().max() == 0.5
    plt.close(ax.figure)
    with pytest.raises(RuntimeError):  # not a 28 x 28 image
        plots.vae_diagram(torch.zeros(100))
