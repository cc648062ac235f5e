"""Training speed: vaelib's loop against a conventional Dataset + DataLoader loop and the compute floor.

    python benchmarks/train_speed.py [--epochs 3] [--conv-steps 20] [--skip-conv] [--mlp-variants]

1. The pytorch/examples VAE recipe (784-400-20, batch 128, Adam 1e-3), trained three ways, epoch by
   epoch in turn so that the shared machine's noise hits all three alike:
   - vaelib: `train.fit`'s loop (in-memory tensors, one gather per batch, fused Adam, logits loss);
   - conventional: a per-sample `Dataset` + `DataLoader`, as in pytorch/examples `vae/main.py`;
   - floor: the same forward, backward and Adam step as vaelib, repeated on one ready batch.
2. The conv VAE's training step: plain `nn.ConvTranspose2d` in float32 with the standard Adam,
   against vaelib's fast path (1x1 transposed conv as a linear map, bfloat16 autocast, fused Adam).
3. With --mlp-variants: the MLP step itself in float32, under bfloat16 autocast and through
   torch.compile, to see whether the compute floor can be lowered.
Speeds are reported as ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vaelib import data, losses, models, train  # noqa: E402


class PerSampleMNIST(Dataset):
    """One image at a time, as torchvision's `MNIST(transform=ToTensor())` serves it (without torchvision).

    torchvision's MNIST turns each uint8 image into a PIL image, and `ToTensor` turns it back into a
    float tensor divided by 255: the per-sample work of pytorch/examples `vae/main.py`.
    """

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images_uint8, labels  # (N, 28, 28) uint8, (N,) int64

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = Image.fromarray(self.images[index].numpy(), mode="L")  # torchvision MNIST.__getitem__
        pixels = torch.from_numpy(np.array(image, np.uint8, copy=True))  # ToTensor: PIL -> (28, 28) uint8
        return pixels.view(28, 28, 1).permute(2, 0, 1).contiguous().float().div(255), int(self.labels[index])


def examples_loss(recon_x, x, mu, logvar):
    """pytorch/examples vae/main.py: BCE on probabilities + KL, summed."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


class Runner:
    """Holds one model and optimizer, and trains it for one epoch at a time."""

    def __init__(self, kind: str, train_x: torch.Tensor, seed: int = 1):
        torch.manual_seed(seed)
        self.model = models.VAE(latent_dim=20)
        self.kind = kind
        self.train_x = train_x
        if kind == "conventional":
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
            images = (train_x * 255).round().to(torch.uint8).view(-1, 28, 28)
            labels = torch.zeros(len(images), dtype=torch.int64)
            self.loader = DataLoader(PerSampleMNIST(images, labels), batch_size=128, shuffle=True)
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
            self.batches = data.Batches(train_x, batch_size=128, seed=seed)
            self.ready = train_x[:128].clone()

    def vaelib_step(self, x):
        logits, mu, logvar = self.model(x)
        loss = losses.vae_loss(logits, x, mu, logvar, 1.0).total
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def epoch(self) -> float:
        self.model.train()
        start = time.perf_counter()
        if self.kind == "vaelib":  # the loop of train.fit, without its progress bar
            for x in self.batches:
                loss = self.vaelib_step(x)
                torch.isfinite(loss).item()
        elif self.kind == "floor":
            for _ in range(len(self.batches)):
                self.vaelib_step(self.ready)
        else:
            for x, _ in self.loader:
                self.optimizer.zero_grad()
                recon, mu, logvar = self.examples_forward(x)
                loss = examples_loss(recon, x, mu, logvar)
                loss.backward()
                loss.item()
                self.optimizer.step()
        return time.perf_counter() - start

    def examples_forward(self, x):
        mu, logvar = self.model.encode(x.view(-1, 784))
        z = models.reparameterize(mu, logvar)
        return self.model.decode(z), mu, logvar


