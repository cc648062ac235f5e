"""Exact sums over a two-dimensional code: log p(x), the posterior p(z | x) and its expectations, on a grid.

With L = 2 the integral p(x) = int p(x | z) p(z) dz is over a plane, and a Riemann sum on a square grid of
spacing h computes it: p(x) ~ sum_g p(x | z_g) p(z_g) h^2. The decoder's log-probability is linear in
the pixels, log p(x | z) = sum_i x_i l_i(z) - log(1 + e^{l_i(z)}) with l the logits, so one matrix product
scores every image at every grid point. The posterior on the grid is the softmax of the log joint, and
any expectation under it (the completion of a half-seen digit, chapter 8) is one more product.

How the square is chosen: it starts as the smallest one holding [-4, 4]^2 (99.99 % of the prior's mass
in each coordinate) and, when the encoder is given the images, every image's mu +- 6 sigma. Then it is
checked: for every image, the log joint on the square's border must lie `margin` nats (default 25) below
its maximum inside. Where it does not, the side that failed is pushed out by half the square's width and
the sum is done again (at most `MAX_GROWTH` times; then an error names the images). A posterior that
carries mass beyond its border cannot hide. The spacing is the caller's; halve it to check it
(`evaluate.log_likelihood_grid`'s test does: at 0.05, the shipped models move by < 0.05 nats).
Introduced in: 09_loss
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import models
from .checks import check_flag, check_images, check_model, check_number, check_positive_int, check_seed, check_visible

START_HALF_WIDTH = 4.0  # the prior's N(0, 1) puts 99.99 % of its mass within +-4 in each coordinate
MAX_GROWTH = 6  # pushes of a failing side before giving up
MAX_POINTS = 4_000_000  # grid points: beyond this, one sum takes minutes; the error says so


def has_exact_likelihood(model: nn.Module) -> bool:
    """True for a model whose p(x) the grid can sum: a prior over a 2-D code (VAE, conv VAE, CVAE)."""
    return (hasattr(model, "decode_logits") and not isinstance(model, models.Autoencoder)
            and getattr(model, "latent_dim", None) == 2)


def check_two_dimensional(model: nn.Module) -> None:
    """Only a model with a prior over a 2-D code has a log p(x) that a plane of codes can sum."""
    if not hasattr(model, "decode_logits") or isinstance(model, models.Autoencoder):
        raise ValueError(f"a {type(model).__name__} has no prior over its code, so no p(x) to compute: "
                         "use a VAE, a conv VAE or a conditional VAE")
    if getattr(model, "latent_dim", None) != 2:
        raise ValueError(f"the grid sums over a 2-D code; this model's latent_dim is {getattr(model, 'latent_dim', None)}: "
                         "for L > 2 use evaluate.importance_weighted_bound")


def _axes(box: torch.Tensor, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid's two axes from box (2, 2) = [[low1, high1], [low2, high2]], on multiples of `step`."""
    axes = [torch.arange(math.floor(lo / step), math.ceil(hi / step) + 1, dtype=torch.float64) * step
            for lo, hi in box.tolist()]
    return axes[0], axes[1]


