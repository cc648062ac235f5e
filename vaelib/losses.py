"""The VAE loss: binary cross-entropy reconstruction plus beta times the KL divergence to N(0, I).

All functions sum over pixels, latent units and the batch; divide by the batch size for a per-image
value. Introduced in: 03_vae
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .checks import check_beta, check_free_bits, check_images, check_number, check_positive_int  # noqa: F401  (their home is checks.py)

EPS = 1e-10  # the original's guard against log(0)


class LossParts(NamedTuple):
    total: torch.Tensor  # reconstruction + beta * kl
    reconstruction: torch.Tensor  # -log p(x | z), summed
    kl: torch.Tensor  # KL(q(z | x) || N(0, I)), summed


def bce(x_hat: torch.Tensor, x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """-sum(x log(eps + x_hat) + (1 - x) log(eps + 1 - x_hat)), as the original writes it.

    x_hat, x: (B, 784) in [0, 1] -> a scalar. The brackets in `eps + (1 - x_hat)` matter: in float32,
    (eps + 1) rounds to exactly 1, and the guard would vanish for x_hat = 1.
    """
    check_number("eps", eps)
    return -torch.sum(x * torch.log(eps + x_hat) + (1 - x) * torch.log(eps + (1 - x_hat)))


def bce_with_logits(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The same sum from the decoder's logits, x_hat = sigmoid(logits), without overflow or log(0)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum")


def log_likelihood_per_image(logits: torch.Tensor, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x | z) of each image under the decoder's Bernoulli pixels: minus its BCE, summed over pixels.

    logits (..., N, 784), x (N, 784), broadcast over the leading dimensions (one per draw of z) -> (..., N).
    `visible` (784,) or (N, 784), 1 for a pixel that is seen: only those count (chapter 8's half digits).
    Introduced in: 04_beta (the importance-weighted bound), 09_loss (`train.elbo`)
    """
    if visible is not None and not isinstance(visible, torch.Tensor):
        raise ValueError(f"visible must be None or a tensor (784,) or (N, 784) of the pixels seen, got {type(visible).__name__}")
    per_pixel = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    return -(per_pixel if visible is None else per_pixel * visible.to(per_pixel)).sum(-1)


def kl_terms(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) of each image and latent unit, in closed form.  (B, L), (B, L) -> (B, L)

    -1/2 * (1 + log(sigma^2) - mu^2 - sigma^2): Kingma and Welling, "Auto-Encoding Variational Bayes"
    (2014), Appendix B. The sums below, and `train.elbo`'s per-image KL, add these up.
    """
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in closed form, summed.  (B, L), (B, L) -> a scalar."""
    return torch.sum(kl_terms(mu, logvar))


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The same KL, one value per latent dimension, summed over the batch.  (B, L), (B, L) -> (L,)

    Its entries add up to `kl_to_standard_normal`. A dimension whose KL is about 0 for every image has
    a posterior equal to the prior: it carries nothing about x (posterior collapse, chapter 10).
    Introduced in: 10_collapse
    """
    return torch.sum(kl_terms(mu, logvar), dim=0)


def free_bits_kl(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL term with free bits, summed over the batch: B * sum_j max(free_bits, KL_j / B).  -> a scalar

    KL_j / B is dimension j's KL averaged over the batch. Below `free_bits` nats a dimension's KL costs a
    constant, so the gradient stops pushing it onto the prior (Kingma et al. 2016, "Improved Variational
    Inference with Inverse Autoregressive Flow", eq. 15, with one group per dimension). With
    free_bits = 0 it is `kl_to_standard_normal`. A training objective only: the -ELBO uses the plain KL.
    Introduced in: 10_collapse
    """
    batch = mu.shape[0]
    per_dimension = kl_per_dimension(mu, logvar) / batch  # (L,) nats per image
    return batch * per_dimension.clamp(min=free_bits).sum()


def vae_loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | None,
             beta: float = 1.0, free_bits: float = 0.0) -> LossParts:
    """Negative ELBO with a weight on its KL term: BCE + beta * KL, and its two parts.

    logits (B, 784), x (B, 784), mu and logvar (B, L). `logvar=None` (the autoencoder) has no KL term;
    beta = 0 trains a VAE as a plain autoencoder with a noisy code. With `free_bits` > 0 the total
    (the objective) uses `free_bits_kl`; the `kl` part stays the plain KL.
    """
    check_beta(beta), check_free_bits(free_bits)  # plain numbers: no cost in the training loop
    reconstruction = bce_with_logits(logits.float(), x)
    if logvar is None:
        kl = logits.new_zeros(())
        return LossParts(reconstruction + beta * kl, reconstruction, kl)
    kl = kl_to_standard_normal(mu.float(), logvar.float())
    charged = free_bits_kl(mu.float(), logvar.float(), free_bits) if free_bits > 0 else kl
    return LossParts(reconstruction + beta * charged, reconstruction, kl)


def binary_entropy_floor(x: torch.Tensor) -> torch.Tensor:
    """The smallest BCE any model can reach on grey-level images `x`, per image (nats): (B, 784) -> (B,).

    For a pixel of grey level x the BCE -x log p - (1 - x) log(1 - p) is smallest at p = x, where it
    equals the binary entropy H(x) = -x log x - (1 - x) log(1 - x). It is 0 only for pixels that are
    exactly 0 or 1, so on grey-level MNIST no model's BCE gets near 0: the mean of this sum over the
    test set is the floor to read a BCE against (chapters 3 and 4).
    Introduced in: 03_vae
    """
    x = check_images("x", x.flatten(1) if isinstance(x, torch.Tensor) and x.ndim > 2 else x).double()
    entropy = -(torch.special.xlogy(x, x) + torch.special.xlogy(1 - x, 1 - x))  # (B, 784), 0 at 0 and 1
    return entropy.sum(dim=1).float()


def bits_per_dim(nats_per_image, dims: int = 784):
    """Nats per image -> bits per pixel: divide by dims * ln 2 (a float or a tensor, elementwise).

    A nat is the unit of a natural logarithm; one bit is ln 2 = 0.693 nats. Dividing a -log p(x) of a
    whole image by its number of pixels makes models of images of different sizes comparable (the
    literature's "bits/dim"). Introduced in: 09_loss
    """
    if isinstance(dims, bool) or not isinstance(dims, int) or dims <= 0:
        raise ValueError(f"dims must be a positive number of pixels, got {dims!r:.40}")
    return nats_per_image / (dims * math.log(2))
