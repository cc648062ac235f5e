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


MAX_WALK_STEPS = 201  # points per axis of a latent map or walk: 201 x 201 decoded digits take 127 MB


def check_walk(low, high, steps, minimum: int = 2) -> tuple[float, float, int]:
    """A latent walk or map over [low, high] in `steps` points: finite numbers low < high, and
    minimum <= steps <= MAX_WALK_STEPS (a map decodes steps^2 digits: it is bounded before it is built)."""
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {_shown(value)}")
    if not low < high:
        raise ValueError(f"low must be below high, got low={low:g}, high={high:g}: e.g. low=-3, high=3")
    return float(low), float(high), check_positive_int("steps", steps, minimum=minimum, maximum=MAX_WALK_STEPS)


def check_images(name: str, x) -> torch.Tensor:
    """Images `x`: a float32 tensor (N, 784) with pixels in [0, 1]; anything else is refused with the fix."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (N, 784), got {type(x).__name__}: convert it with "
                         f"torch.as_tensor(...).float()")
    if x.layout != torch.strided or x.is_meta:
        raise ValueError(f"{name} must be a dense tensor with values, got a {'meta' if x.is_meta else 'sparse'} one: "
                         f"convert it with {'.to_dense()' if not x.is_meta else 'real images, e.g. data.load_mnist'}")
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


def check_visible(visible, count: int, per_image: bool = True) -> torch.Tensor:
    """A mask of the pixels seen: a bool (or 0/1) tensor (784,), or where `per_image` also (1, 784) (one mask for
    every image, as the grid passes it on) or (N, 784) with N = `count`. Returned as bool. Introduced in: 08_beyond"""
    shapes = [(784,), (1, 784), (count, 784)] if per_image else [(784,)]
    if (not isinstance(visible, torch.Tensor) or visible.layout != torch.strided or visible.is_meta
            or tuple(visible.shape) not in shapes or visible.is_complex()):
        raise ValueError(f"visible must be a bool tensor {' or '.join(map(str, shapes))} marking the pixels seen, got "
                         f"{type(visible).__name__} {tuple(getattr(visible, 'shape', ()))}: e.g. "
                         f"visible = torch.arange(784) < 392 (the top half)")
    if visible.dtype != torch.bool:
        if not bool(((visible == 0) | (visible == 1)).all()):
            raise ValueError("visible must hold only True/False (or 0 and 1), got other values: threshold it, "
                             "e.g. visible = mask > 0.5")
        visible = visible.bool()
    return visible


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


def check_path(name: str, value) -> "Path":
    """A file or folder path: a str or os.PathLike, not empty (an int, None or bytes is refused)."""
    import os
    from pathlib import Path
    if isinstance(value, (bytes, bool)) or not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise ValueError(f"{name} must be a path (a str or pathlib.Path), got {_shown(value)}: pass e.g. "
                         f"'checkpoints/vae-l2-b1'")
    return Path(value)


def check_choice(name: str, value, choices) -> str:
    """One of the names in `choices` (a list or an unhashable value is refused, not a TypeError)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, sorted(choices)))}, got {_shown(value)}")
    return value


def check_optional_int(name: str, value, minimum: int = 1, maximum: int = MAX_INT) -> int | None:
    """None, or an integer in [minimum, maximum]."""
    return None if value is None else check_positive_int(name, value, minimum, maximum)


def check_mapping(name: str, value) -> dict:
    """None (taken as {}) or a dict, such as `expected=` of checkpoints.load."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict of config keys and values, got {_shown(value)}: "
                         f"e.g. {{'beta': 1.0}}")
    return value


def check_model(name: str, model):
    """A torch.nn.Module with float32, dense weights on a real device (what every metric and fit compute with)."""
    from torch import nn
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name} must be a torch.nn.Module such as models.VAE(), got {type(model).__name__}: "
                         f"load one with checkpoints.load or registry.load_or_train")
    for key, tensor in model.state_dict().items():
        if tensor.is_meta:
            raise ValueError(f"{name} has weights on the meta device ({key}): they hold no values; build it on "
                             f"a real device or load a checkpoint")
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            raise ValueError(f"{name} holds {str(tensor.dtype)[6:]} weights ({key}): convert it with "
                             f"model.float() (mixed precision is fit's mixed_precision=)")
    return model


def check_record(what: str, value, fields: dict, optional: dict | None = None):
    """A JSON object read from a file: a dict with each key in `fields` of its type(s) (None allowed
    where `type(None)` is listed), and each key of `optional` that it holds of its type(s).
    Raises ValueError naming the first field that is wrong."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got a JSON {type(value).__name__}")
    for key, types in {**(optional or {}), **fields}.items():
        types = types if isinstance(types, tuple) else (types,)
        if key not in value:
            if key in fields:
                raise ValueError(f"{what} lacks the field {key!r}")
            continue
        item = value[key]
        if (isinstance(item, bool) and bool not in types) or not isinstance(item, types):
            raise ValueError(f"{what} has {key}={_shown(item)}, which must be "
                             f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}")
    return value


