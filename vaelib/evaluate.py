"""Test metrics of a trained model: the loss and its parts, the importance-weighted bound, the ELBO of any
Gaussian q, the latent means of a dataset, the active units.

Each metric takes `labels` (N,) for a conditional VAE, which reads the digit beside each image. Each moves
its images to the model's device (`model_device`) and returns per-image values on the CPU.

Introduced in: 03_vae (evaluate), 04_beta (importance-weighted bound, active units), 09_loss (the ELBO of
any Gaussian q), 11_conditional (labels)
"""
from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from . import grid, losses, models
from .checks import (check_beta, check_choice, check_flag, check_images, check_labels, check_model, check_number,
                     check_optional_int, check_positive_int, check_seed, check_visible)
from .device import autocast


MAX_K = 100_000  # importance samples: k = 1000 is the literature's; 100,000 already takes minutes per image batch


def model_device(model: nn.Module) -> torch.device:
    """The device that holds the model's weights: every metric moves its tensors there.

    A stand-in with no weights of its own (chapter 11 wraps a conditional decoder told one digit as an
    object with only `decode`) is taken to be on the CPU.
    """
    parameters = getattr(model, "parameters", None)
    first = next(parameters(), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, beta: float = 1.0, batch_size: int = 1000, seed: int = 0,
             precision: str = "float32", labels: torch.Tensor | None = None) -> dict:
    """Per-image test loss (BCE + beta * KL) and its parts, with one z sampled per image.

    With beta = 1, `loss` is the negative ELBO in nats: an upper bound on -log p(x) of the model's Bernoulli
    decoder, which is a probability only for binary images (see `losses.binary_entropy_floor`). The sampling
    uses its own seed and leaves the global random state as it was. A conditional VAE needs `labels` (N,):
    its `loss` then bounds -log p(x | y).
    """
    check_model("model", model), check_images("x", x), check_beta(beta), check_positive_int("batch_size", batch_size)
    check_seed(seed), check_choice("precision", precision, ("float32", "bfloat16", "float16"))
    labels = conditions(model, labels, len(x))
    device = model_device(model)
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device)
            with autocast(device, precision):
                logits, mu, logvar = model(batch, *_rows(labels, start, batch_size, device))
            sums += torch.stack([p for p in losses.vae_loss(logits, batch, mu, logvar, beta)]).double().cpu()
    return dict(zip(("loss", "reconstruction", "kl"), (sums / len(x)).tolist()))


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


@torch.no_grad()
def importance_weighted_bound(model: nn.Module, x: torch.Tensor, k: int = 1000, seed: int = 0,
                              images_per_chunk: int | None = None, decode_batch: int = 8192,
                              progress: bool = False, posterior: tuple | None = None,
                              labels: torch.Tensor | None = None, sigma_scale: float = 1.0,
                              prior_share: float = 0.0) -> torch.Tensor:
    """log p(x) >= log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), per image.  (N, 784) -> (N,)

    Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders" (2016), eq. 8. With k = 1 it is
    the ELBO; it tightens as k grows. Computed with log-sum-exp, in chunks of images. q is the encoder's,
    or the Gaussians `posterior = (mu, logvar)`, each (N, L), when given (`refine_posterior`'s).
    The proposal can be made wider than q (chapter 9): `sigma_scale` multiplies its sigma, and
    `prior_share` draws that share of the z from the prior N(0, I) instead (a mixture, so that no region
    the prior covers is missed). Any proposal gives a lower bound; one much narrower than the true
    posterior gives a loose one however large k is (`effective_sample_size` shows it).
    A conditional VAE needs `labels` (N,), and bounds log p(x | y): every term is conditioned on the label.
    Introduced in: 04_beta
    """
    check_model("model", model), check_images("x", x), check_positive_int("k", k, maximum=MAX_K), check_seed(seed)
    check_optional_int("images_per_chunk", images_per_chunk), check_positive_int("decode_batch", decode_batch)
    check_flag("progress", progress), check_posterior(posterior, len(x))
    bounds = [torch.logsumexp(log_w, dim=0) - math.log(k)  # (b,)
              for log_w, _, _ in _log_weights(model, x, k, seed, images_per_chunk, decode_batch, progress, posterior,
                                        labels, sigma_scale, prior_share)]
    return torch.cat(bounds).cpu()


@torch.no_grad()
def effective_sample_size(model: nn.Module, x: torch.Tensor, k: int = 1000, seed: int = 0, **proposal) -> torch.Tensor:
    """Kish's effective number of the k importance samples of each image: (sum w)^2 / sum w^2.  (N,)

    k when every weight is equal; near 1 when one draw takes all the weight, and then the IW bound is
    about as loose as that one draw's. `proposal`: importance_weighted_bound's posterior, labels,
    sigma_scale, prior_share. Introduced in: 09_loss
    """
    check_model("model", model), check_images("x", x), check_positive_int("k", k, maximum=MAX_K), check_seed(seed)
    unknown = sorted(set(proposal) - {"posterior", "labels", "sigma_scale", "prior_share"})
    if unknown:
        raise ValueError(f"effective_sample_size has no setting {unknown[0]!r}: choose from posterior, labels, "
                         f"sigma_scale, prior_share")
    check_posterior(proposal.get("posterior"), len(x))
    sizes = [torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))  # (b,)
             for log_w, _, _ in _log_weights(model, x, k, seed, **proposal)]
    return torch.cat(sizes).cpu()


