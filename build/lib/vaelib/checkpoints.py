"""Checkpoints: safetensors weights plus a JSON sidecar, checked before use, written atomically.

    checkpoints/<name>.safetensors   the weights (float16 by default), no pickle anywhere
    checkpoints/<name>.json          the recipe, history, test metrics and the weights' SHA-256

Introduced in: 02_autoencoder
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from . import __version__, models


def default_directory() -> Path:
    """$VAELIB_CHECKPOINTS; else checkpoints/ beside the package (a checkout, or `pip install -e .`);
    else the nearest checkpoints/ in or above the working folder (a checkout installed with
    `pip install .`, its chapters run from chapters/)."""
    if os.environ.get("VAELIB_CHECKPOINTS"):
        return Path(os.environ["VAELIB_CHECKPOINTS"])
    beside = Path(__file__).resolve().parent.parent / "checkpoints"
    if beside.is_dir():
        return beside
    here = Path.cwd().resolve()
    found = [folder / "checkpoints" for folder in (here, *here.parents) if (folder / "checkpoints").is_dir()]
    return found[0] if found else beside


CHECKPOINT_DIR = default_directory()
CONFIG_KEYS = ("kind", "latent_dim", "beta", "activation", "epochs", "seed", "batch_size", "lr")


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, or does not match what was asked for."""


def paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, sidecar) for a name in CHECKPOINT_DIR or a path with or without its suffix."""
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    if len(stem.parts) == 1 and not stem.exists():
        stem = CHECKPOINT_DIR / stem
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        tmp.write(payload)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.chmod(tmp.name, 0o644)  # temporary files are private (0600); a checkpoint is not
    os.replace(tmp.name, path)


def save(stem: str | os.PathLike, model: nn.Module, config: dict, history: list | None = None,
         metrics: dict | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Save `model` with its config (CONFIG_KEYS), training history and test metrics."""
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"config lacks {missing}: a checkpoint needs all of {list(CONFIG_KEYS)}")
    weights_path, _ = paths(stem)
    tensors = {name: t.detach().to("cpu", dtype).contiguous() for name, t in model.state_dict().items()}
    payload = safetensors.torch.save(tensors)
    sidecar = {
        **config,
        "vaelib_version": __version__,
        "dtype": str(dtype).removeprefix("torch."),
        "weights_file": weights_path.name,
        "weights_sha256": hashlib.sha256(payload).hexdigest(),
        "history": history or [],
        "metrics": metrics or {},
    }
    atomic_write_bytes(weights_path, payload)
    write_sidecar(stem, sidecar)
    return weights_path


def write_sidecar(stem: str | os.PathLike, sidecar: dict) -> Path:
    """Write (atomically) the JSON sidecar of a checkpoint."""
    _, sidecar_path = paths(stem)
    atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=1) + "\n").encode())
    return sidecar_path


def read_sidecar(stem: str | os.PathLike) -> dict:
    _, sidecar_path = paths(stem)
    if not sidecar_path.is_file():
        raise CheckpointError(f"no checkpoint sidecar at {sidecar_path}: train it with "
                              f"`python -m vaelib train {sidecar_path.stem}`")
    try:
        return json.loads(sidecar_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{sidecar_path} is not valid JSON ({error}): the sidecar is damaged") from error


def load(stem: str | os.PathLike, expected: dict | None = None, device: str | torch.device = "cpu",
         ) -> tuple[nn.Module, dict]:
    """Load a checkpoint after checking the weights' SHA-256, the config and every tensor's shape.

    `expected` maps config keys to the values the caller needs; any difference is refused.
    Returns the model in eval mode (float32) and its sidecar.
    """
    weights_path, sidecar_path = paths(stem)
    sidecar = read_sidecar(stem)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} is missing, though {sidecar_path.name} describes it")
    payload = weights_path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sidecar.get("weights_sha256"):
        raise CheckpointError(
            f"{weights_path} is damaged or was replaced: its SHA-256 is {digest}, but {sidecar_path.name} "
            f"records {sidecar.get('weights_sha256')}. Retrain it with `python -m vaelib train "
            f"{weights_path.stem}` (or restore it with git checkout).")
    for key, value in (expected or {}).items():
        if sidecar.get(key) != value:
            raise CheckpointError(f"{weights_path.name} has {key}={sidecar.get(key)!r}, expected {value!r}")
    try:
        model = models.build(sidecar["kind"], sidecar["latent_dim"], sidecar.get("activation", "relu"),
                             **sidecar.get("options", {}))
        tensors = safetensors.torch.load(payload)
        model.load_state_dict({name: t.float() for name, t in tensors.items()}, strict=True)
    except (KeyError, RuntimeError, ValueError, safetensors.SafetensorError) as error:
        raise CheckpointError(f"{weights_path} does not fit its config: {error}") from error
    return model.to(device).eval(), sidecar
