"""Training speed on a CUDA GPU: epochs of vaelib's `fit` against pytorch/examples' loop, and a CUDA-graph step.

    python benchmarks/gpu_speed.py [--epochs 3]      (`make benchmark` runs it after the CPU tables where CUDA is present)

On the GPU named in the title, per epoch of MNIST's 60,000 training images, batch 128 (the fastest epoch after
the first, which warms cuDNN and the allocator up):
- pytorch/examples `vae/main.py`: the per-sample `Dataset` + `DataLoader` (as torchvision's MNIST + ToTensor
  serve it), each batch copied to the GPU, `loss.item()` every batch: the MLP VAE 784-400-20 only;
- vaelib: `train.fit(device="cuda")` in float32, in bfloat16 and with "auto" (which times both first), for
  the MLP VAE (L = 20) and the conv VAE (L = 2);
- a CUDA graph: the same forward, loss, backward and Adam step captured once (`torch.cuda.graphs`) and
  replayed on each batch, which removes the per-kernel launch cost that a small network on a large GPU is
  bound by (468 full batches: the graph has one shape, so the last, partial batch is left out).
`fit` trains without graphs; the table says whether a graph would win on this GPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vaelib import data, device, losses, models, train  # noqa: E402

NETWORKS = {"mlp": ("MLP VAE 784-400-20", lambda: models.VAE(latent_dim=20)),
            "conv": ("conv VAE (L = 2)", lambda: models.ConvVAE(latent_dim=2))}


def examples_epochs(train_x: torch.Tensor, epochs: int) -> float:
    """Seconds of the fastest epoch after the first of pytorch/examples' loop on the GPU."""
    from train_speed import PerSampleMNIST, examples_loss

    torch.manual_seed(1)
    model = models.VAE(latent_dim=20).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = (train_x * 255).round().to(torch.uint8).view(-1, 28, 28)
    loader = DataLoader(PerSampleMNIST(images, torch.zeros(len(images), dtype=torch.int64)), batch_size=128,
                        shuffle=True)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, _ in loader:
            x = x.cuda()
            optimizer.zero_grad()
            mu, logvar = model.encode(x.view(-1, 784))
            recon = model.decode(models.reparameterize(mu, logvar))
            loss = examples_loss(recon, x, mu, logvar)
            loss.backward()
            loss.item()
            optimizer.step()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:] or seconds)


def fit_epochs(kind: str, train_x: torch.Tensor, epochs: int, precision) -> tuple[float, str]:
    """(seconds of the fastest epoch after the first, the precision it trained in) of `train.fit` on CUDA."""
    torch.manual_seed(0)
    history = train.fit(NETWORKS[kind][1](), train_x, epochs=epochs, device="cuda", mixed_precision=precision,
                        progress=False)
    return min(row["seconds"] for row in history[1:] or history), history[-1]["precision"]


def graph_epochs(kind: str, train_x: torch.Tensor, epochs: int, precision: str) -> float:
    """Seconds of the fastest epoch after the first, each full batch one replay of a captured training step."""
    torch.manual_seed(0)
    model = NETWORKS[kind][1]().cuda().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    static_x = train_x[:128].clone()
    dtype = None if precision == "float32" else getattr(torch, precision)

    def step():
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False):
            logits, mu, logvar = model(static_x)
        losses.vae_loss(logits, static_x, mu, logvar, 1.0).total.backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graphs asks
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    batches = data.Batches(train_x, batch_size=128, seed=0)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x in batches:
            if len(x) == 128:
                static_x.copy_(x)
                graph.replay()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:] or seconds)


def report(train_x: torch.Tensor, epochs: int = 3) -> None:
    """Print the GPU table; nothing to do without CUDA."""
    if not torch.cuda.is_available():
        print("\nno CUDA device here: no GPU rows")
        return
    name = torch.cuda.get_device_name()
    train_x = train_x.cuda()
    examples = examples_epochs(train_x.cpu(), epochs)
    rows = [("MLP VAE 784-400-20", "pytorch/examples loop, float32", examples, "")]
    half = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    for kind, (title, build) in NETWORKS.items():
        fitted = {}
        for setting in ("float32", half, "auto"):
            fitted[setting], precision = fit_epochs(kind, train_x, epochs, setting)
            rows.append((title, f"vaelib fit, {setting}" + (f" (picked {precision})" if setting == "auto" else ""),
                         fitted[setting], ""))
        for precision in ("float32", half):
            try:
                seconds = graph_epochs(kind, train_x, epochs, precision)
            except Exception as error:  # a capture that this PyTorch or GPU refuses: say so, go on
                rows.append((title, f"CUDA graph, {precision}", float("nan"), f"failed: {type(error).__name__}"))
                continue
            wins = seconds < 0.9 * fitted[precision]
            rows.append((title, f"CUDA graph, {precision}", seconds,
                         f"{fitted[precision] / seconds:.2f}x fit's epoch: " + ("wins" if wins else "does not win")))
        choice = device.choose_precision("cuda", build().cuda(), train_x[:128], "auto")
        print(f"{title}: auto picks {choice}")
    print(f"\n{name}, PyTorch {torch.__version__}, CUDA {torch.version.cuda}: seconds per epoch of 60,000 images, "
          f"batch 128 (the fastest of {epochs} epochs after the first)\n")
    print("| network | loop | s / epoch | vs pytorch/examples | note |")
    print("|---|---|---|---|---|")
    for title, loop, seconds, note in rows:
        print(f"| {title} | {loop} | {seconds:.3f} | {examples / seconds:.1f}x faster | {note} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each loop (the first is a warm-up)")
    args = parser.parse_args()
    report(data.load_mnist("train")[0], args.epochs)


if __name__ == "__main__":
    main()
