import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from vaelib import losses


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(6, 4), torch.randn(6, 4)
    q = D.Normal(mu, (0.5 * logvar).exp())
    p = D.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = D.kl_divergence(q, p).sum()
    assert torch.allclose(losses.kl_to_standard_normal(mu, logvar), expected, rtol=1e-5)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(3, 2)
    assert losses.kl_to_standard_normal(zeros, zeros).item() == 0.0
    assert losses.kl_to_standard_normal(zeros + 0.1, zeros).item() > 0


def test_bce_matches_torch_and_the_logits_version():
    torch.manual_seed(0)
    x = torch.rand(4, 784)
    logits = torch.randn(4, 784) * 3
    x_hat = torch.sigmoid(logits)
    expected = F.binary_cross_entropy(x_hat, x, reduction="sum")
    assert torch.allclose(losses.bce(x_hat, x), expected, rtol=1e-5)
    assert torch.allclose(losses.bce_with_logits(logits, x), expected, rtol=1e-5)


def test_bce_eps_guards_log_zero_like_the_original():
    x = torch.tensor([[1.0, 0.0]])
    x_hat = torch.tensor([[0.0, 1.0]])  # confidently wrong: log(0) without eps
    assert math.isclose(losses.bce(x_hat, x).item(), -2 * math.log(1e-10), rel_tol=1e-5)


def test_vae_loss_total_is_reconstruction_plus_beta_kl():
    torch.manual_seed(0)
    x, logits = torch.rand(8, 784), torch.randn(8, 784)
    mu, logvar = torch.randn(8, 2), torch.randn(8, 2)
    for beta in (0.0, 1.0, 4.0):
        parts = losses.vae_loss(logits, x, mu, logvar, beta)
        assert torch.allclose(parts.total, parts.reconstruction + beta * parts.kl)
    assert torch.equal(losses.vae_loss(logits, x, mu, logvar, 0.0).total, losses.bce_with_logits(logits, x))
    no_kl = losses.vae_loss(logits, x, mu, None, 1.0)  # the autoencoder
    assert no_kl.kl.item() == 0 and torch.equal(no_kl.total, no_kl.reconstruction)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", None])
def test_bad_beta_is_refused(bad):
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        losses.check_beta(bad)


def test_binary_entropy_floor_is_the_bce_of_the_images_against_themselves_and_its_minimum():
    torch.manual_seed(0)
    x = torch.rand(6, 784) * (torch.rand(6, 784) < 0.3)  # grey levels, many exact zeros like MNIST
    x[:, :5] = 1.0
    floor = losses.binary_entropy_floor(x)  # (6,)
    independent = torch.nn.functional.binary_cross_entropy(x.double(), x.double(), reduction="none").sum(1)
    assert torch.allclose(floor.double(), independent, atol=1e-3)
    for _ in range(5):  # any other prediction costs more
        p = (x + 0.05 * torch.randn_like(x)).clamp(1e-4, 1 - 1e-4)
        assert all(losses.bce(p[i:i + 1], x[i:i + 1]) > floor[i] for i in range(len(x)))  # per image
    assert losses.binary_entropy_floor((x > 0.5).float()).abs().max() == 0  # binary images: the floor is 0


def test_bits_per_dim_divides_by_the_pixels_and_ln_2():
    # A fair coin per pixel: -log2 p(x) is exactly 1 bit per pixel, whatever the binary image.
    x = (torch.rand(3, 784) < 0.5).float()
    nats = -D.Bernoulli(probs=torch.full_like(x, 0.5)).log_prob(x).sum(1)  # (3,) nats per image
    assert torch.allclose(losses.bits_per_dim(nats), torch.ones(3), atol=1e-6)
    assert math.isclose(losses.bits_per_dim(math.log(2) * 10, dims=10), 1.0)
    assert math.isclose(losses.bits_per_dim(86.76), 86.76 / math.log(2) / 784)
    with pytest.raises(ValueError, match="dims must be a positive number of pixels"):
        losses.bits_per_dim(1.0, dims=0)


def test_log_likelihood_per_image_is_the_bernoulli_log_probability_of_each_image():
    torch.manual_seed(0)
    x = torch.rand(4, 784)  # grey levels, as the course trains on
    logits = 3 * torch.randn(5, 4, 784)  # five draws of z for each of four images
    reference = D.Bernoulli(logits=logits, validate_args=False).log_prob(x).sum(-1)  # (5, 4)
    assert torch.allclose(losses.log_likelihood_per_image(logits, x), reference, atol=1e-3)
    assert torch.allclose(losses.log_likelihood_per_image(logits[0], x).sum(), -losses.bce_with_logits(logits[0], x))
