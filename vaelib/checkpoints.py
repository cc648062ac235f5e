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
import time
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from . import __version__, checks, files, models
from .device import resolve_device
from .sidecar import CONFIG_KEYS, CheckpointError, _check_fields, check_sidecar, recipe_sha256  # noqa: F401


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
    """(weights, sidecar) for a name in CHECKPOINT_DIR or a path with or without its suffix.

    A bare name (no folder in it, such as `vae-l2-b1`) is always one in CHECKPOINT_DIR, whatever the
    current folder holds; a checkpoint in the current folder is `./name`.
    """
    checks.check_path("the checkpoint", stem)
    text = os.fspath(stem)  # as given: `./name` keeps its `./` here, which a Path drops
    stem = Path(text)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    if not stem.is_absolute() and len(stem.parts) == 1:  # `name` is one in CHECKPOINT_DIR, `./name` one here
        stem = (CHECKPOINT_DIR if os.sep not in text and "/" not in text else Path.cwd()) / stem
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


MAX_SIDECAR_BYTES = 16 * 2**20  # a sidecar takes kilobytes (73 kB with 200 epochs of history)
MAX_HEADER = 1 << 20  # bytes of a safetensors header beyond the tensors' data: names, shapes, offsets


def max_weights_bytes(model: nn.Module, dtype_name: str) -> int:
    """The most bytes a safetensors file of `model`'s tensors in `dtype_name` can hold (data plus header)."""
    itemsize = DTYPES[dtype_name].itemsize
    return 8 + MAX_HEADER + sum(t.numel() * itemsize for t in model.state_dict().values())


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    files.atomic_write_bytes(Path(path), payload)


def _encode(sidecar: dict) -> bytes:
    return (json.dumps({**sidecar, "recipe_sha256": recipe_sha256(sidecar)}, indent=1) + "\n").encode()


def finish_interrupted_save(stem: str | os.PathLike) -> None:
    """Complete a save that was killed after its commit, and remove the temporary files it left.

    It rolls forward only a commit that checks out: a valid sidecar naming a staged file of a writer that
    has exited, whose size and SHA-256 are the ones that sidecar records. Anything else is left alone.
    """
    weights_path, sidecar_path = paths(stem)
    try:
        sidecar = check_sidecar(json.loads(files.read_bounded(sidecar_path, MAX_SIDECAR_BYTES, "a sidecar")),
                                sidecar_path)
        staged = weights_path.parent / sidecar["weights_file"]
        bound = max_weights_bytes(models.build(sidecar["kind"], sidecar["latent_dim"], sidecar["activation"],
                                               **sidecar.get("options", {})), sidecar["dtype"])
        verified = (staged != weights_path and files.writer_pid(staged) is not None and staged.is_file()
                    and not files.is_running(files.writer_pid(staged))
                    and files.read_verified(staged, sidecar["weights_sha256"], bound) is not None)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, RecursionError):
        verified = False
    if verified:
        os.replace(staged, weights_path)  # the commit happened: roll forward
        files.atomic_write_bytes(sidecar_path, _encode({**sidecar, "weights_file": weights_path.name}))
    files.remove_stale(weights_path.parent, weights_path.name)
    files.remove_stale(weights_path.parent, sidecar_path.name)


