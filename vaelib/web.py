"""Export what the book's in-browser explorers need, as one JavaScript file of data.

    python -m vaelib export-web book/web/explorer/models.js

- The MLP VAEs with L = 2 (beta = 0, 1, 4): their decoder weights, exactly as stored in the float16
  checkpoints (so the browser decodes what PyTorch decodes), and the latent means of all 10,000 test
  images with their labels, for the scatter plot under the draggable point.
- The conv VAEs with L = 10 (beta = 1, 4): their decoder is 5.5 million parameters and about 24 million
  multiply-adds per image, too heavy for a page and for a 5 ms frame in plain JavaScript. Instead we
  precompute the frames of every traversal (each coordinate over [-3, 3] in 21 steps, the others at 0,
  as in chapter 7), decoded by PyTorch, and the sliders pick frames.

The file sets `window.VAE_EXPLORER_DATA`; arrays travel as base64 (float16 weights, float32 frames).
Introduced in: the book's explorer page.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch

from . import checkpoints, data, files, plots, train

PLANE_MODELS = {"0": "vae-l2-b0", "1": "vae-l2-b1", "4": "vae-l2-b4"}  # beta -> registry name
TRAVERSAL_MODELS = {"1": "convvae-l10-b1", "4": "convvae-l10-b4"}
TRAVERSAL_STEPS = 21
TRAVERSAL_RANGE = (-3.0, 3.0)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def plane_model(name: str, test_x: torch.Tensor, test_y: torch.Tensor) -> dict:
    """An MLP VAE decoder (L -> 400 -> 784) and the test set's latent means.

    The checkpoint stores float16, and loading widens it to float32 exactly, so `.half()` gives back
    the stored weights bit for bit.
    """
    model, _ = checkpoints.load(name)  # refuses a damaged or mismatched checkpoint
    mu, _ = train.encode_dataset(model, test_x, test_y)  # (N, 2)
    layers = []
    for linear in (model.decoder[0], model.decoder[2]):
        weight, bias = linear.weight.detach().half().numpy(), linear.bias.detach().half().numpy()  # (out, in), (out,)
        layers.append({"out": int(weight.shape[0]), "in": int(weight.shape[1]),
                       "weight": _b64(weight.astype("<f2")), "bias": _b64(bias.astype("<f2"))})
    return {"name": name, "latent_dim": model.latent_dim, "layers": layers,
            "means": _b64(mu.numpy().astype("<f2")), "count": len(mu)}


def traversal_model(name: str) -> dict:
    model, _ = checkpoints.load(name)
    low, high = TRAVERSAL_RANGE
    frames = plots.traversals(model, low, high, TRAVERSAL_STEPS)  # (L*steps, 784), float32
    return {"name": name, "latent_dim": model.latent_dim, "steps": TRAVERSAL_STEPS, "low": low, "high": high,
            "frames": _b64(frames.numpy().astype("<f4"))}


def export(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the JavaScript file to write, e.g. {path / 'models.js'}")
    files.check_writable_folder(path.parent, "the exported file")  # before minutes of work
    test_x, test_y = data.load_mnist("test")
    payload = {
        "plane": {beta: plane_model(name, test_x, test_y) for beta, name in PLANE_MODELS.items()},
        "labels": _b64(test_y.numpy().astype(np.uint8)),
        "traversal": {beta: traversal_model(name) for beta, name in TRAVERSAL_MODELS.items()},
    }
    checkpoints.atomic_write_bytes(path, f"window.VAE_EXPLORER_DATA = {json.dumps(payload)};\n".encode())
    return path