def _log_joint_sums(model, x, visible, box, step, chunk, means: bool, sample_gen):
    """One pass over the grid of `box`: per image, log sum_g p(x_vis, z_g) h^2, the border's and the inside's
    largest log joint, and (if `means`) the posterior mean of the pixels' probabilities and of z."""
    device = next(model.parameters()).device
    axis1, axis2 = _axes(box, step)
    if len(axis1) * len(axis2) > MAX_POINTS:
        raise ValueError(f"the grid would need {len(axis1) * len(axis2):,} points (box {box.tolist()}, step {step}): "
                         "use a coarser step")
    z_all = torch.cartesian_prod(axis1, axis2)  # (G, 2), float64
    border = ((z_all[:, 0] == axis1[0]) | (z_all[:, 0] == axis1[-1])
              | (z_all[:, 1] == axis2[0]) | (z_all[:, 1] == axis2[-1]))  # (G,)
    n = len(x)
    xv = (x * visible).float().to(device)  # (N, 784): hidden pixels count for nothing
    vis = visible.float().to(device)  # (N, 784) or (1, 784)
    lse = torch.full((n,), -math.inf, dtype=torch.float64, device=device)
    top = torch.full((n,), -math.inf, dtype=torch.float64, device=device)
    top_border = top.clone()
    mean_p = torch.zeros(n, 784, dtype=torch.float64, device=device) if means else None
    mean_z = torch.zeros(n, 2, dtype=torch.float64, device=device) if means else None
    best = torch.full((n,), -math.inf, dtype=torch.float64, device=device)  # Gumbel-max: one posterior draw
    drawn = torch.zeros(n, 2, dtype=torch.float64, device=device)
    for start in range(0, len(z_all), chunk):
        z = z_all[start : start + chunk]  # (g, 2)
        logits = model.decode_logits(z.float().to(device)).float()  # (g, 784)
        softplus = nn.functional.softplus(logits)  # (g, 784)
        # (N, g): log p(x_visible | z_g) + log p(z_g), in float32 (error ~1e-4 nats); the sums over g in float64
        shared = softplus @ vis[0] if len(vis) == 1 else None  # (g,): the same visible pixels for every image
        zd = z.to(device)
        log_joint = (xv @ logits.T - (shared if shared is not None else vis @ softplus.T)
                     - (0.5 * zd.pow(2).sum(1) + math.log(2 * math.pi)).float())  # (N, g)
        peak = log_joint.max(1).values  # (N,)
        top = torch.maximum(top, peak.double())
        on_border = border[start : start + chunk].to(device)
        if on_border.any():
            top_border = torch.maximum(top_border, log_joint[:, on_border].max(1).values.double())
        scaled = torch.exp(log_joint - peak[:, None])  # (N, g) in (0, 1]
        chunk_lse = peak.double() + scaled.sum(1, dtype=torch.float64).log()  # (N,)
        new_lse = torch.logaddexp(lse, chunk_lse)  # (N,)
        if means:
            old = torch.exp(lse - new_lse)[:, None]  # (N, 1): rescale the running sums
            weights = scaled * torch.exp(peak.double() - new_lse).float()[:, None]  # (N, g), summing to <= 1
            mean_p = mean_p * old + (weights @ torch.sigmoid(logits)).double()  # (N, 784)
            mean_z = mean_z * old + weights.double() @ zd
        if sample_gen is not None:
            gumbel = -torch.log(-torch.log(torch.rand(log_joint.shape, generator=sample_gen).clamp_min(1e-30))).to(device)
            score, where = (log_joint.double() + gumbel).max(1)
            better = score > best
            best = torch.where(better, score, best)
            drawn[better] = zd[where[better]]
        lse = new_lse
    result = {"log_px": (lse + 2 * math.log(step)).cpu(), "top": top.cpu(), "top_border": top_border.cpu()}
    if means:
        result |= {"mean_probs": mean_p.float().cpu(), "mean_z": mean_z.float().cpu()}
    if sample_gen is not None:
        result["sample_z"] = drawn.float().cpu()
    return result


class _OneLabel(nn.Module):
    """A conditional VAE told the same digit for every image: a plain encoder and decoder to the grid."""

    def __init__(self, model: nn.Module, digit: int):
        super().__init__()
        self.model, self.digit, self.latent_dim = model, digit, model.latent_dim

    def _y(self, count: int, device) -> torch.Tensor:
        return torch.full((count,), self.digit, dtype=torch.long, device=device)

    def encode(self, x):
        return self.model.encode(x, self._y(len(x), x.device))

    def decode_logits(self, z):
        return self.model.decode_logits(z, self._y(len(z), z.device))


