"""Figures: digit grids, latent scatter plots, decoded latent walks, traversals, training curves, and
the VAE itself drawn as a diagram (`vae_diagram`, chapter 3).

Every function takes tensors, draws on a matplotlib Axes (a new figure when none is given) and
returns it. No torchvision: `image_grid` tiles the images with numpy.
Introduced in: 01_data
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib import pyplot as plt

from .checks import check_images, check_model, check_positive_int, check_walk
from .evaluate import model_device

DIGIT_COLORS = plt.get_cmap("tab10")


def image_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images (N, 784) row by row, `nrow` per row, into one array (H, W) in [0, 1]."""
    images = images.detach().float().cpu().reshape(-1, 28, 28).numpy()
    count = len(images)
    rows = -(-count // nrow)
    size = 28 + padding
    grid = np.full((rows * size + padding, nrow * size + padding), pad_value, dtype=np.float32)
    for index, image in enumerate(images):
        r, c = divmod(index, nrow)
        grid[padding + r * size : padding + r * size + 28, padding + c * size : padding + c * size + 28] = image
    return grid


def _axes(ax, figsize=(6, 6)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def show_images(images: torch.Tensor, nrow: int = 10, ax=None, title: str | None = None, padding: int = 2):
    """Draw a grid of digits (N, 784), white on black. Introduced in: 01_data"""
    check_positive_int("nrow", nrow), check_positive_int("padding", padding, minimum=0, maximum=100)
    ax = _axes(ax)
    ax.imshow(image_grid(images, nrow, padding, pad_value=0.5), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_reconstructions(model, x: torch.Tensor, ax=None, title: str | None = None):
    """Originals (top row) above their reconstructions decoded from the mean code (bottom row)."""
    check_model("model", model), check_images("x", x)
    with torch.no_grad():
        code, _ = model.encode(x.to(model_device(model)))
        x_hat = model.decode(code).cpu()
    return show_images(torch.cat([x.cpu(), x_hat]), nrow=len(x), ax=ax, title=title)


def latent_scatter(mu: torch.Tensor, labels: torch.Tensor, ax=None, title: str | None = None,
                   dims: tuple[int, int] = (0, 1), size: float = 2.0, legend: bool = True,
                   class_names: tuple[str, ...] | None = None):
    """The 2-D latent means (N, L) coloured by digit label, as in the original's scatter plot.

    `class_names` names the labels 0-9 in the legend (Fashion-MNIST's garments: `data.FASHION_CLASSES`).
    """
    ax = _axes(ax)
    mu, labels = mu.detach().cpu().numpy(), labels.cpu().numpy()
    for digit in range(10):
        chosen = labels == digit
        ax.scatter(mu[chosen, dims[0]], mu[chosen, dims[1]], s=size, color=DIGIT_COLORS(digit),
                   label=class_names[digit] if class_names else str(digit), alpha=0.6, rasterized=True)
    ax.set_xlabel(f"z{dims[0] + 1}")  # the book's convention: the first coordinate across, the second up
    ax.set_ylabel(f"z{dims[1] + 1}")
    if legend:
        ax.legend(markerscale=5, fontsize="small", loc="upper right", title="class" if class_names else "digit")
    if title:
        ax.set_title(title)
    return ax


def plane_grid(low: float = -3.0, high: float = 3.0, steps: int = 21) -> torch.Tensor:
    """The steps x steps latent points of a map, in reading order: z1 across (left to right, low to
    high) and z2 up (the top row is z2 = high), the book's one convention.  -> (steps^2, 2)"""
    low, high, steps = check_walk(low, high, steps, minimum=1)
    axis = torch.linspace(low, high, steps)
    z2, z1 = torch.meshgrid(axis.flip(0), axis, indexing="ij")  # row r: z2 = high - r * step
    return torch.stack([z1.flatten(), z2.flatten()], dim=1)


@torch.no_grad()
def decode_latent_grid(model, low: float = -3.0, high: float = 3.0, steps: int = 21) -> torch.Tensor:
    """Decode the points of `plane_grid`, row by row from the top: z1 across, z2 up.  -> (steps^2, 784)"""
    check_walk(low, high, steps, minimum=1)  # any object with decode(), such as chapter 11's one-digit decoder
    return model.decode(plane_grid(low, high, steps).to(model_device(model))).cpu()


def show_latent_walk(model, low: float = -3.0, high: float = 3.0, steps: int = 21, ax=None,
                     title: str | None = None):
    """The decoded grid over [low, high]^2 (the original: 21 x 21 over [-3, 3]^2, step 0.3), drawn
    like `latent_scatter`: z1 across, z2 up, so the two can sit side by side."""
    check_walk(low, high, steps)  # before a figure is made
    ax = _axes(ax, figsize=(8, 8))
    grid = image_grid(decode_latent_grid(model, low, high, steps), nrow=steps, padding=0)
    half = (high - low) / (steps - 1) / 2  # each digit is centred on its point
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, extent=(low - half, high + half, low - half, high + half))
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    if title:
        ax.set_title(title)
    return ax


@torch.no_grad()
def traversals(model, low: float = -3.0, high: float = 3.0, steps: int = 21, base: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Walk each latent coordinate over [low, high] with the others fixed (at 0, or `base`).

    Returns (L * steps, 784): row u holds the walk along z_u.
    """
    check_walk(low, high, steps)
    latent_dim = model.latent_dim
    base = torch.zeros(latent_dim) if base is None else base.detach().cpu()
    values = torch.linspace(low, high, steps)
    z = base.repeat(latent_dim * steps, 1)  # (L*steps, L)
    for unit in range(latent_dim):
        z[unit * steps : (unit + 1) * steps, unit] = values
    return model.decode(z.to(model_device(model))).cpu()


def show_traversals(model, low: float = -3.0, high: float = 3.0, steps: int = 21, ax=None,
                    title: str | None = None, base: torch.Tensor | None = None,
                    row_labels: list[str] | None = None):
    """`traversals` drawn as one row per coordinate; `row_labels` (one per coordinate) replace the names z1, z2, ...

    Chapter 7 labels each row with the factor its coordinate shares the most information with.
    Introduced in: 07_disentanglement
    """
    check_walk(low, high, steps)
    latent_dim = model.latent_dim
    if row_labels is not None and len(row_labels) != latent_dim:
        raise ValueError(f"row_labels needs one label per latent coordinate ({latent_dim}), got {len(row_labels)}")
    ax = _axes(ax, figsize=(10, 0.5 * latent_dim + 0.5))
    grid = image_grid(traversals(model, low, high, steps, base=base), nrow=steps, padding=1, pad_value=0.3)
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([1 + 29 * u + 14 for u in range(latent_dim)],
                  row_labels if row_labels is not None else [f"z{u + 1}" for u in range(latent_dim)])
    ax.set_xticks([1 + 29 * i + 14 for i in (0, steps // 2, steps - 1)], [f"{low:g}", "0", f"{high:g}"])
    if title:
        ax.set_title(title)
    return ax


def show_information(information: torch.Tensor, factor_names: list[str], ax=None, title: str | None = None):
    """A heat map of the unit-by-factor mutual information (D, K) in nats, each cell written in it.

    Rows are the latent units z1 .. zD, columns the factors (`disentanglement.mutual_information`'s matrix).
    A disentangled code lights one cell per row and per column. Introduced in: 07_disentanglement
    """
    values = information.detach().cpu().double().numpy()  # (D, K)
    if values.ndim != 2 or values.shape[1] != len(factor_names):
        raise ValueError(f"information must be (units, factors) with {len(factor_names)} factor columns, "
                         f"got shape {values.shape}")
    units, count = values.shape
    ax = _axes(ax, figsize=(1.0 + 0.9 * count, 0.9 + 0.4 * units))
    image = ax.imshow(values, cmap="viridis", vmin=0, aspect="auto")
    top = values.max() if values.size else 1.0
    for d in range(units):
        for k in range(count):
            ax.text(k, d, f"{values[d, k]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if values[d, k] > 0.6 * top else "white")
    ax.set_xticks(range(count), factor_names, rotation=30, ha="right")
    ax.set_yticks(range(units), [f"z{d + 1}" for d in range(units)])
    ax.figure.colorbar(image, ax=ax, label="mutual information (nats)")
    if title:
        ax.set_title(title)
    return ax


@torch.no_grad()
def interpolate(model, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend two images (784,) in latent space and in pixel space.  -> two (steps, 784) tensors"""
    check_model("model", model)
    for name, image in (("x_a", x_a), ("x_b", x_b)):
        if not isinstance(image, torch.Tensor) or image.shape != (784,):
            raise ValueError(f"{name} must be one image, a tensor (784,), got {getattr(image, 'shape', type(image).__name__)}"
                             f": pick it with x[i]")
        check_images(name, image[None])
    check_positive_int("steps", steps, minimum=2, maximum=10_000)  # (steps, 784) images of each path
    weights = torch.linspace(0, 1, steps).unsqueeze(1)  # (steps, 1)
    x_a, x_b = x_a.cpu(), x_b.cpu()
    mu, _ = model.encode(torch.stack([x_a, x_b]).to(model_device(model)))  # (2, L)
    z = (1 - weights) * mu[0].cpu() + weights * mu[1].cpu()  # (steps, L)
    return model.decode(z.to(model_device(model))).cpu(), (1 - weights) * x_a + weights * x_b


def show_history(history: list[dict], ax=None, title: str | None = None):
    """Train and test loss per epoch (per image, nats)."""
    ax = _axes(ax, figsize=(6, 4))
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    if history and "test_loss" in history[0]:
        ax.plot(epochs, [row["test_loss"] for row in history], marker="o", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per image (nats)")
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def show_seeds(tables: dict[str, list[dict]], metric: str, ax=None, title: str | None = None,
               ylabel: str | None = None, shipped: dict[str, int] | None = None):
    """Every seed's value of `metric` per study, with the mean +- sd beside it.

    `tables` maps a label to a study's rows (`study.load_table`); `shipped` maps a label to the seed of
    its shipped checkpoint, drawn as a ring.
    """
    ax = _axes(ax, figsize=(1.6 + 1.4 * len(tables), 4))
    for position, (label, rows) in enumerate(tables.items()):
        values = np.array([row[metric] for row in rows if row.get(metric) is not None], dtype=float)
        seeds = [row["seed"] for row in rows if row.get(metric) is not None]
        if len(values) == 0:
            raise ValueError(f"the study {label!r} has no values of {metric!r}")
        spread = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(position + spread, values, color="tab:blue", zorder=3, label="one seed" if position == 0 else None)
        sd = values.std(ddof=1) if len(values) > 1 else 0.0
        ax.errorbar(position + 0.3, values.mean(), yerr=sd, fmt="s", color="black", capsize=4,
                    label="mean +- sd" if position == 0 else None)
        if shipped and label in shipped and shipped[label] in seeds:
            index = seeds.index(shipped[label])
            ax.scatter(position + spread[index], values[index], s=160, facecolors="none", edgecolors="tab:red",
                       zorder=4, label="shipped seed" if position == 0 else None)
    ax.set_xticks(range(len(tables)), [f"{label}\n(n = {len(rows)})" for label, rows in tables.items()])
    ax.set_xlim(-0.6, len(tables) - 0.3)
    ax.set_ylabel(ylabel or metric)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def vae_diagram(x: torch.Tensor | None = None, x_hat: torch.Tensor | None = None, ax=None):
    """The VAE drawn as boxes and arrows: x -> encoder -> (mu, sigma); z = mu + sigma * eps; decoder -> x_hat.

    Below the data path, the loss's two terms are tied to what they compare: the reconstruction term to
    x and x_hat, the KL term to mu and sigma. `x` and `x_hat` (784,), when given, are drawn as the two
    end pictures. Returns the Axes, whose `texts` name every part. Introduced in: 03_vae
    """
    ax = _axes(ax, figsize=(12, 4.6))
    ax.set_xlim(0, 12)
    ax.set_ylim(-0.45, 4.2)
    ax.set_axis_off()

    def box(cx, cy, text, color, width=1.5, height=0.7):
        ax.add_patch(plt.Rectangle((cx - width / 2, cy - height / 2), width, height, facecolor=color,
                                   edgecolor="black", linewidth=1.2, zorder=2))
        ax.text(cx, cy, text, ha="center", va="center", fontsize=11, zorder=3)

    def arrow(start, end, style="-|>", color="black"):
        ax.annotate("", xy=end, xytext=start, zorder=1,
                    arrowprops=dict(arrowstyle=style, color=color, linewidth=1.4, shrinkA=0, shrinkB=0))

    for cx, image, name in ((0.75, x, "image $x$"), (11.25, x_hat, r"decoder mean $\hat{x}$")):
        if image is not None:
            picture = image.detach().float().cpu().reshape(28, 28).numpy()
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1, extent=(cx - 0.6, cx + 0.6, 2.2, 3.4), zorder=2)
        else:
            box(cx, 2.8, "", "0.85", width=1.2, height=1.2)
        ax.text(cx, 1.95, name, ha="center", va="top", fontsize=11)
    box(2.55, 2.8, "encoder", "#c6dbef", width=1.4, height=1.2)
    box(4.45, 3.3, r"$\mu$", "#fdd0a2", width=0.9, height=0.55)
    box(4.45, 2.3, r"$\sigma = e^{\,\mathrm{logvar}/2}$", "#fdd0a2", width=1.7, height=0.55)
    box(6.0, 3.9, r"noise $\varepsilon \sim \mathcal{N}(0, I)$", "#e5e5e5", width=2.2, height=0.5)
    box(6.9, 2.8, r"$z = \mu + \sigma \odot \varepsilon$", "#c7e9c0", width=1.9, height=0.8)
    box(9.15, 2.8, "decoder", "#c6dbef", width=1.4, height=1.2)
    arrow((1.4, 2.8), (1.85, 2.8))
    arrow((3.25, 3.1), (4.0, 3.3))
    arrow((3.25, 2.5), (3.6, 2.3))
    arrow((4.9, 3.3), (5.95, 3.0))
    arrow((5.3, 2.3), (5.95, 2.6))
    arrow((6.4, 3.65), (6.7, 3.2))
    arrow((7.85, 2.8), (8.45, 2.8))
    arrow((9.85, 2.8), (10.6, 2.8))
    ax.text(6.9, 2.15, "a sample: gradients reach\n$\\mu$ and $\\sigma$ through it", ha="center", va="top",
            fontsize=9, color="0.3")
    # The loss: the reconstruction term compares x with x_hat, the KL term compares q(z|x) with the prior.
    ax.plot([0.75, 0.75, 11.25, 11.25], [1.5, 0.55, 0.55, 1.5], color="tab:red", linewidth=1.4)
    ax.text(6.0, 0.45, r"reconstruction: $-\log p(x \mid z)$, the BCE of $x$ against $\hat{x}$",
            ha="center", va="top", fontsize=11, color="tab:red")
    ax.add_patch(plt.Rectangle((3.5, 1.92), 1.9, 1.72, facecolor="none", edgecolor="tab:purple",
                               linestyle="--", linewidth=1.2, zorder=1))  # q(z|x) = N(mu, sigma^2)
    ax.text(3.55, 3.7, r"$q(z \mid x)$", ha="left", va="bottom", fontsize=10, color="tab:purple")
    ax.plot([4.45, 4.45], [1.92, 1.25], color="tab:purple", linewidth=1.4)
    ax.text(4.45, 1.2, r"KL: $\mathrm{KL}(\mathcal{N}(\mu, \sigma^2) \,\|\, \mathcal{N}(0, I))$" "\n"
            "pulls every code towards the prior", ha="center", va="top", fontsize=11, color="tab:purple")
    ax.text(6.0, -0.4, r"loss $=$ reconstruction $+\ \beta\,\times$ KL  (the -ELBO when $\beta = 1$)",
            ha="center", va="bottom", fontsize=11)
    return ax
