"""Export what the book's in-browser explorers need, as JavaScript files of data.

    python -m vaelib export-web book/web/explorer/models.js [--overwrite]

writes the small index `models.js` (which models exist, their sizes, the plotting range of each map,
the test labels) and, under `weights/` beside it, one file per model that the page loads only when a
reader opens that model:

- the MLP models with L = 2 (VAEs with beta = 0, 1, 4 and the autoencoder with a linear code): encoder
  and decoder weights, and the latent means of the 10,000 test images for the map;
- the conv VAEs with L = 10 (beta = 1, 4): the decoder only (5.4 million parameters), which the page
  runs itself, so that the ten sliders combine freely;
- `mnist-test.js`: the test images, run-length coded (most pixels are 0), for clicking a dot.

Weights travel exactly as the float16 checkpoints store them (base64 of little-endian halves), so the
browser computes what PyTorch computes; means travel as float32. Each weight file calls
`window.vaeExplorerLoaded(name, payload)`: a script tag, unlike fetch(), also works from file://.
Introduced in: the book's explorer page.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch

from . import checkpoints, checks, data, files, models, registry, train

MAP_MODELS = {  # registry name -> the label of its button
    "vae-l2-b0": "beta = 0", "vae-l2-b1": "beta = 1", "vae-l2-b4": "beta = 4",
    "autoencoder-l2-linear": "autoencoder (linear code)",
}
SLIDER_MODELS = {"convvae-l10-b1": "beta = 1", "convvae-l10-b4": "beta = 4"}
INDEX_START = b"window.VAE_EXPLORER_DATA = "  # how the files that `export` writes begin: only those are replaced
WEIGHTS_START = b"window.vaeExplorerLoaded("


def _load(name: str):
    """The registry model `name`, refused unless its checkpoint is valid and is that recipe's (not a copy of another)."""
    return checkpoints.load(name, expected=registry.recipe(name).expected())


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _halves(tensor: torch.Tensor) -> str:
    """A float16 checkpoint tensor, widened to float32 on load, back to its exact float16 bits."""
    return _b64(tensor.detach().half().numpy().astype("<f2"))


def _linear(layer: torch.nn.Linear) -> dict:
    return {"out": layer.out_features, "in": layer.in_features,
            "weight": _halves(layer.weight), "bias": _halves(layer.bias)}  # (out, in) row-major, (out,)


def map_range(mu: torch.Tensor) -> float:
    """Half the side of a square map, centred on 0, that holds 99.5% of the means on both axes."""
    reach = torch.quantile(mu.abs().flatten(), 0.995).item()
    return float(max(3.0, np.ceil(reach * 1.15)))


def map_model(name: str, test_x: torch.Tensor) -> tuple[dict, dict]:
    """(index entry, payload) of an MLP model with L = 2: encoder, decoder and test means."""
    model, _ = _load(name)  # refuses a damaged or mismatched checkpoint
    mu, _ = train.encode_dataset(model, test_x)  # (N, 2)
    variational = isinstance(model, models.VAE)
    encoder = {"hidden": _linear(model.encoder[0]),
               "mu": _linear(model.to_mu if variational else model.encoder[2]),
               "logvar": _linear(model.to_logvar) if variational else None,
               "activation": type(model.encoder[1]).__name__.lower(),  # 'relu' or 'tanh'
               "code_relu": bool(getattr(model, "bottleneck_relu", False))}
    payload = {"kind": "mlp", "encoder": encoder, "decoder": [_linear(model.decoder[0]), _linear(model.decoder[2])],
               "means": _b64(mu.numpy().astype("<f4"))}
    entry = {"kind": "mlp", "label": MAP_MODELS[name], "latent_dim": model.latent_dim,
             "variational": variational, "range": map_range(mu)}
    return entry, payload