def save(stem: str | os.PathLike, model: nn.Module, config: dict, history: list | None = None,
         metrics: dict | None = None, dtype: torch.dtype = torch.float16, overwrite: bool = True) -> Path:
    """Save `model` with its config (CONFIG_KEYS), training history and test metrics.

    With `overwrite=False` an existing checkpoint at `stem` is never replaced: FileExistsError, decided
    by an exclusive create at the moment of the commit (so two runs racing for one name cannot both win).
    Before anything is written, the checkpoint is checked to load as `model`: a config that does not
    describe it, or weights that are not finite in `dtype`, are refused (ValueError) and nothing changes.
    """
    weights_path, sidecar_path = paths(stem)
    checks.check_flag("overwrite", overwrite)
    checks.check_model("model", model)
    config = checks.check_mapping("config", config)
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"config lacks {missing}: a checkpoint needs all of {list(CONFIG_KEYS)}")
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be one of torch.{', torch.'.join(DTYPES)}, got {dtype!r}")
    if not isinstance(history or [], list) or not isinstance(metrics or {}, dict):
        raise ValueError("history must be a list (one dict per epoch) and metrics a dict")
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
    _check_loadable(sidecar, model, tensors)  # before the folder is touched
    if overwrite:  # only a checkpoint that vaelib wrote is replaced, never a user's notes.json
        checks.check_replaceable_checkpoint(weights_path, sidecar_path, overwrite)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    finish_interrupted_save(stem)
    if not overwrite and (weights_path.exists() or weights_path.is_symlink()):
        raise FileExistsError(f"{weights_path} already exists: choose another name, or allow overwriting")
    staged = files.write_temporary(weights_path, payload)
    sidecar["weights_file"] = staged.name
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


def _check_loadable(sidecar: dict, model: nn.Module, tensors: dict) -> None:
    """ValueError unless `load` would give back `model` from this sidecar and these stored tensors."""
    try:
        _check_fields(json.loads(json.dumps(sidecar)))  # as it will read back: JSON types, NaN included
        built = models.build(sidecar["kind"], sidecar["latent_dim"], sidecar["activation"], **sidecar.get("options", {}))
    except (ValueError, TypeError, RecursionError) as error:
        raise ValueError(f"this checkpoint could never load: its config is wrong ({str(error)[:160]}); "
                         f"nothing was written") from None
    if not isinstance(model, type(built)):
        raise ValueError(f"config says kind={sidecar['kind']!r} (a {type(built).__name__}), but the model is a "
                         f"{type(model).__name__}: give the model's own kind; nothing was written")
    if _structure(built) != _structure(model):  # an activation or a ReLU on the code, which hold no weights
        raise ValueError(f"config (activation={sidecar['activation']!r}, options={sidecar.get('options', {})}) builds "
                         f"another network than the model's: give the settings it was built with; nothing was written")
    try:
        built.load_state_dict({name: t.float() for name, t in tensors.items()}, strict=True)
    except RuntimeError as error:
        raise ValueError(f"the model's weights do not fit its config ({' '.join(str(error).split())[:160]}): "
                         f"give the config it was built with; nothing was written") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{name} holds NaN or infinite values as {sidecar['dtype']} (its largest magnitude "
                             f"is {model.state_dict()[name].abs().max().item():g}): such a checkpoint never loads; "
                             f"save a finite model, or use dtype=torch.float32; nothing was written")


def _structure(model: nn.Module) -> tuple:
    """The layers' types in order (a fast transposed conv counts as a plain one: the same function) and the
    settings without weights."""
    layers = [type(m).__name__.removeprefix("Fast") for m in model.modules()]
    return layers, getattr(model, "bottleneck_relu", None), getattr(model, "num_classes", None)


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
        payload = files.read_bounded(sidecar_path, MAX_SIDECAR_BYTES, "a sidecar")
    except ValueError as error:  # gigabytes: damaged, and never read whole
        raise CheckpointError(f"{error}; or retrain it") from None
    except OSError as error:
        raise CheckpointError(f"cannot read {sidecar_path} ({error.strerror}): check its permissions") from error
    try:
        sidecar = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # ValueError: JSON, or a huge integer
        raise CheckpointError(f"{sidecar_path} is not valid JSON ({str(error)[:80]}): the sidecar is "
                              f"damaged; retrain it or restore it with git checkout") from error
    return check_sidecar(sidecar, sidecar_path)


