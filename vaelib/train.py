"""Training and evaluation: Adam, a progress bar, a per-epoch history, and the test metrics.

Introduced in: 02_autoencoder (fit), 03_vae (evaluate), 04_beta (importance-weighted bound, active units),
10_collapse (KL warm-up and free bits in fit)
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from . import losses
from .checks import (check_flag, check_free_bits, check_images, check_learning_rate, check_positive_int,  # noqa: F401
                     check_seed, check_warmup_epochs)
from .data import Batches
from .device import autocast, check_mixed_precision, choose_precision, default_device, grad_scaler, resolve_device  # noqa: F401


MAX_K = 100_000  # importance samples: k = 1000 is the literature's; 100,000 already takes minutes per image batch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. The message names the epoch and the batch."""


def fit(model: nn.Module, train_x: torch.Tensor, test_x: torch.Tensor | None = None, *,
        epochs: int = 20, beta: float = 1.0, lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
        device: str | torch.device | None = None, mixed_precision: bool | str = False,
        progress: bool = True, binarize: bool = False, warmup_epochs: int = 0,
        free_bits: float = 0.0) -> list[dict]:
    """Train `model` on `train_x` (N, 784) with Adam and the loss BCE + beta * KL.

    Returns the history: one dict per epoch with the per-image train loss and its two parts, and the
    same on `test_x` when given. The same seed on the same machine gives the same history, bit for
    bit. A NaN or infinite loss stops training with `TrainingDiverged`. `binarize=True` trains on
    dynamically binarized images: each batch is drawn afresh as binary pixels (`data.binarize`).
    `mixed_precision="auto"` runs the forward pass under bfloat16 autocast where that is faster on this
    machine (`device.choose_precision` says what it picks and why), keeping float32 weights; True forces
    bfloat16, False float32. Each history row records the precision as `precision`.

    Two remedies for posterior collapse (chapter 10). `warmup_epochs=W`: KL warm-up, beta rises linearly
    from 0 to its value over the first W epochs, batch by batch (with W > epochs it never gets there;
    Bowman et al. 2016, "Generating Sentences from a Continuous Space"; Sonderby et al. 2016, "Ladder
    Variational Autoencoders"). `free_bits=lam`:
    each latent dimension's batch-mean KL counts as at least lam nats in the objective
    (`losses.free_bits_kl`). Each row records `beta`, the epoch's mean beta; `train_loss` is the
    objective that was minimised, `train_kl` the plain KL. The test loss uses the full beta, no free bits.

    Introduced in: 02_autoencoder
    """
    check_mixed_precision(mixed_precision)
    train_x = check_images("train_x", train_x)
    if test_x is not None:
        test_x = check_images("test_x", test_x)
    check_positive_int("epochs", epochs, minimum=0)
    check_positive_int("batch_size", batch_size)
    check_seed(seed)
    check_flag("binarize", binarize)
    warmup_epochs = check_warmup_epochs(warmup_epochs)
    free_bits = check_free_bits(free_bits)
    beta = losses.check_beta(beta)
    lr = check_learning_rate(lr)
    device = resolve_device(device)
    model.to(device)
    train_x = train_x.to(device)
    precision = choose_precision(device, model, train_x[:batch_size], mixed_precision).precision
    torch.manual_seed(seed)  # the reparameterization noise
    batches = Batches(train_x, batch_size=batch_size, seed=seed)
    scaler = grad_scaler(device, precision)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999),
                                 fused=device.type in ("cpu", "cuda"))
    history = []
    bar = tqdm(total=epochs * len(batches), desc="training", unit="batch", disable=not progress)
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64)
        beta_sum = 0.0
        for batch_index, x in enumerate(batches, start=1):
            step = (epoch - 1) * len(batches) + batch_index - 1  # batches seen before this one
            beta_now = beta * min(1.0, step / (warmup_epochs * len(batches))) if warmup_epochs else beta
            beta_sum += beta_now
            if binarize:
                x = torch.bernoulli(x)  # (B, 784) in {0, 1}, a fresh draw every time
            with autocast(device, precision):
                logits, mu, logvar = model(x)
            parts = losses.vae_loss(logits, x, mu, logvar, beta_now, free_bits)
            values = torch.stack([p.detach() for p in parts]).double().cpu()  # (3,)
            if not torch.isfinite(values).all():
                bar.close()
                raise TrainingDiverged(
                    f"the loss became {values[0].item()} at epoch {epoch}, batch {batch_index} of "
                    f"{len(batches)}: training diverged. Lower the learning rate (lr={lr}) or beta "
                    f"(beta={beta}).")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(parts.total).backward()
            scaler.step(optimizer)
            scaler.update()
            sums += values
            bar.update(1)
            if batch_index % 20 == 0 or batch_index == len(batches):
                bar.set_postfix(epoch=epoch, loss=f"{values[0].item() / len(x):.2f}", refresh=False)
        row = {"epoch": epoch, "seconds": time.perf_counter() - start, "precision": precision,
               "beta": beta_sum / len(batches)}
        row.update(zip(("train_loss", "train_reconstruction", "train_kl"), (sums / len(train_x)).tolist()))
        if test_x is not None:
            metrics = evaluate(model, test_x, beta=beta, seed=seed, precision=precision)
            row.update({f"test_{key}": value for key, value in metrics.items()}, test_images=len(test_x))
        history.append(row)
    bar.close()
    return history


