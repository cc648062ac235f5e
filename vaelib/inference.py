"""What a model says about an image beyond its encoder's answer: a Gaussian q fitted per image, and the
posterior over z given only some of the pixels, with the completions it implies.

Inpainting by inference (chapter 8): the visible pixels x_v of a digit define a likelihood p(x_v | z);
with the prior it gives the posterior p(z | x_v), and the hidden pixels x_h follow from
p(x_h | x_v) = E_{p(z | x_v)}[p(x_h | z)]. Its mean is the posterior-mean completion (what the mean
squared error rewards); a completion decoded from one draw of z is a posterior sample (a single
plausible digit). For L = 2 the posterior is summed exactly on a grid (`grid.posterior_sums`); beyond,
it is importance-sampled from a Gaussian fitted per image to the visible pixels' ELBO.

Introduced in: 08_beyond (completions), 09_loss (refine_posterior)
"""
from __future__ import annotations

import torch
from torch import nn

from . import grid, losses
from .checks import (check_beta, check_images, check_learning_rate, check_model, check_number, check_positive_int,
                     check_seed, check_visible)
from .evaluate import _elbo, _log_weights, model_device


class FitDiverged(RuntimeError):
    """A per-image fit of q (refine_posterior) reached NaN or infinite parameters."""


def refine_posterior(model: nn.Module, x: torch.Tensor, steps: int = 300, lr: float = 0.01, samples: int = 8,
                     seed: int = 0, beta: float = 1.0, visible: torch.Tensor | None = None,
                     labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gaussian q of each image's own, fitted to its ELBO with the decoder frozen: (mu, logvar), (N, L) each.

    Starts at the encoder's (mu, logvar) and takes `steps` Adam steps on the images' summed -ELBO
    (`samples` draws of z per step; each image's q has its own parameters, so the images do not interact).
    The ELBO gained over the encoder's q is the amortization gap of Cremer, Li and Duvenaud, "Inference
    Suboptimality in Variational Autoencoders" (2018): what one network answering for every image loses
    against the best Gaussian for each. With `visible` (784,) only those pixels count, and the start is the
    encoder's answer for the image with the others grey (0.5): a q of z given the visible pixels.
    A conditional VAE needs `labels` (N,). Runs on the model's device;
    returns CPU tensors. Introduced in: 09_loss
    """
    check_model("model", model), check_images("x", x), check_positive_int("steps", steps, minimum=0)
    check_learning_rate(lr), check_positive_int("samples", samples), check_seed(seed), check_beta(beta)
    visible = None if visible is None else check_visible(visible, len(x))
    model.eval()
    device = model_device(model)
    x = x.to(device)
    y = () if labels is None else (labels.to(device),)
    start = x if visible is None else torch.where(visible.to(device).bool(), x, torch.full_like(x, 0.5))
    with torch.no_grad():
        mu, logvar = model.encode(start, *y)  # (N, L), (N, L)
    mu, logvar = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        optimizer = torch.optim.Adam([mu, logvar], lr=check_learning_rate(lr))
        for step in range(steps):
            loss = -_elbo(model, x, mu, logvar, samples, seed + 1 + step, beta,
                          None if visible is None else visible.to(device), y).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    except RuntimeError as error:  # an lr so large that Adam's step overflows
        raise FitDiverged(f"refine_posterior diverged ({' '.join(str(error).split())[:80]}): lower lr (lr={lr})") from None
    finally:
        for p, flag in zip(model.parameters(), frozen):
            p.requires_grad_(flag)
    if not (torch.isfinite(mu).all() and torch.isfinite(logvar).all()):  # after the last step too
        raise FitDiverged(f"refine_posterior diverged: its (mu, logvar) became NaN or infinite; lower lr (lr={lr})")
    return mu.detach().cpu(), logvar.detach().cpu()


def _filled(x: torch.Tensor, visible: torch.Tensor, guess: torch.Tensor) -> torch.Tensor:
    """The visible pixels of x as they are, the hidden ones from `guess`.  (N, 784) each."""
    return torch.where(visible.bool(), x, guess)


@torch.no_grad()
def complete_on_grid(model: nn.Module, x: torch.Tensor, visible: torch.Tensor, step: float = 0.05,
                     seed: int = 0) -> dict:
    """Complete each image from the exact posterior p(z | visible pixels) of a 2-D model.  x (N, 784)

    Returns "mean" and "sample" (N, 784), the posterior-mean and one posterior-sample completion (the
    visible pixels kept), "log_p_hidden" (N,), log p(x_hidden | x_visible) = log p(x) - log p(x_visible),
    both summed on the grid, and "mean_z", "sample_z" (N, 2). Introduced in: 08_beyond
    """
    check_model("model", model), check_images("x", x), check_seed(seed)
    visible = check_visible(visible, len(x))
    seen = grid.posterior_sums(model, x, visible=visible.float(), step=step, means=True, sample_seed=seed)
    whole = grid.posterior_sums(model, x, step=step)
    device = model_device(model)
    sample = model.decode(seen["sample_z"].to(device)).float().cpu()
    return {"mean": _filled(x, visible, seen["mean_probs"]), "sample": _filled(x, visible, sample),
            "log_p_hidden": whole["log_px"] - seen["log_px"], "mean_z": seen["mean_z"], "sample_z": seen["sample_z"]}


@torch.no_grad()
def complete_by_sampling(model: nn.Module, x: torch.Tensor, visible: torch.Tensor, k: int = 500, steps: int = 100,
                         seed: int = 0, sigma_scale: float = 1.5) -> dict:
    """Complete each image from p(z | visible pixels) of a model with any L, by importance sampling.

    The proposal is a Gaussian fitted per image to the visible pixels' ELBO (`refine_posterior` with
    `visible`, `steps` Adam steps), its sigma widened by `sigma_scale` (a proposal narrower than the
    posterior misses mass, chapter 9). k draws with self-normalized weights w_i ~ p(x_v, z_i) / r(z_i):
    "mean" = sum_i w_i sigmoid(logits_i) on the hidden pixels, "sample" from one draw picked by its
    weight, "log_p_hidden" ~ log sum_i w_i p(x_h | z_i) (an estimate, not a bound), "ess" (N,), the
    weights' effective sample size. Same keys as `complete_on_grid`. Introduced in: 08_beyond
    """
    check_model("model", model), check_images("x", x), check_positive_int("k", k)
    visible = check_visible(visible, len(x))
    check_positive_int("steps", steps, minimum=0), check_seed(seed), check_number("sigma_scale", sigma_scale, strict=True)
    with torch.enable_grad():
        posterior = refine_posterior(model, x, steps=steps, lr=0.05, samples=4, seed=seed, visible=visible)
    hidden = 1.0 - visible.float()
    generator = torch.Generator().manual_seed(seed)
    means, samples, log_p_hidden, sizes, start = [], [], [], [], 0
    for log_w, logits, _ in _log_weights(model, x, k, seed, posterior=posterior, sigma_scale=sigma_scale,
                                         visible=visible.float()):
        b = log_w.shape[1]
        batch = x[start : start + b].to(logits.device)
        start += b
        weights = torch.softmax(log_w, 0)  # (k, b): self-normalized
        probs = torch.sigmoid(logits)  # (k, b, 784)
        means.append((weights[..., None] * probs).sum(0).cpu())  # (b, 784)
        picked = torch.multinomial(weights.T.cpu(), 1, generator=generator).flatten()  # (b,)
        samples.append(probs[picked, torch.arange(b)].cpu())  # (b, 784)
        log_hidden = losses.log_likelihood_per_image(logits, batch, hidden)  # (k, b): log p(x_h | z_i)
        log_p_hidden.append(torch.logsumexp(torch.log(weights.clamp_min(1e-300)) + log_hidden, 0).cpu())
        sizes.append((1.0 / weights.pow(2).sum(0)).cpu())  # (b,)
    return {"mean": _filled(x, visible, torch.cat(means)), "sample": _filled(x, visible, torch.cat(samples)),
            "log_p_hidden": torch.cat(log_p_hidden), "ess": torch.cat(sizes)}


def neighbour_completion(x: torch.Tensor, visible: torch.Tensor, train_x: torch.Tensor, k: int = 1,
                         batch_size: int = 1000) -> torch.Tensor:
    """The mean hidden part of the k training images nearest to each image on its visible pixels.  (N, 784)

    k = 1 is the nearest neighbour; a larger k averages several plausible completions (better mean
    squared error, blurrier digit). Squared pixel distance over the visible pixels. Introduced in: 08_beyond
    """
    check_images("x", x), check_images("train_x", train_x), check_positive_int("batch_size", batch_size)
    seen = check_visible(visible, len(x), per_image=False)
    check_positive_int("k", k, maximum=len(train_x))
    guesses = []
    for start in range(0, len(x), batch_size):
        distances = torch.cdist(x[start : start + batch_size][:, seen], train_x[:, seen])  # (b, T)
        nearest = distances.topk(k, dim=1, largest=False).indices  # (b, k)
        guesses.append(train_x[nearest].mean(1))  # (b, 784)
    return _filled(x, visible, torch.cat(guesses))


def choose_neighbours(train_x: torch.Tensor, visible: torch.Tensor, candidates=(1, 2, 5, 10, 20, 50),
                      queries: int = 2000) -> dict:
    """k for `neighbour_completion` chosen on training images only: the last `queries` training images
    are completed from the others, and the k with the lowest mean squared error on the hidden pixels
    wins. Returns {"k": best, "mse": {k: mse}}. Introduced in: 08_beyond
    """
    check_images("train_x", train_x), check_positive_int("queries", queries, maximum=len(train_x) - 1)
    hidden = ~check_visible(visible, len(train_x), per_image=False)
    if (isinstance(candidates, (str, bytes)) or not isinstance(candidates, (list, tuple, range)) or not candidates
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in candidates)):
        raise ValueError(f"candidates must be a list of integers k >= 1, got {candidates!r:.60}")
    pool, held = train_x[:-queries], train_x[-queries:]
    scores = {k: ((neighbour_completion(held, visible, pool, k) - held)[:, hidden] ** 2).mean().item()
              for k in candidates}
    return {"k": min(scores, key=scores.get), "mse": scores}


@torch.no_grad()
def complete_by_loop(model: nn.Module, x: torch.Tensor, visible: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """The heuristic loop: fill the hidden pixels with grey, encode, decode, copy the decoded hidden pixels
    back, `iterations` times. It infers nothing: the encoder was trained on whole digits and is handed a
    half-grey one. Kept as the baseline that inference beats (chapter 8).  (N, 784) -> (N, 784)
    """
    check_model("model", model), check_images("x", x), check_positive_int("iterations", iterations)
    device = model_device(model)
    seen = check_visible(visible, len(x)).to(device)
    x = x.to(device)
    filled = torch.where(seen, x, torch.full_like(x, 0.5))
    for _ in range(iterations):
        mu, _ = model.encode(filled)
        filled = torch.where(seen, x, model.decode(mu))
    return filled.cpu()