def _weights_payload(weights_path: Path, sidecar: dict, sidecar_path: Path, max_bytes: int) -> bytes:
    """The weights' bytes whose SHA-256 the sidecar records: at the file it names, else at its own name.

    A file larger than `max_bytes` (what the model's tensors can take) is refused before it is read.
    """
    candidates = [weights_path.parent / sidecar["weights_file"], weights_path]
    found = [path for path in dict.fromkeys(candidates) if path.is_file()]
    if not found:
        raise CheckpointError(f"{weights_path} is missing, though {sidecar_path.name} describes it")
    for path in found:
        try:
            payload = files.read_verified(path, sidecar["weights_sha256"], max_bytes)
        except OSError as error:
            raise CheckpointError(f"cannot read {path} ({error.strerror or error}): check its permissions") from None
        if payload is not None:
            return payload
    size = weights_path.stat().st_size if weights_path.is_file() else 0
    reason = (f"it holds {size} bytes, more than the {max_bytes} bytes that this model's weights take" if size > max_bytes
              else f"its SHA-256 is not the {sidecar['weights_sha256'][:16]}... that {sidecar_path.name} records")
    raise CheckpointError(
        f"{weights_path} is damaged or was replaced: {reason}. Retrain it with `python -m vaelib train "
        f"{weights_path.stem}` (or restore it with git checkout).")


def load(stem: str | os.PathLike, expected: dict | None = None, device: str | torch.device = "cpu",
         ) -> tuple[nn.Module, dict]:
    """Load a checkpoint after checking the weights' SHA-256, the config and every tensor's shape.

    `expected` maps config keys to the values the caller needs; any difference is refused.
    Returns the model in eval mode (float32) and its sidecar.
    """
    weights_path, sidecar_path = paths(stem)
    expected = checks.check_mapping("expected", expected)
    device = resolve_device(device)
    deadline = time.monotonic() + 10
    while True:  # a save that runs meanwhile may pair an old sidecar with new weights: read both again
        before = files.fingerprint(sidecar_path, weights_path)
        try:
            model, sidecar, tensors = _read(weights_path, sidecar_path, expected)
            break
        except CheckpointError:
            if files.fingerprint(sidecar_path, weights_path) == before or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    return model.to(device).eval(), sidecar


def _read(weights_path: Path, sidecar_path: Path, expected: dict) -> tuple[nn.Module, dict, dict]:
    """One attempt of `load`: the checked model (on the CPU), its sidecar, and the stored tensors."""
    sidecar = read_sidecar(sidecar_path)
    try:
        model = models.build(sidecar["kind"], sidecar["latent_dim"], sidecar.get("activation", "relu"),
                             **sidecar.get("options", {}))
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(f"{weights_path} does not fit its config: {' '.join(str(error).split())[:200]}") from error
    payload = _weights_payload(weights_path, sidecar, sidecar_path, max_weights_bytes(model, sidecar["dtype"]))
    for key, value in expected.items():
        if sidecar.get(key) != value:
            raise CheckpointError(f"{weights_path.name} has {key}={sidecar.get(key)!r}, expected {value!r}")
    try:
        tensors = safetensors.torch.load(payload)
        model.load_state_dict({name: t.float() for name, t in tensors.items()}, strict=True)
    except (KeyError, RuntimeError, ValueError, TypeError, safetensors.SafetensorError) as error:
        raise CheckpointError(f"{weights_path} does not fit its config: {' '.join(str(error).split())[:200]}") from error
    stored = DTYPES[sidecar["dtype"]]
    for name, tensor in tensors.items():
        if tensor.dtype != stored:
            raise CheckpointError(f"{weights_path} stores {name} as {str(tensor.dtype)[6:]}, but its sidecar "
                                  f"says {sidecar['dtype']}: the weights are not the ones saved; retrain it")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{weights_path} holds NaN or infinite values in {name}: retrain it")
    return model, sidecar, tensors


def seal(stem: str | os.PathLike) -> Path:
    """Record the SHA-256 of a sidecar written before vaelib checked it (only for a sidecar you trust)."""
    _, sidecar_path = paths(stem)
    return write_sidecar(stem, json.loads(files.read_bounded(sidecar_path, MAX_SIDECAR_BYTES, "a sidecar")))
