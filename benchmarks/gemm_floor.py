"""The shape-matched GEMM floor of a training step: what its matrix products alone cost on this CPU.

Every layer of a network is, at heart, matrix products:
    Linear (B, K) -> (B, N)                      forward (B, K) @ (K, N)
    Conv2d, output (B, C_out, Ho, Wo)            im2col: (B*Ho*Wo, C_in*k*k) @ (C_in*k*k, C_out)
    ConvTranspose2d, input (B, C_in, H, W)       (B*H*W, C_in) @ (C_in, C_out*k*k), then col2im
and its backward pass two more: the input gradient (M, N) @ (N, K) (skipped where the input needs
none, as for the images) and the weight gradient. Timing `torch.mm` at exactly these shapes, in the
same run as the step, gives the floor that no kernel choice for the layers can beat; what the step
spends above it is copies (im2col/col2im), elementwise work and the optimizer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Gemm:
    layer: str  # the module's name in the model
    role: str  # 'forward', 'input grad' or 'weight grad'
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def layer_gemms(name: str, layer: nn.Module, x: torch.Tensor, needs_input_grad: bool) -> list[Gemm]:
    """The forward and backward matrix products of one layer on its input `x`."""
    if isinstance(layer, nn.ConvTranspose2d):
        batch, c_in, h, w = x.shape
        m, k, n = batch * h * w, c_in, layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1]
        products = [("forward", m, k, n), ("input grad", m, n, k), ("weight grad", k, m, n)]
    elif isinstance(layer, nn.Conv2d):
        out_h = (x.shape[2] + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
        out_w = (x.shape[3] + 2 * layer.padding[1] - layer.kernel_size[1]) // layer.stride[1] + 1
        m, k, n = x.shape[0] * out_h * out_w, layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1], \
            layer.out_channels
        products = [("forward", m, k, n), ("input grad", m, n, k), ("weight grad", n, m, k)]
    elif isinstance(layer, nn.Linear):
        m, k, n = x.shape[0], layer.in_features, layer.out_features
        products = [("forward", m, k, n), ("input grad", m, n, k), ("weight grad", n, m, k)]
    else:
        return []
    return [Gemm(name, role, *shape) for role, *shape in products
            if role != "input grad" or needs_input_grad]


@dataclass(frozen=True)
class LayerCall:
    layer: nn.Module
    input: torch.Tensor  # detached
    needs_input_grad: bool
    output_shape: torch.Size


def layer_calls(model: nn.Module, x: torch.Tensor) -> dict[str, LayerCall]:
    """Each Linear, Conv2d and ConvTranspose2d of `model` with the input it gets on the batch `x`, by name."""
    calls: dict[str, LayerCall] = {}

    def record(name):
        def hook(layer, inputs, output):
            calls[name] = LayerCall(layer, inputs[0].detach(), inputs[0].requires_grad, output.shape)
        return hook

    handles = [layer.register_forward_hook(record(name)) for name, layer in model.named_modules()
               if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def model_gemms(model: nn.Module, x: torch.Tensor) -> list[Gemm]:
    """Every matrix product of one training step of `model` on the batch `x`, found by running it once."""
    return [gemm for name, call in layer_calls(model, x).items()
            for gemm in layer_gemms(name, call.layer, call.input, call.needs_input_grad)]


class GemmFloor:
    """Times `torch.mm` at each shape of `gemms`; call `time_once()` between the step's own timings."""

    def __init__(self, gemms: list[Gemm]):
        self.gemms = gemms
        self.operands = [(torch.randn(g.m, g.k), torch.randn(g.k, g.n)) for g in gemms]
        self.samples: list[list[float]] = [[] for _ in gemms]  # ms per product, one list per GEMM

    def time_once(self, repeats: int = 2) -> float:
        """One pass over every product (each warmed once, then timed `repeats` times); the total in ms."""
        total = 0.0
        for (a, b), samples in zip(self.operands, self.samples):
            torch.mm(a, b)
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(a, b)
                samples.append((time.perf_counter() - start) * 1000)
            total += min(samples[-repeats:])
        return total

    def per_gemm_ms(self) -> list[float]:
        """The fastest time of each product: another process on a shared machine only ever adds time."""
        return [min(samples) for samples in self.samples]

    def total_ms(self) -> float:
        return sum(self.per_gemm_ms())

    def per_layer_ms(self) -> dict[str, float]:
        layers: dict[str, float] = {}
        for gemm, ms in zip(self.gemms, self.per_gemm_ms()):
            layers[gemm.layer] = layers.get(gemm.layer, 0.0) + ms
        return layers


def sgemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The CPU's float32 matrix-product rate on a large square product, GFLOP/s (the best of `repeats`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
