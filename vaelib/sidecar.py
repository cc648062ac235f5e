"""A checkpoint's JSON sidecar: what it must hold, of which types, and its own SHA-256.

The sidecar records `recipe_sha256`, the SHA-256 of everything in it except its metrics (which
`evaluate --save` updates), the name of the weights file (which a save changes in its last step) and
the hash itself; an edit to the recipe (beta, epochs, ...) is then found like damaged weights are.
Introduced in: 02_autoencoder
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from . import checks, models

CONFIG_KEYS = ("kind", "latent_dim", "beta", "activation", "epochs", "seed", "batch_size", "lr")
UNHASHED = ("metrics", "weights_file", "recipe_sha256")
DTYPE_NAMES = ("float16", "bfloat16", "float32")
OPTIONS = {"autoencoder": {"bottleneck_relu": bool, "hidden_dim": int}, "vae": {"hidden_dim": int, "hidden_layers": int},
           "conv_vae": {"fast": bool}, "cvae": {"hidden_dim": int}}  # the constructor options that a sidecar may set, and their types


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, or does not match what was asked for."""


def recipe_sha256(sidecar: dict) -> str:
    covered = {key: value for key, value in sidecar.items() if key not in UNHASHED}
    return hashlib.sha256(json.dumps(covered, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_fields(sidecar) -> None:
    """Raise ValueError naming the first field of the wrong type or value."""
    if not isinstance(sidecar, dict):
        raise ValueError(f"it holds a JSON {type(sidecar).__name__}, not an object")
    required = (*CONFIG_KEYS, "dtype", "weights_file", "weights_sha256")
    missing = [key for key in required if key not in sidecar]
    if missing:
        raise ValueError(f"it lacks {', '.join(missing)}")
    if not isinstance(sidecar["kind"], str) or sidecar["kind"] not in models.MODEL_KINDS:
        raise ValueError(f"kind must be one of {sorted(models.MODEL_KINDS)}, got {sidecar['kind']!r:.60}")
    checks.check_latent_dim(sidecar["latent_dim"])
    checks.check_beta(sidecar["beta"])
    if not isinstance(sidecar["activation"], str) or sidecar["activation"] not in models.ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(models.ACTIVATIONS)}, got {sidecar['activation']!r:.60}")
    checks.check_positive_int("epochs", sidecar["epochs"], minimum=0)
    checks.check_seed(sidecar["seed"])
    checks.check_positive_int("batch_size", sidecar["batch_size"])
    checks.check_learning_rate(sidecar["lr"])
    options = sidecar.get("options", {})
    if not isinstance(options, dict):
        raise ValueError(f"options must be a JSON object, got {options!r:.60}")
    allowed = OPTIONS[sidecar["kind"]]
    for key, value in options.items():
        if key not in allowed or type(value) is not allowed[key]:
            raise ValueError(f"options has {key}={value!r:.40}; a {sidecar['kind']} takes "
                             f"{', '.join(f'{k} ({t.__name__})' for k, t in allowed.items())}")
    if "hidden_dim" in options:
        checks.check_positive_int("hidden_dim", options["hidden_dim"], maximum=checks.MAX_LATENT_DIM)
    if "hidden_layers" in options:
        checks.check_positive_int("hidden_layers", options["hidden_layers"], maximum=checks.MAX_HIDDEN_LAYERS)
    if sidecar["dtype"] not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {sidecar['dtype']!r:.60}")
    name = sidecar["weights_file"]
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"weights_file must be a file name beside the sidecar, got {name!r:.60}")
    if not isinstance(sidecar["weights_sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", sidecar["weights_sha256"]):
        raise ValueError("weights_sha256 must be 64 hexadecimal digits")
    if not isinstance(sidecar.get("history", []), list) or not isinstance(sidecar.get("metrics", {}), dict):
        raise ValueError("history must be a JSON list and metrics a JSON object")
    for key, value in sidecar.get("metrics", {}).items():  # not hashed (evaluate --save updates them), but typed
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"metrics has {key}={value!r:.40}, which must be a number")


def check_sidecar(sidecar, path: Path) -> dict:
    """`sidecar` (parsed from `path`) if it is complete, well typed and unedited; else CheckpointError."""
    try:
        _check_fields(sidecar)
    except ValueError as error:
        raise CheckpointError(f"{path} is not a valid checkpoint sidecar: {error}. Retrain it, or restore it "
                              f"with git checkout") from None
    if "recipe_sha256" not in sidecar:
        raise CheckpointError(f"{path} records no recipe_sha256 (an older vaelib wrote it), so an edit would go "
                              f"unnoticed: if you trust it, run `python -c \"from vaelib import checkpoints; "
                              f"checkpoints.seal('{path}')\"`")
    if sidecar["recipe_sha256"] != recipe_sha256(sidecar):
        raise CheckpointError(f"{path} was edited after it was saved: its recipe no longer matches its "
                              f"recipe_sha256. Undo the edit (git checkout), or retrain the model")
    return sidecar