def slider_model(name: str) -> tuple[dict, dict]:
    """(index entry, payload) of a conv VAE's decoder, every layer in PyTorch's own layout."""
    model, _ = _load(name)
    deconvs = [model.decoder[0], model.decoder[2], model.decoder[4]]
    payload = {"kind": "conv", "input": _linear(model.decoder_input),
               "deconv": [{"in": d.in_channels, "out": d.out_channels, "kernel": d.kernel_size[0],
                           "stride": d.stride[0], "weight": _halves(d.weight), "bias": _halves(d.bias)}
                          for d in deconvs]}  # weight (C_in, C_out, k, k)
    parameters = sum(p.numel() for p in [model.decoder_input.weight, model.decoder_input.bias]) + sum(
        d.weight.numel() + d.bias.numel() for d in deconvs)
    entry = {"kind": "conv", "label": SLIDER_MODELS[name], "latent_dim": model.latent_dim,
             "parameters": parameters, "megabytes": round(2 * parameters / 1e6, 1)}
    return entry, payload


def run_length(images: torch.Tensor) -> bytes:
    """Bytes 1..255 are pixels; a 0 byte is followed by how many zero pixels (1..255) come next."""
    pixels = (images * 255).round().to(torch.uint8).numpy().ravel()  # MNIST's own bytes
    edges = np.flatnonzero(np.diff(np.r_[0, (pixels == 0).astype(np.int8), 0]))
    out, done = bytearray(), 0
    for start, end in zip(edges[0::2], edges[1::2]):  # each run of zeros [start, end)
        out += pixels[done:start].tobytes()
        for chunk in range(start, end, 255):
            out += bytes((0, min(255, end - chunk)))
        done = end
    out += pixels[done:].tobytes()
    return bytes(out)


def _script(name: str, payload: dict) -> bytes:
    return f"window.vaeExplorerLoaded({json.dumps(name)}, {json.dumps(payload)});\n".encode()


def export(path: str | Path, overwrite: bool = False) -> Path:
    """Write the index `path` and the files under `weights/` beside it; returns `path`.

    An existing file is replaced only with `overwrite=True`, and only if `export` wrote it (it begins
    as these files do): any other file there is never touched. Everything is checked before any work.
    """
    path = checks.check_path("path", path)
    checks.check_flag("overwrite", overwrite)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the JavaScript file to write, e.g. {path / 'models.js'}")
    folder = path.parent / "weights"
    targets = {path: INDEX_START, **{folder / f"{name}.js": WEIGHTS_START
                                     for name in [*MAP_MODELS, *SLIDER_MODELS, "mnist-test"]}}
    for parent in path.parents:  # a file where a folder must be: named as such, before anything is made
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ValueError(f"{parent} is a file, not a folder: choose another place for the exported file")
            break
    for target, signature in targets.items():
        checks.check_replaceable(target, overwrite, signature, "the exported files")
    for name in [*MAP_MODELS, *SLIDER_MODELS]:  # every checkpoint is valid and its recipe's, before any work
        _load(name)
    test_x, test_y = data.load_mnist("test")
    files.check_writable_folder(path.parent, "the exported file")  # before the minutes of work below
    files.check_writable_folder(folder, "the exported weights")
    index = {"models": {}, "labels": _b64(test_y.numpy().astype(np.uint8)), "test_count": len(test_y)}
    weight_files = {}
    for name in MAP_MODELS:
        index["models"][name], weight_files[name] = map_model(name, test_x)
    for name in SLIDER_MODELS:
        index["models"][name], weight_files[name] = slider_model(name)
    for name, payload in weight_files.items():
        files.atomic_write_bytes(folder / f"{name}.js", _script(name, payload), overwrite)
    images = {"count": len(test_x), "pixels": _b64(np.frombuffer(run_length(test_x), np.uint8))}
    files.atomic_write_bytes(folder / "mnist-test.js", _script("mnist-test", images), overwrite)
    files.atomic_write_bytes(path, INDEX_START + f"{json.dumps(index)};\n".encode(), overwrite)
    return path
