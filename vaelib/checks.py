"""Every input check of the library, in one place and one message style.

Each `check_*` returns the value (normalised where that helps) or raises `ValueError` with one line:
"<name> must be <what>, got <value>", and where it helps, what to do instead. Public entry points
call them at their door, before any work starts.
Introduced in: 02_autoencoder
"""
from __future__ import annotations

import math

import torch

MAX_INT = 2**31 - 1  # the largest count or size that any check here accepts
MAX_SEED = 2**63 - 1  # the largest seed that torch.manual_seed takes


def _shown(value) -> str:
    """The value as the message shows it: a 5000-digit integer is not printed in full."""
    if isinstance(value, int) and value.bit_length() > 100:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 40 else text[:20] + f"... ({len(text)} characters)"


def check_positive_int(name: str, value, minimum: int = 1, maximum: int = MAX_INT) -> int:
    """An integer in [minimum, maximum] (bool is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {_shown(value)}")
    if value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {_shown(value)}")
    return value


def check_seed(seed) -> int:
    return check_positive_int("seed", seed, minimum=0, maximum=MAX_SEED)


def check_flag(name: str, value) -> bool:
    """A True/False setting: a string such as 'yes' or 'false' is refused rather than read as truthy."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {_shown(value)}")
    return value


def check_number(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite real number >= minimum (> minimum when `strict`)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < minimum or (strict and value == minimum)):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum:g}, "
                         f"got {_shown(value)}")
    return float(value)


def check_learning_rate(lr) -> float:
    return check_number("lr", lr, 0.0, strict=True)


def check_beta(beta) -> float:
    return check_number("beta", beta, 0.0)


def check_free_bits(free_bits) -> float:
    """Nats per latent dimension that the KL term does not charge for (0: plain KL). Introduced in: 10_collapse"""
    return check_number("free_bits", free_bits, 0.0)


def check_warmup_epochs(warmup_epochs) -> int:
    """Epochs over which beta rises from 0 to its value (0: no warm-up). Introduced in: 10_collapse"""
    return check_positive_int("warmup_epochs", warmup_epochs, minimum=0)


MAX_LATENT_DIM = 4096  # far beyond any model of the course; a bigger one would not fit in memory
MAX_HIDDEN_LAYERS = 8  # hidden layers per side of the MLP VAE; the course uses 1 and 2


def check_latent_dim(latent_dim) -> int:
    return check_positive_int("latent_dim", latent_dim, maximum=MAX_LATENT_DIM)


def check_images(name: str, x) -> torch.Tensor:
    """Images `x`: a float32 tensor (N, 784) with pixels in [0, 1]; anything else is refused with the fix."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (N, 784), got {type(x).__name__}: convert it with "
                         f"torch.as_tensor(...).float()")
    if x.ndim != 2 or x.shape[1] != 784:
        raise ValueError(f"{name} must have shape (N, 784), got {tuple(x.shape)}: flatten each image with "
                         f".reshape(len(x), 784)")
    if len(x) == 0:
        raise ValueError(f"{name} holds no images (shape {tuple(x.shape)}): pass at least one")
    if x.dtype != torch.float32:
        hint = "divide by 255 as in x.float() / 255" if x.dtype == torch.uint8 else "convert it with .float()"
        raise ValueError(f"{name} must be float32 pixels in [0, 1], got {str(x.dtype)[6:]}: {hint}")
    low, high = x.min().item(), x.max().item()
    if math.isnan(low):
        raise ValueError(f"{name} holds NaN pixels: find where they came from, or replace them with torch.nan_to_num")
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(f"{name} must hold pixels in [0, 1], got values from {low:g} to {high:g}: "
                         f"divide by 255 (or rescale) first")
    return x


def check_labels(name: str, y, count: int, num_classes: int = 10) -> torch.Tensor:
    """Digit labels `y`: an integer tensor (N,) with N = `count` (one per image) and values in 0..num_classes-1."""
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.ndim != 1:
        raise ValueError(f"{name} must be an integer tensor (N,) of digits, one per image, got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    if len(y) != count:
        raise ValueError(f"{name} holds {len(y)} labels for {count} images: pass one label per image")
    if count and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must hold digits 0..{num_classes - 1}, got {y.min().item()}..{y.max().item()}")
    return y.long()