MAX_SWEEP_RUNS = 1000  # runs of one sweep: each executes a whole chapter


def check_grid_size(sizes: list[int]) -> int:
    """The number of runs of a sweep's grid (the product of its values per parameter), at most MAX_SWEEP_RUNS."""
    runs = 1
    for size in sizes:
        runs *= size
        if runs > MAX_SWEEP_RUNS:
            break
    if runs > MAX_SWEEP_RUNS:
        raise ValueError(f"the grid has {'more than ' if runs != math.prod(sizes) else ''}{runs} runs, but a sweep "
                         f"runs at most {MAX_SWEEP_RUNS}: give fewer values, or split it into several sweeps")
    return runs


MAX_NOTEBOOK_BYTES = 256 * 2**20  # a chapter with its figures takes a few MB


def check_notebook(source) -> None:
    """A readable Jupyter notebook that nbformat validates, else ValueError (FileNotFoundError if none)."""
    from pathlib import Path
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"no notebook at {source}")
    try:
        import nbformat

        from . import files
        text = files.read_bounded(source, MAX_NOTEBOOK_BYTES, "a notebook")  # ValueError for gigabytes, unread
    except OSError as error:
        raise ValueError(f"cannot read {source} ({error.strerror or error}): check its permissions") from None
    try:
        notebook = nbformat.reads(text.decode(), as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # bad JSON, bad UTF-8, a notebook of the wrong shape (no metadata, ...)
        reason = " ".join(str(error).split())[:100]
        raise ValueError(f"{source} is not a Jupyter notebook that nbformat reads ({reason}): give a chapter's .ipynb file, "
                         f"or repair it with `jupyter nbconvert --to notebook`") from None


def check_url(name: str, url) -> str:
    """An http:// or https:// address (file://, ftp:// and others are refused: a download reads only the web)."""
    from urllib.parse import urlsplit
    if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https") or not urlsplit(url).netloc:
        raise ValueError(f"{name} must be an http:// or https:// address, got {_shown(url)}")
    return url


SIDECAR_START = b'{\n "kind": '  # how every sidecar that checkpoints.save (or judge.save) writes begins


def check_replaceable_checkpoint(weights_path, sidecar_path, overwrite: bool) -> None:
    """A checkpoint may be written at (weights_path, sidecar_path): nothing is there, or (with `overwrite`) a
    pair that vaelib wrote: a sidecar that begins as ours, and weights only beside their sidecar. A user's
    own `notes.json` or a lone `.safetensors` file is never replaced, even with --overwrite."""
    sidecar_free = check_replaceable(sidecar_path, overwrite, SIDECAR_START, "the checkpoint")
    weights_free = check_replaceable(weights_path, overwrite, None, "the checkpoint")
    if sidecar_free and not weights_free:
        raise ValueError(f"{weights_path} exists without its sidecar {sidecar_path.name}: it is not a checkpoint "
                         f"that vaelib wrote, so it is never replaced, even with --overwrite; move it aside first")


def check_size(path, size: int, max_bytes: int, what: str) -> None:
    """A file of `size` bytes may be read whole as `what` only if it holds at most `max_bytes`."""
    if size > max_bytes:
        raise ValueError(f"{path} holds {size} bytes, more than the {max_bytes} that {what} can take: it is "
                         f"damaged or not {what}; restore it (git checkout) or delete it")


def check_replaceable(path, overwrite: bool, signature: bytes | None = None, what: str = "it") -> bool:
    """Whether `path` may be written: True if it does not exist; refused (ValueError) if it exists and
    `overwrite` is False, if it is not a regular file, or (with `signature`) if it does not begin with
    those bytes, so that only a file this library wrote is ever replaced. Returns False for an existing file."""
    import os
    import stat
    from pathlib import Path
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return True
    except OSError as error:
        raise ValueError(f"cannot inspect {path} ({error.strerror}): choose another place for {what}") from error
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} exists and is not a regular file: move it aside or choose another place for {what}")
    if not overwrite:
        raise ValueError(f"{path} already exists: choose another place for {what}, or add --overwrite "
                         f"(overwrite=True) to replace it")
    if signature is not None:
        try:
            with open(path, "rb") as handle:
                head = handle.read(len(signature))
        except OSError as error:
            raise ValueError(f"cannot read {path} ({error.strerror}): move it aside first") from error
        if head != signature:
            raise ValueError(f"{path} was not written by vaelib (it does not begin with {signature[:40]!r}): "
                             f"it is never replaced, even with --overwrite; move it aside first")
    return False

