"""Checkpoints: safetensors weights plus a JSON sidecar, checked before use, written atomically.

    checkpoints/<name>.safetensors   the weights (float16 by default), no pickle anywhere
    checkpoints/<name>.json          the recipe, history, test metrics, the weights' SHA-256, and the
                                     SHA-256 of the sidecar itself (all but its metrics)

A save changes the pair in one step: the new weights go to a temporary file, the sidecar that names
that file replaces the old sidecar (the commit), and only then do the weights move to their own name.
Killed at any moment, the folder loads as the old checkpoint or the new one; the next save finishes
or removes what the killed one left.
Introduced in: 02_autoencoder
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from . import __version__, files, models
from .device import resolve_device
from .sidecar import CONFIG_KEYS, CheckpointError, check_sidecar, recipe_sha256  # noqa: F401


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
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class SaveFailed(RuntimeError):
    """A trained model could not be saved where asked; the message names where it was kept instead."""


def paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, sidecar) for a name in CHECKPOINT_DIR or a path with or without its suffix."""
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    if len(stem.parts) == 1 and not stem.exists():
        stem = CHECKPOINT_DIR / stem
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    files.atomic_write_bytes(Path(path), payload)


def _encode(sidecar: dict) -> bytes:
    return (json.dumps({**sidecar, "recipe_sha256": recipe_sha256(sidecar)}, indent=1) + "\n").encode()


def finish_interrupted_save(stem: str | os.PathLike) -> None:
    """Complete a save that was killed after its commit, and remove the temporary files it left."""
    weights_path, sidecar_path = paths(stem)
    try:
        sidecar = json.loads(sidecar_path.read_text())
        staged = weights_path.parent / sidecar["weights_file"]
    except (OSError, ValueError, KeyError, TypeError):
        staged = None
    if staged is not None and staged != weights_path and files.writer_pid(staged) is not None \
            and staged.is_file() and not files.is_running(files.writer_pid(staged)):
        os.replace(staged, weights_path)  # the commit happened: roll forward
        files.atomic_write_bytes(sidecar_path, _encode({**sidecar, "weights_file": weights_path.name}))
    files.remove_stale(weights_path.parent, weights_path.name)
    files.remove_stale(weights_path.parent, sidecar_path.name)


def save(stem: str | os.PathLike, model: nn.Module, config: dict, history: list | None = None,
         metrics: dict | None = None, dtype: torch.dtype = torch.float16, overwrite: bool = True) -> Path:
    """Save `model` with its config (CONFIG_KEYS), training history and test metrics.

    With `overwrite=False` an existing checkpoint at `stem` is never replaced: FileExistsError, decided
    by an exclusive create at the moment of the commit (so two runs racing for one name cannot both win).
    """
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"config lacks {missing}: a checkpoint needs all of {list(CONFIG_KEYS)}")
    weights_path, sidecar_path = paths(stem)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    finish_interrupted_save(stem)
    if not overwrite and (weights_path.exists() or weights_path.is_symlink()):
        raise FileExistsError(f"{weights_path} already exists: choose another name, or allow overwriting")
    tensors = {name: t.detach().to("cpu", dtype).contiguous() for name, t in model.state_dict().items()}
    payload = safetensors.torch.save(tensors)
    staged = files.write_temporary(weights_path, payload)
    sidecar = {
        **config,
        "vaelib_version": __version__,
        "dtype": str(dtype).removeprefix("torch."),
        "weights_file": staged.name,
        "weights_sha256": hashlib.sha256(payload).hexdigest(),
        "history": history or [],
        "metrics": metrics or {},
    }
    try:
        files.commit(files.write_temporary(sidecar_path, _encode(sidecar)), sidecar_path, overwrite)  # the commit
    except FileExistsError:
        staged.unlink(missing_ok=True)
        raise FileExistsError(f"{sidecar_path} already exists: choose another name, or allow overwriting") from None
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    os.replace(staged, weights_path)
    write_sidecar(stem, {**sidecar, "weights_file": weights_path.name})
    return weights_path


SAVED_FIELDS = ("vaelib_version", "dtype", "weights_file", "weights_sha256", "history", "metrics", "recipe_sha256")


