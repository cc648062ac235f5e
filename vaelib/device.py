"""Which device trains, and in which precision: float32, or bfloat16 autocast where that is faster here.

bfloat16 halves the bytes of every activation, and CPUs with native bfloat16 instructions (AVX-512
BF16, AMX) multiply in it about twice as fast as in float32. CPUs without them (AVX2 only: most
laptops) emulate it, and there the same step runs 20 to 30 times *slower*. So the precision is chosen
per machine, never fixed in a recipe:

    mixed_precision="auto"   bfloat16 where it is faster on this machine, else float32 (the default
                             choice of the conv recipes); `choose_precision` says what it picks and why
    mixed_precision=False    float32                (also "float32")
    mixed_precision=True     bfloat16 autocast      (also "bfloat16"; warns where it is much slower)
    mixed_precision="float16"   float16 autocast with a gradient scaler (CUDA only)

Weights, the optimizer and the loss stay float32 in every case; only the forward pass is cast.
Introduced in: 06_conv_vae
"""
from __future__ import annotations

import contextlib
import copy
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from . import losses

PRECISIONS = ("float32", "bfloat16", "float16")
CHOICES = "'auto', 'float32', 'bfloat16', 'float16', True (bfloat16) or False (float32)"
MUCH_SLOWER = 1.5  # forcing bfloat16 warns when it is at least this many times slower than float32
CLEARLY_FASTER = 1.1  # "auto" picks bfloat16 only when timing shows at least this speed-up


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`None` picks CUDA when present, else the CPU; a named device must exist on this machine."""
    if device is None:
        return default_device()
    choices = f"device must be 'cpu', 'cuda', 'mps' or None (pick automatically), got {device!r}"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(choices) from error
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if resolved.type not in available:
        raise ValueError(choices)
    if not available[resolved.type]:
        raise ValueError(f"device {device!r} was asked for, but this PyTorch has no {resolved.type.upper()} "
                         f"device here: use device='cpu', or device=None to pick automatically")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} was asked for, but this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s), numbered from 0")
    return resolved


def check_mixed_precision(value) -> str:
    """The setting as 'auto' or one of PRECISIONS; anything else is refused with the choices."""
    if value is True:
        return "bfloat16"
    if value is False:
        return "float32"
    if isinstance(value, str) and value in ("auto", *PRECISIONS):
        return value
    raise ValueError(f"mixed_precision must be {CHOICES}, got {value!r}")


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX) and PyTorch's kernels use it."""
    capability = torch.backends.cpu.get_cpu_capability()  # 'AVX2', 'AVX512', 'DEFAULT', ...
    if capability != "AVX512":
        return False
    instructions = any(getattr(torch.cpu, probe, lambda: False)()
                       for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return instructions and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # one of PRECISIONS
    reason: str  # one sentence: what decided it (and the timing, where one was made)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain float32."""
        return None if self.precision == "float32" else getattr(torch, self.precision)

    def __str__(self) -> str:
        return f"{self.precision} ({self.reason})"


def autocast(device: torch.device, precision: str):
    """The forward pass's context: autocast to `precision`, or nothing for float32."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, precision))


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """float16's narrow range needs the loss scaled up before backward; other precisions pass through."""
    return torch.amp.GradScaler(device.type, enabled=precision == "float16")


_timed: dict[tuple, tuple[float, float]] = {}  # (device, model signature, batch) -> (float32 s, bfloat16 s)


def _signature(model: nn.Module) -> tuple:
    return type(model).__name__, tuple((name, tuple(p.shape)) for name, p in model.named_parameters())


def time_step(model: nn.Module, x: torch.Tensor, precision: str, steps: int = 2) -> float:
    """Seconds of the fastest of `steps` training steps (forward, loss, backward) of a copy of `model` on `x`.

    The fastest, not the mean: on a shared machine another process only ever adds time. Works on a deep
    copy and restores the random state, so the caller's model and results are untouched.
    """
    probe = copy.deepcopy(model).train()
    device = x.device

    def step():
        with autocast(device, precision):
            logits, mu, logvar = probe(x)
        losses.vae_loss(logits, x, mu, logvar, 1.0).total.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fastest = float("inf")
    with torch.random.fork_rng(devices=[x.device] if device.type == "cuda" else []):
        for _ in range(3 if device.type == "cuda" else 1):
            step()  # warm-up: first-call allocations and kernel selection (cuDNN tries several on a GPU)
        for _ in range(steps if device.type != "cuda" else max(steps, 5)):
            start = time.perf_counter()
            step()
            fastest = min(fastest, time.perf_counter() - start)
    return fastest


def _timings(model: nn.Module, x: torch.Tensor, other: str = "bfloat16") -> tuple[float, float]:
    """(float32, `other`) seconds per step, measured once per process for each model shape and device.

    The two are timed in turn, twice, so that a burst of load elsewhere does not decide alone.
    """
    key = (str(x.device), _signature(model), tuple(x.shape), other)
    if key not in _timed:
        rounds = [(time_step(model, x, "float32"), time_step(model, x, other)) for _ in range(2)]
        _timed[key] = (min(r[0] for r in rounds), min(r[1] for r in rounds))
    return _timed[key]


def _timed_choice(model: nn.Module, x: torch.Tensor, other: str, where: str) -> PrecisionChoice:
    """`other` when a timed step shows it CLEARLY_FASTER than float32 here, else float32; the reason says so."""
    float32_s, other_s = _timings(model, x, other)
    speedup = float32_s / other_s
    timing = (f"{where}: a step took {other_s * 1000:.3g} ms in {other} and {float32_s * 1000:.3g} ms in float32 "
              f"here ({speedup:.2f}x)")
    if speedup >= CLEARLY_FASTER:
        return PrecisionChoice(other, timing)
    return PrecisionChoice("float32", timing + f": {other} is not {CLEARLY_FASTER}x faster")


def choose_precision(device: str | torch.device | None = None, model: nn.Module | None = None,
                     x: torch.Tensor | None = None, mixed_precision="auto") -> PrecisionChoice:
    """The precision that `train.fit(mixed_precision=...)` trains in on this machine, and why.

    "auto" decides from the hardware where that is conclusive: a CPU without native bfloat16 (AVX2) ->
    float32. On a CPU with native bfloat16, and on CUDA, it times steps of `model` on the batch `x` in each
    precision, once per process, and picks the half precision (bfloat16; float16 with a gradient scaler on
    a GPU without bfloat16) only when it is clearly faster (without a model: the half precision, untimed). A forced
    bfloat16 on a CPU without native support is measured too, and warns with the slowdown.
    Introduced in: 06_conv_vae
    """
    device = resolve_device(device)
    setting = check_mixed_precision(mixed_precision)
    if setting == "float16" and device.type != "cuda":
        raise ValueError(f"mixed_precision='float16' needs a CUDA device (this is {device.type}): use 'auto', "
                         f"'bfloat16' or 'float32'")
    if setting == "float32":
        return PrecisionChoice("float32", "asked for")
    if setting == "float16":
        return PrecisionChoice("float16", "asked for, with a gradient scaler")
    if setting == "bfloat16":
        if device.type == "cpu" and not cpu_has_native_bfloat16() and model is not None and x is not None:
            float32_s, bfloat16_s = _timings(model, x[:32])
            if bfloat16_s > MUCH_SLOWER * float32_s:
                warnings.warn(f"bfloat16 was forced on a CPU without native bfloat16 "
                              f"({torch.backends.cpu.get_cpu_capability()}): a training step measured "
                              f"{bfloat16_s / float32_s:.1f}x slower than in float32 ({bfloat16_s * 1000:.0f} ms "
                              f"against {float32_s * 1000:.0f} ms on 32 images). Use mixed_precision='auto'.",
                              stacklevel=3)
        return PrecisionChoice("bfloat16", "asked for")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        other = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if model is None or x is None:
            return PrecisionChoice(other, f"{name} supports {other} (not timed: no model)")
        return _timed_choice(model, x, other, name)  # a small net on a big GPU: often launch-bound, not faster
    if device.type != "cpu":
        return PrecisionChoice("float32", f"no mixed precision on {device.type}")
    capability = torch.backends.cpu.get_cpu_capability()
    if not cpu_has_native_bfloat16():
        return PrecisionChoice("float32", f"this CPU ({capability}) has no native bfloat16, which it would "
                                          f"emulate many times slower")
    if model is None or x is None:
        return PrecisionChoice("bfloat16", f"this CPU ({capability}) has native bfloat16 (not timed: no model)")
    return _timed_choice(model, x, "bfloat16", f"this CPU ({capability})")