def _log_weights(model, x, k, seed, images_per_chunk=None, decode_batch=8192, progress=False, posterior=None,
                 labels=None, sigma_scale=1.0, prior_share=0.0, visible=None):
    """Per chunk of images: log p(x_vis, z_i) - log r(z_i | x) (k, b) of k draws z_i from the proposal r,
    the logits (k, b, 784) and the draws (k, b, L). `visible` (784,): only those pixels count."""
    check_positive_int("k", k, maximum=MAX_K)
    sigma_scale = check_number("sigma_scale", sigma_scale, strict=True)
    prior_share = check_number("prior_share", prior_share)
    if prior_share >= 1:
        raise ValueError(f"prior_share must be below 1 (the encoder's q must keep a share), got {prior_share}")
    labels = conditions(model, labels, len(x))
    device = model_device(model)
    model.eval()
    chunk = images_per_chunk or max(1, decode_batch // k)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(x), chunk), desc="IW bound", disable=not progress):
            batch = x[start : start + chunk].to(device)  # (b, 784)
            y = _rows(labels, start, chunk, device)  # ((b,),) for a conditional VAE, else ()
            if posterior is None:
                mu, logvar = model.encode(batch, *y)  # (b, L)
            else:
                mu, logvar = (p[start : start + chunk].to(device) for p in posterior)  # (b, L)
            if logvar is None:
                raise ValueError("the importance-weighted bound needs a VAE: this model has no logvar")
            logvar = logvar + 2 * math.log(sigma_scale)  # (b, L): sigma times sigma_scale
            z = mu + torch.randn(k, *mu.shape, device=device) * (0.5 * logvar).exp()  # (k, b, L)
            zeros = torch.zeros_like(z)
            if prior_share > 0:  # the mixture: each draw from the prior with probability prior_share
                from_prior = torch.rand(k, len(batch), 1, device=device) < prior_share  # (k, b, 1)
                z = torch.where(from_prior, torch.randn_like(z), z)
            flat_z = z.reshape(-1, z.shape[-1])  # (k*b, L)
            flat_y = y[0].repeat(k) if y else None  # (k*b,): the label of each z's image, in z's order
            logits = torch.cat([model.decode_logits(flat_z[i : i + decode_batch], *_rows(flat_y, i, decode_batch, device))
                                for i in range(0, len(flat_z), decode_batch)])
            logits = logits.view(k, len(batch), 784)  # (k, b, 784)
            log_px_z = losses.log_likelihood_per_image(logits, batch, visible)  # (k, b)
            log_pz = _log_normal(z, zeros, zeros)  # (k, b)
            log_qz = _log_normal(z, mu, logvar)  # (k, b)
            if prior_share > 0:
                log_qz = torch.logaddexp(math.log1p(-prior_share) + log_qz, math.log(prior_share) + log_pz)
            yield log_px_z + log_pz - log_qz, logits, z  # (k, b), (k, b, 784), (k, b, L)


def elbo(model: nn.Module, x: torch.Tensor, mu: torch.Tensor | None = None, logvar: torch.Tensor | None = None,
         samples: int = 1, seed: int = 0, beta: float = 1.0, visible: torch.Tensor | None = None,
         labels: torch.Tensor | None = None) -> torch.Tensor:
    """The ELBO of each image, E_q[log p(x | z)] - beta * KL(q || N(0, I)), in nats.  (N, 784) -> (N,)

    q = N(mu, diag(exp(logvar))), each (N, L): the encoder's when not given. The expectation is a mean over
    `samples` draws of z (reparameterized, so it has gradients with respect to mu and logvar); the KL is
    exact. Uses its own seed and leaves the global random state as it was. `visible` (784,): only those
    pixels count (the ELBO of log p(x_visible), chapter 8). A conditional VAE needs `labels` (N,).
    Introduced in: 09_loss
    """
    check_model("model", model), check_images("x", x), check_positive_int("samples", samples), check_seed(seed)
    check_beta(beta), check_posterior(None if mu is None and logvar is None else (mu, logvar), len(x))
    visible = None if visible is None else check_visible(visible, len(x))
    labels = conditions(model, labels, len(x))
    device = model_device(model)
    x, mu, logvar = (None if t is None else t.to(device) for t in (x, mu, logvar))
    y = () if labels is None else (labels.to(device),)
    return _elbo(model, x, mu, logvar, samples, seed, beta, visible, y).cpu()  # (N,), differentiable back to mu, logvar


def _elbo(model, x, mu, logvar, samples, seed, beta, visible=None, y=()) -> torch.Tensor:
    """`elbo` on the model's device, for tensors already there (refine_posterior's loop); y: (labels,) or ()."""
    if mu is None:
        mu, logvar = model.encode(x, *y)  # (N, L), (N, L)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = mu + torch.randn(samples, *mu.shape).to(mu.device) * (0.5 * logvar).exp()  # (S, N, L)
    flat_y = () if not y else (y[0].repeat(samples),)  # (S*N,): each draw's label
    logits = model.decode_logits(z.reshape(-1, z.shape[-1]), *flat_y).view(samples, len(x), -1)  # (S, N, 784)
    log_px_z = losses.log_likelihood_per_image(logits, x, visible).mean(0)  # (S, N) -> (N,)
    kl = losses.kl_terms(mu, logvar).sum(-1)  # (N,)
    return log_px_z - beta * kl


@torch.no_grad()
def encode_dataset(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                   batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latent means `mu` (N, L) of every image (the autoencoder: its code), with the labels.

    A conditional VAE encodes each image with its label `y`: q(z | x, y).
    """
    check_model("model", model), check_images("x", x), check_positive_int("batch_size", batch_size)
    condition = conditions(model, y if models.is_conditional(model) else None, len(x), "y")  # plain: y only passes through
    device = model_device(model)
    model.eval()
    mus = [model.encode(x[s : s + batch_size].to(device), *_rows(condition, s, batch_size, device))[0].cpu()
           for s in range(0, len(x), batch_size)]
    return torch.cat(mus), y


@torch.no_grad()
def active_units(model: nn.Module, x: torch.Tensor, threshold: float = 0.01,
                 labels: torch.Tensor | None = None) -> tuple[int, torch.Tensor]:
    """Units u whose Var_x(E_q[z_u | x]) exceeds `threshold` (Burda et al. 2016, section 5.2).

    Returns the count and the per-unit variances (L,). A conditional VAE needs `labels` (N,).
    Introduced in: 04_beta
    """
    check_number("threshold", threshold)
    mu, _ = encode_dataset(model, x, labels)  # (N, L)
    variance = mu.double().var(dim=0)  # (L,)
    return int((variance > threshold).sum()), variance.float()


def check_posterior(posterior, count: int) -> None:
    """None, or Gaussians (mu, logvar) for `count` images: two float tensors (N, L) of one shape, finite."""
    if posterior is None:
        return
    if (not isinstance(posterior, (tuple, list)) or len(posterior) != 2
            or not all(isinstance(p, torch.Tensor) and p.is_floating_point() and p.ndim == 2 for p in posterior)
            or posterior[0].shape != posterior[1].shape or len(posterior[0]) != count):
        raise ValueError(f"the posterior must be (mu, logvar), two float tensors (N, L) with N = {count}, one row "
                         f"per image: pass what refine_posterior returns")
    if not all(torch.isfinite(p).all() for p in posterior):
        raise ValueError("the posterior (mu, logvar) holds NaN or infinite values: refit it with a smaller lr")


def conditions(model: nn.Module, labels: torch.Tensor | None, count: int, name: str = "labels") -> torch.Tensor | None:
    """`labels` checked for `model`: (N,) digits for a conditional VAE, which needs them; None for any other.

    Introduced in: 11_conditional
    """
    if not models.is_conditional(model):
        if labels is not None:
            raise ValueError(f"{name} were given, but a {type(model).__name__} does not read labels: leave them out")
        return None
    if labels is None:
        raise ValueError(f"a {type(model).__name__} reads the digit beside each image: pass {name}= (N,) digits")
    return check_labels(name, labels, count, model.num_classes)


def _rows(labels: torch.Tensor | None, start: int, size: int, device) -> tuple:
    """(labels[start : start + size] on `device`,) to pass after the images, or () when there are none."""
    return () if labels is None else (labels[start : start + size].to(device),)


def log_likelihood_grid(model: nn.Module, x: torch.Tensor, step: float = 0.05,
                        labels: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x) of each image, exactly up to the grid's error, for a model with a 2-D code.  (N, 784) -> (N,)

    A Riemann sum of p(x | z) p(z) over a square grid of spacing `step` that covers every image's
    posterior: it starts from the prior's +-4 and the encoder's mu +- 6 sigma and is widened until the
    log joint on its border lies 25 nats below each image's peak (`grid.posterior_sums` says how). Halve
    the step to check it. A conditional VAE needs `labels` (N,) and gives log p(x | y). The autoencoder
    (no prior) and L > 2 are refused: there, use `importance_weighted_bound`, a lower bound.
    Introduced in: 09_loss
    """
    return grid.posterior_sums(model, x, step=step, labels=labels)["log_px"].float()