@torch.no_grad()
def posterior_sums(model: nn.Module, x: torch.Tensor, visible: torch.Tensor | None = None, step: float = 0.05,
                   labels: torch.Tensor | None = None, margin: float = 25.0, means: bool = False,
                   sample_seed: int | None = None, chunk: int = 4096) -> dict:
    """The grid's sums for images x (N, 784), of which only the `visible` pixels (784,) or (N, 784) are seen.

    Returns "log_px" (N,): log p(x_visible) (all pixels: log p(x)); with `means`, "mean_probs" (N, 784),
    E[sigmoid(logits(z)) | x_visible], and "mean_z" (N, 2); with `sample_seed`, "sample_z" (N, 2), one
    draw of z from the grid's posterior; and "box" (2, 2), the square the sums were taken over.
    """
    check_model("model", model), check_images("x", x)
    check_two_dimensional(model)
    step = check_number("step", step, strict=True)
    visible = None if visible is None else check_visible(visible, len(x))
    check_positive_int("chunk", chunk), check_number("margin", margin, strict=True), check_flag("means", means)
    None if sample_seed is None else check_seed(sample_seed)
    model.eval()
    visible = torch.ones(1, 784) if visible is None else visible.reshape(-1, 784).float()
    if models.is_conditional(model):  # one plain model per digit, each summing its own images
        if labels is None:
            raise ValueError("a conditional VAE reads the digit beside each image: pass labels= (N,) digits")
        return _per_label(model, x, visible, labels, step=step, margin=margin, means=means,
                          sample_seed=sample_seed, chunk=chunk)
    if labels is not None:
        raise ValueError(f"labels were given, but a {type(model).__name__} does not read labels: leave them out")
    device = next(model.parameters()).device
    box = torch.tensor([[-START_HALF_WIDTH, START_HALF_WIDTH]] * 2, dtype=torch.float64)
    if bool((visible == 1).all()):  # the encoder saw what we see: its q marks where to look
        encoded = model.encode(x.to(device))
        mu, sigma = encoded[0].double().cpu(), (0.5 * encoded[1].double()).exp().cpu()  # (N, 2)
        box[:, 0] = torch.minimum(box[:, 0], (mu - 6 * sigma).min(0).values)
        box[:, 1] = torch.maximum(box[:, 1], (mu + 6 * sigma).max(0).values)
    for growth in range(MAX_GROWTH + 1):
        gen = None if sample_seed is None else torch.Generator().manual_seed(sample_seed)
        sums = _log_joint_sums(model, x, visible, box, step, chunk, means, gen)
        failing = sums["top_border"] > sums["top"] - margin  # (N,)
        if not failing.any():
            return sums | {"box": box}
        if growth == MAX_GROWTH:
            break
        box = _grow(box, model, x[failing], visible if len(visible) == 1 else visible[failing], step, chunk)
    raise RuntimeError(f"after {MAX_GROWTH} widenings the posterior of test images {failing.nonzero().flatten()[:5].tolist()} "
                       f"still reaches the grid's border {box.tolist()}: their p(x) cannot be summed on a grid")


def _per_label(model, x, visible, labels, **options) -> dict:
    """posterior_sums of a conditional VAE: each digit's images with that digit's decoder, put back in order."""
    parts, out = {}, {}
    for digit in labels.unique().tolist():
        rows = (labels == digit).nonzero().flatten()
        seen = visible if len(visible) == 1 else visible[rows]
        parts[digit] = (rows, posterior_sums(_OneLabel(model, digit), x[rows], seen, **options))
    for key, value in next(iter(parts.values()))[1].items():
        if key == "box":  # the union of the digits' squares
            boxes = torch.stack([part["box"] for _, part in parts.values()])
            out["box"] = torch.stack([boxes[:, :, 0].min(0).values, boxes[:, :, 1].max(0).values], 1)
            continue
        out[key] = torch.empty(len(x), *value.shape[1:], dtype=value.dtype)
        for rows, part in parts.values():
            out[key][rows] = part[key]
    return out


def _grow(box, model, x, visible, step, chunk):
    """Push out each side of `box` on which some image's log joint is highest along the border."""
    axis1, axis2 = _axes(box, step)
    width = box[:, 1] - box[:, 0]
    sides = {"low1": axis1[0], "high1": axis1[-1], "low2": axis2[0], "high2": axis2[-1]}
    tops = {}
    for name, value in sides.items():  # the log joint along each side: a thin box of its own
        thin = box.clone()
        dim, end = (0 if name.endswith("1") else 1), (0 if name.startswith("low") else 1)
        thin[dim] = value
        sums = _log_joint_sums(model, x, visible, thin, step, chunk, False, None)
        tops[name] = sums["top"]
    stacked = torch.stack(list(tops.values()))  # (4, n)
    worst = stacked.argmax(0)  # each failing image's highest side
    for index, name in enumerate(sides):
        if (worst == index).any():
            dim, end = (0 if name.endswith("1") else 1), (0 if name.startswith("low") else 1)
            box[dim, end] += (-1 if end == 0 else 1) * width[dim] / 2
    return box
