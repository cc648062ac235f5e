"""Training and evaluation: Adam, a progress bar, a per-epoch history, and the test metrics.

Each test metric takes `labels` (N,) for a conditional VAE, which reads the digit beside each image.

Introduced in: 02_autoencoder (fit), 03_vae (evaluate), 04_beta (importance-weighted bound, active units),
09_loss (the ELBO of any Gaussian q, and q refined per image), 10_collapse (KL warm-up and free bits in fit),
11_conditional (labels)
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from . import losses, models
from .checks import (check_flag, check_free_bits, check_images, check_labels, check_learning_rate,  # noqa: F401
                     check_number, check_positive_int, check_seed, check_warmup_epochs)
from .data import Batches
from .device import autocast, check_mixed_precision, choose_precision, default_device, grad_scaler, resolve_device  # noqa: F401


MAX_K = 100_000  # importance samples: k = 1000 is the literature's; 100,000 already takes minutes per image batch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. The message names the epoch and the batch."""


def fit(model: nn.Module, train_x: torch.Tensor, test_x: torch.Tensor | None = None, *,
        epochs: int = 20, beta: float = 1.0, lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
        device: str | torch.device | None = None, mixed_precision: bool | str = False,
        progress: bool = True, binarize: bool = False, final_lr: float | None = None,
        warmup_epochs: int = 0, free_bits: float = 0.0,
        labels: torch.Tensor | None = None, test_labels: torch.Tensor | None = None) -> list[dict]:
    """Train `model` on `train_x` (N, 784) with Adam and the loss BCE + beta * KL.

    Returns the history: one dict per epoch with the per-image train loss and its two parts, and the
    same on `test_x` when given. The same seed on the same machine gives the same history, bit for
    bit. A NaN or infinite loss stops training with `TrainingDiverged`. `binarize=True` trains on
    dynamically binarized images: each batch is drawn afresh as binary pixels (`data.binarize`).
    `final_lr` lets the learning rate decay exponentially, epoch by epoch, from `lr` to `final_lr` in the
    last epoch (each history row records its `lr`); None keeps it constant.
    `mixed_precision="auto"` runs the forward pass under bfloat16 autocast where that is faster on this
    machine (`device.choose_precision` says what it picks and why), keeping float32 weights; True forces
    bfloat16, False float32. Each history row records the precision as `precision`. A conditional VAE
    trains on `labels` (N,), batched with the images (and scores on `test_labels`).

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
    labels = conditions(model, labels, len(train_x), "labels")
    test_labels = conditions(model, test_labels, len(test_x), "test_labels") if test_x is not None else None
    check_positive_int("epochs", epochs, minimum=0)
    check_positive_int("batch_size", batch_size)
    check_seed(seed)
    check_flag("binarize", binarize)
    warmup_epochs = check_warmup_epochs(warmup_epochs)
    free_bits = check_free_bits(free_bits)
    beta = losses.check_beta(beta)
    lr = check_learning_rate(lr)
    final_lr = lr if final_lr is None else check_number("final_lr", final_lr, 0.0, strict=True)
    device = resolve_device(device)
    model.to(device)
    train_x = train_x.to(device)
    precision = choose_precision(device, model, train_x[:batch_size], mixed_precision).precision
    torch.manual_seed(seed)  # the reparameterization noise
    tensors = [train_x] if labels is None else [train_x, labels.to(device)]  # (N, 784), and (N,) digits
    batches = Batches(*tensors, batch_size=batch_size, seed=seed)  # one shuffle for both
    scaler = grad_scaler(device, precision)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999),
                                 fused=device.type in ("cpu", "cuda"))
    decay = (final_lr / lr) ** (1 / max(1, epochs - 1))  # per epoch: lr in epoch e is lr * decay^(e-1)
    history = []
    bar = tqdm(total=epochs * len(batches), desc="training", unit="batch", disable=not progress)
    for epoch in range(1, epochs + 1):
        model.train()
        epoch_lr = lr * decay ** (epoch - 1)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        start = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64)
        beta_sum = 0.0
        for batch_index, batch in enumerate(batches, start=1):
            x, y = (batch, ()) if labels is None else (batch[0], batch[1:])  # y: (B,) digits, or nothing
            step = (epoch - 1) * len(batches) + batch_index - 1  # batches seen before this one
            beta_now = beta * min(1.0, step / (warmup_epochs * len(batches))) if warmup_epochs else beta
            beta_sum += beta_now
            if binarize:
                x = torch.bernoulli(x)  # (B, 784) in {0, 1}, a fresh draw every time
            with autocast(device, precision):
                logits, mu, logvar = model(x, *y)
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
        row = {"epoch": epoch, "seconds": time.perf_counter() - start, "precision": precision, "lr": epoch_lr,
               "beta": beta_sum / len(batches)}
        row.update(zip(("train_loss", "train_reconstruction", "train_kl"), (sums / len(train_x)).tolist()))
        if test_x is not None:
            metrics = evaluate(model, test_x, beta=beta, seed=seed, precision=precision, labels=test_labels)
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
             precision: str = "float32", labels: torch.Tensor | None = None) -> dict:
    """Per-image test loss (BCE + beta * KL) and its parts, with one z sampled per image.

    With beta = 1, `loss` is the negative ELBO in nats: an upper bound on -log p(x) of the model's Bernoulli
    decoder, which is a probability only for binary images (see `losses.binary_entropy_floor`). The sampling
    uses its own seed and leaves the global random state as it was. A conditional VAE needs `labels` (N,):
    its `loss` then bounds -log p(x | y).
    """
    labels = conditions(model, labels, len(x))
    device = next(model.parameters()).device
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
                              labels: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x) >= log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), per image.  (N, 784) -> (N,)

    Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders" (2016), eq. 8. With k = 1 it is
    the ELBO; it tightens as k grows. Computed with log-sum-exp, in chunks of images. q is the encoder's,
    or the Gaussians `posterior = (mu, logvar)`, each (N, L), when given (`refine_posterior`'s).
    A conditional VAE needs `labels` (N,), and bounds log p(x | y): every term is conditioned on the label.
    Introduced in: 04_beta
    """
    check_positive_int("k", k, maximum=MAX_K)
    labels = conditions(model, labels, len(x))
    device = next(model.parameters()).device
    model.eval()
    chunk = images_per_chunk or max(1, decode_batch // k)
    bounds = []
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
            z = mu + torch.randn(k, *mu.shape, device=device) * (0.5 * logvar).exp()  # (k, b, L)
            flat_z = z.reshape(-1, z.shape[-1])  # (k*b, L)
            flat_y = y[0].repeat(k) if y else None  # (k*b,): the label of each z's image, in z's order
            logits = torch.cat([model.decode_logits(flat_z[i : i + decode_batch], *_rows(flat_y, i, decode_batch, device))
                                for i in range(0, len(flat_z), decode_batch)])
            logits = logits.view(k, len(batch), 784)  # (k, b, 784)
            log_px_z = losses.log_likelihood_per_image(logits, batch)  # (k, b)
            log_pz = _log_normal(z, torch.zeros_like(z), torch.zeros_like(z))  # (k, b)
            log_qz = _log_normal(z, mu, logvar)  # (k, b)
            log_w = log_px_z + log_pz - log_qz  # (k, b)
            bounds.append(torch.logsumexp(log_w, dim=0) - math.log(k))  # (b,)
    return torch.cat(bounds).cpu()


def elbo(model: nn.Module, x: torch.Tensor, mu: torch.Tensor | None = None, logvar: torch.Tensor | None = None,
         samples: int = 1, seed: int = 0, beta: float = 1.0) -> torch.Tensor:
    """The ELBO of each image, E_q[log p(x | z)] - beta * KL(q || N(0, I)), in nats.  (N, 784) -> (N,)

    q = N(mu, diag(exp(logvar))), each (N, L): the encoder's when not given. The expectation is a mean over
    `samples` draws of z (reparameterized, so it has gradients with respect to mu and logvar); the KL is
    exact. Uses its own seed and leaves the global random state as it was. Introduced in: 09_loss
    """
    check_positive_int("samples", samples)
    if mu is None:
        mu, logvar = model.encode(x)  # (N, L), (N, L)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = mu + torch.randn(samples, *mu.shape, device=mu.device) * (0.5 * logvar).exp()  # (S, N, L)
    logits = model.decode_logits(z.reshape(-1, z.shape[-1])).view(samples, len(x), -1)  # (S, N, 784)
    log_px_z = losses.log_likelihood_per_image(logits, x).mean(0)  # (S, N) -> (N,)
    kl = losses.kl_terms(mu, logvar).sum(-1)  # (N,)
    return log_px_z - beta * kl


def refine_posterior(model: nn.Module, x: torch.Tensor, steps: int = 300, lr: float = 0.01, samples: int = 8,
                     seed: int = 0, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gaussian q of each image's own, fitted to its ELBO with the decoder frozen: (mu, logvar), (N, L) each.

    Starts at the encoder's (mu, logvar) and takes `steps` Adam steps on the images' summed -ELBO
    (`samples` draws of z per step; each image's q has its own parameters, so the images do not interact).
    The ELBO gained over the encoder's q is the amortization gap of Cremer, Li and Duvenaud, "Inference
    Suboptimality in Variational Autoencoders" (2018): what one network answering for every image loses
    against the best Gaussian for each. Introduced in: 09_loss
    """
    check_positive_int("steps", steps, minimum=0)
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


@torch.no_grad()
def encode_dataset(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                   batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latent means `mu` (N, L) of every image (the autoencoder: its code), with the labels.

    A conditional VAE encodes each image with its label `y`: q(z | x, y).
    """
    condition = conditions(model, y if models.is_conditional(model) else None, len(x), "y")  # plain: y only passes through
    device = next(model.parameters()).device
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
    mu, _ = encode_dataset(model, x, labels)  # (N, L)
    variance = mu.double().var(dim=0)  # (L,)
    return int((variance > threshold).sum()), variance.float()


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
