"""Training speed on this CPU: each path against the shape-matched GEMM floor measured in the same run.

    python benchmarks/train_speed.py [--epochs 3] [--rounds 9] [--skip-conv] [--skip-loops] [--variants]

0. The machine: the CPU's name, PyTorch's capability (AVX2, AVX512), native bfloat16 or not, the threads,
   and the float32 rate of a 2048^3 matrix product (SGEMM).
1. The pytorch/examples VAE recipe (784-400-20, batch 128, Adam 1e-3), trained three ways, epoch by
   epoch in turn so that the shared machine's noise hits all three alike:
   - vaelib: `train.fit`'s loop (in-memory tensors, one gather per batch, fused Adam, logits loss);
   - conventional: a per-sample `Dataset` + `DataLoader`, as in pytorch/examples `vae/main.py`;
   - floor: the same forward, backward and Adam step as vaelib, repeated on one ready batch.
2. One training step (batch 128) of the MLP VAE and of the conv VAE (L = 2), each path timed in turn
   with the shape-matched GEMM floor (`gemm_floor.py`: `torch.mm` at every layer's forward, input-grad
   and weight-grad shapes) over several rounds, the fastest of each (another process on a shared machine
   only ever adds time): float32, bfloat16 autocast, and for the conv
   VAE the plain `nn.ConvTranspose2d` layers; the row that `mixed_precision="auto"` picks is marked.
   With --variants also channels-last memory and `torch.compile`. Then the conv step's float32 time
   layer by layer (forward + backward, alone) against each layer's own floor.
3. Where CUDA is present, the GPU rows of `gpu_speed.py`: epochs of `fit` on the GPU (float32, bfloat16,
   auto) against pytorch/examples' loop there, and a CUDA-graph step.
Speeds are reported as ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gemm_floor  # noqa: E402
from vaelib import data, device, losses, models, train  # noqa: E402


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


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_report() -> str:
    return (f"CPU: {cpu_name()}; PyTorch {torch.__version__} capability "
            f"{torch.backends.cpu.get_cpu_capability()}; native bfloat16: "
            f"{'yes' if device.cpu_has_native_bfloat16() else 'no'}; {torch.get_num_threads()} threads; "
            f"SGEMM 2048^3: {gemm_floor.sgemm_gflops():.0f} GFLOP/s")


def training_step(model, x: torch.Tensor, precision: str, memory_format=None, compiled: bool = False):
    """One closure: forward (autocast to `precision`), loss, backward and a fused Adam step on `x`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    if memory_format is not None:
        model.to(memory_format=memory_format)

    def forward_backward(x):
        with device.autocast(x.device, precision):
            logits, mu, logvar = model(x)
        losses.vae_loss(logits, x, mu, logvar, 1.0).total.backward()

    run = torch.compile(forward_backward) if compiled else forward_backward

    def step():
        optimizer.zero_grad(set_to_none=True)
        run(x)
        optimizer.step()
    return step


def step_paths(kind: str, variants: bool) -> dict[str, dict]:
    """The paths to time for one network: a name -> how to build its model and step."""
    build = {"mlp": lambda fast=True: models.VAE(latent_dim=20), "conv": lambda fast=True: models.ConvVAE(2, fast=fast)}[kind]
    paths = {"float32": dict(model=build, precision="float32"),
             "bfloat16 autocast": dict(model=build, precision="bfloat16")}
    if kind == "conv":
        paths = {"float32, plain nn.ConvTranspose2d": dict(model=lambda: build(fast=False), precision="float32"),
                 **paths}
    if variants:
        if kind == "conv":
            paths["float32, channels-last"] = dict(model=build, precision="float32", memory_format=torch.channels_last)
        paths["float32, torch.compile"] = dict(model=build, precision="float32", compiled=True)
    return paths


def time_steps(kind: str, x: torch.Tensor, rounds: int, variants: bool) -> tuple[dict, gemm_floor.GemmFloor]:
    """The fastest ms per step of each path over `rounds`, interleaved round by round with the GEMM floor."""
    torch.manual_seed(0)
    floor = gemm_floor.GemmFloor(gemm_floor.model_gemms(step_paths(kind, False)["float32"]["model"](), x))
    steps, samples = {}, {}
    for name, spec in step_paths(kind, variants).items():
        torch.manual_seed(0)
        steps[name] = training_step(spec["model"](), x, spec["precision"], spec.get("memory_format"),
                                    spec.get("compiled", False))
        for _ in range(3 if spec.get("compiled") else 1):  # warm-up (compiling, for torch.compile)
            steps[name]()
        samples[name] = []
    for _ in range(rounds):
        for name, step in steps.items():
            first = time.perf_counter()
            step()
            seconds = time.perf_counter() - first
            repeats = max(1, min(5, int(0.5 / max(seconds, 1e-4))))  # about half a second per path and round
            best = float("inf")
            for _ in range(repeats):  # the best of a few back-to-back steps, as for each GEMM of the floor
                start = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - start)
            samples[name].append(best * 1000)
            floor.time_once()
    return {name: min(ms) for name, ms in samples.items()}, floor