def saved_config(sidecar: dict) -> dict:
    """The config that `save` was given, from a sidecar: all but the fields that `save` writes itself."""
    return {key: value for key, value in sidecar.items() if key not in SAVED_FIELDS}


def write_sidecar(stem: str | os.PathLike, sidecar: dict) -> Path:
    """Write (atomically) the JSON sidecar of a checkpoint, with its own SHA-256."""
    _, sidecar_path = paths(stem)
    files.atomic_write_bytes(sidecar_path, _encode(sidecar))
    return sidecar_path


def read_sidecar(stem: str | os.PathLike) -> dict:
    """The checked sidecar: valid JSON, the right types, and unedited since it was written."""
    _, sidecar_path = paths(stem)
    if not sidecar_path.is_file():
        raise CheckpointError(f"no checkpoint sidecar at {sidecar_path}: train it with "
                              f"`python -m vaelib train {sidecar_path.stem}`")
    try:
        sidecar = json.loads(sidecar_path.read_bytes())
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # ValueError: JSON, or a huge integer
        raise CheckpointError(f"{sidecar_path} is not valid JSON ({str(error)[:80]}): the sidecar is "
                              f"damaged; retrain it or restore it with git checkout") from error
    except OSError as error:
        raise CheckpointError(f"cannot read {sidecar_path} ({error.strerror}): check its permissions") from error
    return check_sidecar(sidecar, sidecar_path)


def _weights_payload(weights_path: Path, sidecar: dict, sidecar_path: Path) -> bytes:
    """The weights' bytes whose SHA-256 the sidecar records: at the file it names, else at its own name."""
    candidates = [weights_path.parent / sidecar["weights_file"], weights_path]
    found = [path for path in dict.fromkeys(candidates) if path.is_file()]
    if not found:
        raise CheckpointError(f"{weights_path} is missing, though {sidecar_path.name} describes it")
    for path in found:
        payload = path.read_bytes()
        digest = hashlib.sha256(payload).hexdigest()
        if digest == sidecar["weights_sha256"]:
            return payload
    raise CheckpointError(
        f"{weights_path} is damaged or was replaced: its SHA-256 is {digest}, but {sidecar_path.name} "
        f"records {sidecar['weights_sha256']}. Retrain it with `python -m vaelib train "
        f"{weights_path.stem}` (or restore it with git checkout).")


def load(stem: str | os.PathLike, expected: dict | None = None, device: str | torch.device = "cpu",
         ) -> tuple[nn.Module, dict]:
    """Load a checkpoint after checking the weights' SHA-256, the config and every tensor's shape.

    `expected` maps config keys to the values the caller needs; any difference is refused.
    Returns the model in eval mode (float32) and its sidecar.
    """
    device = resolve_device(device)
    weights_path, sidecar_path = paths(stem)
    sidecar = read_sidecar(stem)
    payload = _weights_payload(weights_path, sidecar, sidecar_path)
    for key, value in (expected or {}).items():
        if sidecar.get(key) != value:
            raise CheckpointError(f"{weights_path.name} has {key}={sidecar.get(key)!r}, expected {value!r}")
    try:
        model = models.build(sidecar["kind"], sidecar["latent_dim"], sidecar.get("activation", "relu"),
                             **sidecar.get("options", {}))
        tensors = safetensors.torch.load(payload)
        model.load_state_dict({name: t.float() for name, t in tensors.items()}, strict=True)
    except (KeyError, RuntimeError, ValueError, TypeError, safetensors.SafetensorError) as error:
        raise CheckpointError(f"{weights_path} does not fit its config: {str(error)[:200]}") from error
    stored = DTYPES[sidecar["dtype"]]
    for name, tensor in tensors.items():
        if tensor.dtype != stored:
            raise CheckpointError(f"{weights_path} stores {name} as {str(tensor.dtype)[6:]}, but its sidecar "
                                  f"says {sidecar['dtype']}: the weights are not the ones saved; retrain it")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{weights_path} holds NaN or infinite values in {name}: retrain it")
    return model.to(device).eval(), sidecar


def seal(stem: str | os.PathLike) -> Path:
    """Record the SHA-256 of a sidecar written before vaelib checked it (only for a sidecar you trust)."""
    _, sidecar_path = paths(stem)
    return write_sidecar(stem, json.loads(sidecar_path.read_text()))
