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
    """Times `torch.mm` at each shape of `gemms`; call `time_once()` between the step's own timings.

    The floor is the fastest pass: one pass times every product once (the best of `repeats` back-to-back
    calls, as a step's time in a round is the best of its repeats), and the floor is the smallest pass
    total over the rounds, as the step's time is its fastest round. (Adding up each product's best time
    from different rounds would give a total that no single pass reached on a noisy shared machine.)
    """

    def __init__(self, gemms: list[Gemm]):
        self.gemms = gemms
        self.operands = [(torch.randn(g.m, g.k), torch.randn(g.k, g.n)) for g in gemms]
        self.passes: list[list[float]] = []  # ms per product, one list per pass

    def time_once(self, repeats: int = 2) -> float:
        """One pass over every product (each warmed once, then the best of `repeats` timed calls); its total in ms."""
        times = []
        for a, b in self.operands:
            torch.mm(a, b)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(a, b)
                best = min(best, (time.perf_counter() - start) * 1000)
            times.append(best)
        self.passes.append(times)
        return sum(times)

    def fastest_pass(self) -> list[float]:
        """The ms of each product in the pass with the smallest total."""
        return min(self.passes, key=sum)

    def total_ms(self) -> float:
        return sum(self.fastest_pass())


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
