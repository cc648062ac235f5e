"""What a model says about an image beyond its encoder's answer: a Gaussian q fitted per image.

Introduced in: 09_loss (refine_posterior)
"""
from __future__ import annotations

import torch
from torch import nn

from .checks import check_beta, check_images, check_learning_rate, check_model, check_positive_int, check_seed
from .evaluate import elbo


def refine_posterior(model: nn.Module, x: torch.Tensor, steps: int = 300, lr: float = 0.01, samples: int = 8,
                     seed: int = 0, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gaussian q of each image's own, fitted to its ELBO with the decoder frozen: (mu, logvar), (N, L) each.

    Starts at the encoder's (mu, logvar) and takes `steps` Adam steps on the images' summed -ELBO
    (`samples` draws of z per step; each image's q has its own parameters, so the images do not interact).
    The ELBO gained over the encoder's q is the amortization gap of Cremer, Li and Duvenaud, "Inference
    Suboptimality in Variational Autoencoders" (2018): what one network answering for every image loses
    against the best Gaussian for each. Introduced in: 09_loss
    """
    check_model("model", model), check_images("x", x), check_positive_int("steps", steps, minimum=0)
    check_learning_rate(lr), check_positive_int("samples", samples), check_seed(seed), check_beta(beta)
    model.eval()
    with torch.no_grad():
        mu, logvar = model.encode(x)  # (N, L), (N, L)
    mu, logvar = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        optimizer = torch.optim.Adam([mu, logvar], lr=check_learning_rate(lr))
        for step in range(steps):
            loss = -elbo(model, x, mu, logvar, samples=samples, seed=seed + 1 + step, beta=beta).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for p, flag in zip(model.parameters(), frozen):
            p.requires_grad_(flag)
    return mu.detach(), logvar.detach()
