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


class _Linear(torch.nn.Module):
    """A decoder whose image is the code, repeated: enough to see which coordinate a traversal moves."""
    latent_dim = 3

    def decode(self, z):
        return z.repeat_interleave(784 // 3 + 1, dim=1)[:, :784].clamp(0, 1)


def test_traversals_start_from_base_and_move_one_coordinate():
    base = torch.tensor([0.2, 0.4, 0.6])
    walk = plots.traversals(_Linear(), low=0.0, high=1.0, steps=5, base=base).view(3, 5, 784)
    assert torch.allclose(walk[1, :, 0], torch.full((5,), 0.2))  # row 2 walks z2: z1 stays at base
    assert torch.allclose(walk[1, :, 300], torch.linspace(0, 1, 5))  # and z2 goes from low to high
    assert torch.allclose(walk[0, :, 600], torch.full((5,), 0.6))


def test_show_traversals_labels_each_row_as_asked():
    ax = plots.show_traversals(_Linear(), steps=5, row_labels=["z1 thickness", "z2 digit", "z3 slant"])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z1 thickness", "z2 digit", "z3 slant"]
    plt.close(ax.figure)
    ax = plots.show_traversals(_Linear(), steps=5)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z1", "z2", "z3"]
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="one label per latent coordinate"):
        plots.show_traversals(_Linear(), row_labels=["only one"])


def test_show_information_draws_the_matrix_and_writes_each_value():
    information = torch.tensor([[0.9, 0.0], [0.1, 0.5], [0.0, 0.25]])  # (3 units, 2 factors)
    ax = plots.show_information(information, ["digit", "thickness"])
    image = [a for a in ax.get_children() if isinstance(a, AxesImage)][0]
    assert image.get_array().shape == (3, 2) and image.get_array()[0, 0] == pytest.approx(0.9)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["digit", "thickness"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z1", "z2", "z3"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["0.90", "0.00", "0.10", "0.50", "0.00", "0.25"])
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="factor columns"):
        plots.show_information(information, ["digit"])