def print_step_table(title: str, times: dict, floor: gemm_floor.GemmFloor, auto: str) -> None:
    print(f"\n{title}: one training step, batch 128; floor = torch.mm at the layers' {len(floor.gemms)} "
          f"forward and backward shapes, {floor.total_ms():.1f} ms\n")
    print("| path | ms / step | vs GEMM floor | auto |")
    print("|---|---|---|---|")
    for name, ms in times.items():
        picked = "picked" if name in (auto, f"{auto} autocast") else ""
        print(f"| {name} | {ms:.1f} | {ms / floor.total_ms():.2f}x | {picked} |")


def layer_breakdown(x: torch.Tensor, repeats: int = 7) -> None:
    """The conv VAE's float32 step layer by layer: forward + backward of each layer alone, against its floor."""
    torch.manual_seed(0)
    calls = gemm_floor.layer_calls(models.ConvVAE(latent_dim=2), x)
    print("\nConv VAE float32 step, layer by layer (forward + backward of each layer alone, fastest of the rounds)\n")
    print("| layer | kind | ms | GEMM floor ms | vs floor |")
    print("|---|---|---|---|---|")
    for name, call in calls.items():
        layer, layer_input, needs_grad = call.layer, call.input, call.needs_input_grad
        x_in = layer_input.clone().requires_grad_(needs_grad)
        grad = torch.randn(call.output_shape)
        floor = gemm_floor.GemmFloor(gemm_floor.layer_gemms(name, layer, layer_input, needs_grad))
        samples = []
        for _ in range(repeats):
            layer.zero_grad(set_to_none=True)
            layer(x_in).backward(grad)  # warm, then timed
            layer.zero_grad(set_to_none=True)
            start = time.perf_counter()
            layer(x_in).backward(grad)
            samples.append((time.perf_counter() - start) * 1000)
            floor.time_once()
        ms = min(samples)
        print(f"| {name} | {type(layer).__name__} | {ms:.2f} | {floor.total_ms():.2f} | {ms / floor.total_ms():.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the three training loops")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of the step timings (the fastest round counts)")
    parser.add_argument("--skip-loops", action="store_true", help="skip the MLP training loops")
    parser.add_argument("--skip-conv", action="store_true", help="skip the conv VAE's step")
    parser.add_argument("--variants", action="store_true", help="also channels-last and torch.compile")
    args = parser.parse_args()
    print(machine_report(), flush=True)
    train_x, _ = data.load_mnist("train")
    test_x, _ = data.load_mnist("test")
    batch = test_x[:128]
    if not args.skip_loops:
        mlp_loops(train_x, test_x, args.epochs)
    networks = [("mlp", "MLP VAE 784-400-20", models.VAE(latent_dim=20))]
    if not args.skip_conv:
        networks.append(("conv", "Conv VAE (L = 2)", models.ConvVAE(latent_dim=2)))
    for kind, title, model in networks:
        times, floor = time_steps(kind, batch, args.rounds, args.variants)
        choice = device.choose_precision("cpu", model, batch, "auto")
        print_step_table(title, times, floor, choice.precision)
        print(f"\nauto picks {choice}")
    if not args.skip_conv:
        layer_breakdown(batch)
    if torch.cuda.is_available():  # the GPU rows: fit against pytorch/examples there, and a CUDA graph
        import gpu_speed

        gpu_speed.report(train_x, args.epochs)


def mlp_loops(train_x: torch.Tensor, test_x: torch.Tensor, epochs: int) -> None:
    runners = {kind: Runner(kind, train_x) for kind in ("vaelib", "conventional", "floor")}
    times = {kind: [] for kind in runners}
    for epoch in range(1, epochs + 1):
        for kind, runner in runners.items():
            times[kind].append(runner.epoch())
        print(f"epoch {epoch}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    per_epoch = {kind: min(t) for kind, t in times.items()}  # the fastest epoch: load elsewhere only adds time
    test_loss = {kind: train.evaluate(runners[kind].model, test_x)["loss"] for kind in ("vaelib", "conventional")}
    print(f"\nMLP VAE 784-400-20, batch 128, {epochs} epochs, {torch.get_num_threads()} threads "
          f"(seconds of the fastest epoch)\n")
    print("| loop | s / epoch | vs conventional | vs compute floor | test loss after last epoch |")
    print("|---|---|---|---|---|")
    for kind in ("conventional", "vaelib", "floor"):
        loss = f"{test_loss[kind]:.1f}" if kind in test_loss else "-"
        print(f"| {kind} | {per_epoch[kind]:.2f} | {per_epoch['conventional'] / per_epoch[kind]:.2f}x faster | "
              f"{per_epoch[kind] / per_epoch['floor']:.2f}x the floor | {loss} |")


if __name__ == "__main__":
    main()