def format_history(history: list[dict]) -> str:
    """One line per epoch: 'epoch 1: train loss 163.88 (BCE 148.72, KL 15.15), test loss 127.10'."""
    lines = []
    for row in history:
        line = (f"epoch {row['epoch']}: train loss {row['train_loss']:.2f} (BCE {row['train_reconstruction']:.2f}, "
                f"KL {row['train_kl']:.2f})")
        if "test_loss" in row:
            line += f", test loss {row['test_loss']:.2f}"
        lines.append(line)
    return "\n".join(lines)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, beta: float = 1.0, batch_size: int = 1000, seed: int = 0,
             precision: str = "float32") -> dict:
    """Per-image test loss (BCE + beta * KL) and its parts, with one z sampled per image.

    With beta = 1, `loss` is the negative ELBO in nats: an upper bound on -log p(x) of the model's Bernoulli
    decoder, which is a probability only for binary images (see `losses.binary_entropy_floor`). The sampling
    uses its own seed and leaves the global random state as it was.
    """
    device = next(model.parameters()).device
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device)
            with autocast(device, precision):
                logits, mu, logvar = model(batch)
            sums += torch.stack([p for p in losses.vae_loss(logits, batch, mu, logvar, beta)]).double().cpu()
    return dict(zip(("loss", "reconstruction", "kl"), (sums / len(x)).tolist()))


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


@torch.no_grad()
def importance_weighted_bound(model: nn.Module, x: torch.Tensor, k: int = 1000, seed: int = 0,
                              images_per_chunk: int | None = None, decode_batch: int = 8192,
                              progress: bool = False) -> torch.Tensor:
    """log p(x) >= log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), per image.  (N, 784) -> (N,)

    Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders" (2016), eq. 8. With k = 1 it is
    the ELBO; it tightens as k grows. Computed with log-sum-exp, in chunks of images.
    Introduced in: 04_beta
    """
    check_positive_int("k", k, maximum=MAX_K)
    device = next(model.parameters()).device
    model.eval()
    chunk = images_per_chunk or max(1, decode_batch // k)
    bounds = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(x), chunk), desc="IW bound", disable=not progress):
            batch = x[start : start + chunk].to(device)  # (b, 784)
            mu, logvar = model.encode(batch)  # (b, L)
            if logvar is None:
                raise ValueError("the importance-weighted bound needs a VAE: this model has no logvar")
            z = mu + torch.randn(k, *mu.shape, device=device) * (0.5 * logvar).exp()  # (k, b, L)
            flat_z = z.reshape(-1, z.shape[-1])  # (k*b, L)
            logits = torch.cat([model.decode_logits(part) for part in flat_z.split(decode_batch)])
            logits = logits.view(k, len(batch), 784)  # (k, b, 784)
            log_px_z = -torch.nn.functional.binary_cross_entropy_with_logits(
                logits, batch.expand_as(logits), reduction="none").sum(-1)  # (k, b)
            log_pz = _log_normal(z, torch.zeros_like(z), torch.zeros_like(z))  # (k, b)
            log_qz = _log_normal(z, mu, logvar)  # (k, b)
            log_w = log_px_z + log_pz - log_qz  # (k, b)
            bounds.append(torch.logsumexp(log_w, dim=0) - math.log(k))  # (b,)
    return torch.cat(bounds).cpu()


@torch.no_grad()
def encode_dataset(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                   batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latent means `mu` (N, L) of every image (the autoencoder: its code), with the labels."""
    device = next(model.parameters()).device
    model.eval()
    mus = [model.encode(x[s : s + batch_size].to(device))[0].cpu() for s in range(0, len(x), batch_size)]
    return torch.cat(mus), y


@torch.no_grad()
def active_units(model: nn.Module, x: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Units u whose Var_x(E_q[z_u | x]) exceeds `threshold` (Burda et al. 2016, section 5.2).

    Returns the count and the per-unit variances (L,). Introduced in: 04_beta
    """
    mu, _ = encode_dataset(model, x)  # (N, L)
    variance = mu.double().var(dim=0)  # (L,)
    return int((variance > threshold).sum()), variance.float()