def ms_per_step(step, steps: int, warmup: int) -> float:
    """Milliseconds per call of `step`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1000


def conv_step_ms(x: torch.Tensor, fast: bool, steps: int) -> float:
    """The conv VAE's (L = 2) training step on the batch `x` (B, 784), plain or with vaelib's fast path."""
    torch.manual_seed(0)
    model = models.ConvVAE(latent_dim=2, fast=fast)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fast)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            logits, mu, logvar = model(x)
        loss = losses.vae_loss(logits, x, mu, logvar, 1.0).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return ms_per_step(step, steps, warmup=3)


def mlp_step_ms(x: torch.Tensor, variant: str, steps: int = 300) -> float:
    """vaelib's MLP VAE step (784-400-20) on the batch `x` (B, 784) as it is ("float32"), under bfloat16
    autocast ("bfloat16"), or with forward and backward through `torch.compile` ("compiled")."""
    torch.manual_seed(0)
    model = models.VAE(latent_dim=20)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def forward_backward(x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bfloat16"):
            logits, mu, logvar = model(x)
        loss = losses.vae_loss(logits, x, mu, logvar, 1.0).total
        loss.backward()

    run = torch.compile(forward_backward) if variant == "compiled" else forward_backward

    def step():
        optimizer.zero_grad(set_to_none=True)
        run(x)
        optimizer.step()

    return ms_per_step(step, steps, warmup=20)  # for "compiled", the warm-up compiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--conv-steps", type=int, default=20)
    parser.add_argument("--skip-conv", action="store_true")
    parser.add_argument("--mlp-variants", action="store_true",
                        help="also time the MLP step under bfloat16 autocast and torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    train_x, _ = data.load_mnist("train")
    test_x, _ = data.load_mnist("test")
    runners = {kind: Runner(kind, train_x) for kind in ("vaelib", "conventional", "floor")}
    times = {kind: [] for kind in runners}
    for epoch in range(1, args.epochs + 1):
        for kind, runner in runners.items():
            times[kind].append(runner.epoch())
        print(f"epoch {epoch}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    per_epoch = {kind: sorted(t)[len(t) // 2] for kind, t in times.items()}  # the median
    test_loss = {kind: train.evaluate(runners[kind].model, test_x)["loss"] for kind in ("vaelib", "conventional")}
    print(f"\nMLP VAE 784-400-20, batch 128, {args.epochs} epochs, {torch.get_num_threads()} threads "
          f"(median seconds per epoch)\n")
    print("| loop | s / epoch | vs conventional | vs compute floor | test loss after last epoch |")
    print("|---|---|---|---|---|")
    for kind in ("conventional", "vaelib", "floor"):
        loss = f"{test_loss[kind]:.1f}" if kind in test_loss else "-"
        print(f"| {kind} | {per_epoch[kind]:.2f} | {per_epoch['conventional'] / per_epoch[kind]:.2f}x faster | "
              f"{per_epoch[kind] / per_epoch['floor']:.2f}x the floor | {loss} |")
    if args.mlp_variants:
        variants = ["float32", "bfloat16", "compiled", "float32"]  # float32 twice: bracket against drift
        times = [mlp_step_ms(test_x[:128], variant) for variant in variants]
        baseline = (times[0] + times[-1]) / 2
        print("\nMLP VAE 784-400-20 training step, batch 128 (can the floor itself go faster?)\n")
        print("| step | ms / step | speed-up |")
        print("|---|---|---|")
        for variant, ms in zip(variants[:3], [baseline, *times[1:3]]):
            print(f"| {variant} | {ms:.2f} | {baseline / ms:.2f}x |")
    if args.skip_conv:
        return
    plain = conv_step_ms(test_x[:128], False, args.conv_steps)
    fast = conv_step_ms(test_x[:128], True, args.conv_steps)
    plain_again = conv_step_ms(test_x[:128], False, args.conv_steps)  # bracket the fast run against drift
    baseline = (plain + plain_again) / 2
    print("\nConv VAE (L = 2) training step, batch 128\n")
    print("| path | ms / step | speed-up |")
    print("|---|---|---|")
    print(f"| plain ConvTranspose2d, float32, Adam | {baseline:.0f} | 1.00x |")
    print(f"| vaelib: 1x1 convT as linear, bfloat16 autocast, fused Adam | {fast:.0f} | {baseline / fast:.2f}x |")


if __name__ == "__main__":
    main()
