"""Training: Adam, a progress bar, a per-epoch history (`fit`, `format_history`).

The test metrics live in `evaluate` (the loss, the IW bound, the exact 2-D likelihood, active units) and
the per-image posteriors in `inference`; their names stay importable from here (`train.evaluate`, ...).

Introduced in: 02_autoencoder (fit), 10_collapse (KL warm-up and free bits in fit), 11_conditional (labels)
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from . import losses, models
from .evaluate import (MAX_K, _log_normal, _rows, active_units, conditions, elbo, encode_dataset,  # noqa: F401
                       effective_sample_size, evaluate, importance_weighted_bound, log_likelihood_grid,
                       model_device)
from .inference import refine_posterior  # noqa: F401
from .checks import (check_flag, check_free_bits, check_images, check_labels, check_learning_rate,  # noqa: F401
                     check_model, check_number, check_positive_int, check_seed, check_warmup_epochs)
from .data import Batches
from .device import autocast, check_mixed_precision, choose_precision, default_device, grad_scaler, resolve_device  # noqa: F401


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. The message names the epoch and the batch."""


# Batches between two divergence checks, per device type. A check reads the losses on the host: free on the
# CPU, where they already are, but on a GPU it waits for every queued kernel, so there the losses stay on the
# device and are read every CHECK_EVERY batches (and at each epoch's end); the error still names the first
# batch whose loss was not finite, and the weights have by then taken up to that many more steps.
CHECK_EVERY = {"cpu": 1, "cuda": 25}


def _check_finite(losses_so_far: torch.Tensor, first: int, epoch: int, count: int, lr: float, beta: float, bar):
    """Raise TrainingDiverged naming the first batch (numbered from `first`) whose loss is not finite."""
    finite = torch.isfinite(losses_so_far).cpu()  # the host waits for the device here, once per check
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0])
    bar.close()
    raise TrainingDiverged(
        f"the loss became {losses_so_far[bad].item()} at epoch {epoch}, batch {first + bad} of {count}: "
        f"training diverged. Lower the learning rate (lr={lr}) or beta (beta={beta}).")


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
    check_model("model", model)
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
    check_flag("progress", progress)
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
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, BCE, KL summed over the epoch
        batch_losses = torch.empty(len(batches), dtype=torch.float64, device=device)  # (batches,), read every
        checked = 0  # batches whose losses were read                                # `every` batches
        every = CHECK_EVERY.get(device.type, CHECK_EVERY["cuda"])
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
            values = torch.stack([p.detach() for p in parts]).double()  # (3,), on the device: no wait
            batch_losses[batch_index - 1] = values[0]
            if batch_index - checked >= every or batch_index == len(batches):
                _check_finite(batch_losses[checked:batch_index], checked + 1, epoch, len(batches), lr, beta, bar)
                checked = batch_index  # on the CPU (every = 1): checked before its step, as it always was
            if progress and checked == batch_index and (batch_index % 20 < every or batch_index == len(batches)):
                bar.set_postfix(epoch=epoch, loss=f"{values[0].item() / len(x):.2f}", refresh=False)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(parts.total).backward()
            scaler.step(optimizer)
            scaler.update()
            sums += values
            bar.update(1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # once per epoch: the epoch's time includes its queued kernels
        if not all(torch.isfinite(p).all() for p in model.parameters()):  # the last step can break them too
            bar.close()
            raise TrainingDiverged(f"the weights became NaN or infinite in epoch {epoch}: training diverged. Lower "
                                   f"the learning rate (lr={lr}) or beta (beta={beta}).")
        row = {"epoch": epoch, "seconds": time.perf_counter() - start, "precision": precision, "lr": epoch_lr,
               "beta": beta_sum / len(batches)}
        row.update(zip(("train_loss", "train_reconstruction", "train_kl"), (sums / len(train_x)).cpu().tolist()))
        if test_x is not None:
            metrics = evaluate(model, test_x, beta=beta, seed=seed, precision=precision, labels=test_labels)
            if not all(map(math.isfinite, metrics.values())):
                bar.close()
                raise TrainingDiverged(f"the test loss became {metrics['loss']} after epoch {epoch}: training "
                                       f"diverged. Lower the learning rate (lr={lr}) or beta (beta={beta}).")
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
