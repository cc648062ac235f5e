"""The course's trained models by name, each with its recipe, and `load_or_train`.

A chapter asks for a model by name: the shipped checkpoint is loaded when it is there and valid,
otherwise the model is trained with its recipe and saved (the pattern of the UvA deep learning
tutorials). Introduced in: 02_autoencoder
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoints, checks, data, files, grid, losses, models, train

EXACT_IMAGES = 1000  # test images for the exact -log p(x) of a 2-D model (a grid: about a minute each on 2 cores)
from .device import check_mixed_precision

# Recipe settings that a config records only where a recipe sets them, and that a checkpoint must match
# (a sidecar without one has its default: grey-level MNIST, a constant learning rate, the plain loss).
PINNED_SETTINGS = ("binarized", "final_lr", "dataset", "warmup_epochs", "free_bits")


@dataclass(frozen=True)
class Recipe:
    kind: str  # 'autoencoder', 'vae', 'conv_vae' or 'cvae' (trained with the digit labels)
    latent_dim: int
    beta: float
    epochs: int = 20  # the original's
    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    activation: str = "relu"  # of the encoder
    mixed_precision: bool | str = False  # "auto": bfloat16 forward passes where faster here (device.py)
    iw_images: int = 10_000  # test images for the importance-weighted bound (k = 1000)
    description: str = ""
    bottleneck_relu: bool = True  # the autoencoder only: the original's ReLU on the code
    binarized: bool = False  # trained on dynamically binarized MNIST, scored on the test set binarized once
    iw_k: int = 1000  # importance samples of the IW bound in the test metrics
    hidden_dim: int = 400  # the MLP VAE's hidden width
    hidden_layers: int = 1  # the MLP VAE's hidden layers per side
    final_lr: float | None = None  # the learning rate decays exponentially to this by the last epoch
    dataset: str = "mnist"  # trained and scored on this dataset's images (data.DATASETS): 12_collection
    warmup_epochs: int = 0  # KL warm-up: beta rises from 0 over this many epochs (10)
    free_bits: float = 0.0  # nats per latent dimension that the KL term leaves free (10)

    def config(self) -> dict:
        config = {key: getattr(self, key) for key in checkpoints.CONFIG_KEYS}
        extras = {key: getattr(self, key) for key in PINNED_SETTINGS
                  if getattr(self, key) != getattr(Recipe, key)}  # only when set: older recipes keep their hash
        return {**config, "options": self.options(), **extras}

    def expected(self) -> dict:
        """What a checkpoint of this recipe must record: its config, and no dataset, binarization, learning-rate
        decay, warm-up or free bits other than its own (a sidecar without the key has none: grey-level MNIST,
        a constant rate, the plain loss). Introduced in: 12_collection"""
        config = self.config()
        return {**config, **{key: config.get(key) for key in PINNED_SETTINGS}}

    def options(self) -> dict:
        """Model options beyond kind, size and activation (the MLP VAE's only where not the default)."""
        if self.kind == "autoencoder":
            return {"bottleneck_relu": self.bottleneck_relu}
        if self.kind == "vae":
            return {key: getattr(self, key) for key in ("hidden_dim", "hidden_layers")
                    if getattr(self, key) != getattr(Recipe, key)}
        return {}


CONV = dict(kind="conv_vae", mixed_precision="auto", iw_images=500)
REGISTRY = {
    "autoencoder-l2": Recipe("autoencoder", 2, 0.0, seed=2, description="autoencoder, ReLU on the code (02)"),
    "autoencoder-l2-linear": Recipe("autoencoder", 2, 0.0, bottleneck_relu=False,
                                    description="autoencoder, linear code (02)"),
    "vae-l2-b0": Recipe("vae", 2, 0.0, description="MLP VAE, beta = 0 (04)"),
    "vae-l2-b1": Recipe("vae", 2, 1.0, seed=1, description="MLP VAE, the original's model (03, 05)"),
    "vae-l2-b4": Recipe("vae", 2, 4.0, seed=4, description="MLP VAE, beta = 4 (04)"),
    "vae-l2-b1-tanh": Recipe("vae", 2, 1.0, seed=1, activation="tanh", description="MLP VAE, tanh encoder (08)"),
    "convvae-l2-b1": Recipe(latent_dim=2, beta=1.0, description="conv VAE (06)", **CONV),
    "convvae-l10-b1": Recipe(latent_dim=10, beta=1.0, description="conv VAE, L = 10 (07)", **CONV),
    "convvae-l10-b4": Recipe(latent_dim=10, beta=4.0, description="conv VAE, L = 10, beta = 4 (07)", **CONV),
    "vae-l20-b1": Recipe("vae", 20, 1.0, epochs=10, description="the pytorch/examples recipe"),
    "cvae-l2-b1": Recipe("cvae", 2, 1.0, seed=2, iw_images=1000,
                         description="conditional MLP VAE, told the digit (11)"),
    "vae-l50-bin": Recipe("vae", 50, 1.0, epochs=200, batch_size=100, hidden_dim=512, hidden_layers=2, final_lr=1e-4,
                          binarized=True, iw_k=5000, iw_images=2000,
                          description="MLP VAE on binarized MNIST, a true likelihood (09)"),
    "vae-fashion-l2-b1": Recipe("vae", 2, 1.0, seed=0, iw_images=1000, dataset="fashion-mnist",
                                description="MLP VAE on Fashion-MNIST (12)"),
    "vae-l32-b2": Recipe("vae", 32, 2.0, epochs=10, iw_images=1000,
                         description="MLP VAE, L = 32, beta = 2: unused units (10)"),
    "vae-l32-b2-warmup": Recipe("vae", 32, 2.0, epochs=10, seed=4, iw_images=1000, warmup_epochs=5,
                                description="the same, beta warmed up from 0 over 5 of its 10 epochs (10)"),
    "vae-l32-b2-freebits": Recipe("vae", 32, 2.0, epochs=10, iw_images=1000, free_bits=0.25,
                                  description="the same, 0.25 free nats per latent dimension (10)"),
}


def recipe(name: str) -> Recipe:
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown model name {name!r}: choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def name_of(stem) -> str | None:
    """The registry name whose shipped checkpoint `stem` names, however it is spelled (`vae-l2-b1`,
    `vae-l2-b1.json`, `checkpoints/vae-l2-b1`), else None: such a checkpoint must be its recipe's."""
    weights, _ = checkpoints.paths(stem)
    name = weights.name.removesuffix(".safetensors")
    shipped = checkpoints.paths(name)[0] if name in REGISTRY else None
    return name if shipped is not None and weights.resolve() == shipped.resolve() else None


def custom_recipe(kind: str = "vae", latent_dim: int = 2, beta: float = 1.0, epochs: int = 20, seed: int = 0,
                  batch_size: int = 128, lr: float = 1e-3, activation: str = "relu",
                  mixed_precision: bool | str = False) -> Recipe:
    """A recipe from loose settings, every one of them checked."""
    if not isinstance(kind, str) or kind not in models.MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}: choose one of {sorted(models.MODEL_KINDS)}")
    models.check_latent_dim(latent_dim)
    train.check_positive_int("epochs", epochs, minimum=0)
    train.check_positive_int("batch_size", batch_size)
    train.check_learning_rate(lr)
    checks.check_seed(seed)
    check_mixed_precision(mixed_precision)
    models.activation_layer(activation)
    return Recipe(kind, latent_dim, losses.check_beta(beta), epochs, seed, batch_size, float(lr), activation,
                  mixed_precision)


def test_metrics(model: nn.Module, test_x: torch.Tensor, iw_images: int = 10_000, k: int = 1000,
                 progress: bool = False, labels: torch.Tensor | None = None) -> dict:
    """Negative ELBO (beta = 1) and its parts, the importance-weighted bound, and active units.

    All per image, in nats. The IW bound uses k samples on the first `iw_images` test images; the
    negative ELBO on those same images is given beside it for comparison. A model with a 2-D code also
    gets its exact -log p(x) (`train.log_likelihood_grid`) on the first `EXACT_IMAGES` of those, with
    both bounds on the same images beside it. A conditional VAE needs the
    test `labels` (N,); its numbers then bound -log p(x | y).
    """
    checks.check_model("model", model), checks.check_images("test_x", test_x), checks.check_flag("progress", progress)
    checks.check_positive_int("iw_images", iw_images), checks.check_positive_int("k", k, maximum=train.MAX_K)
    metrics = train.evaluate(model, test_x, beta=1.0, labels=labels)
    result = {"neg_elbo": metrics["loss"], "reconstruction": metrics["reconstruction"], "kl": metrics["kl"]}
    if isinstance(model, models.Autoencoder):
        return {**result, **code_collapse(model, test_x)}
    checks.check_positive_int("iw_images", iw_images)
    subset = test_x[:iw_images]
    subset_labels = None if labels is None else labels[:iw_images]
    bound = train.importance_weighted_bound(model, subset, k=k, progress=progress, labels=subset_labels)
    result.update({
        "iw_nll": -bound.mean().item(), "iw_k": k, "iw_images": len(subset),
        "neg_elbo_iw_images": train.evaluate(model, subset, beta=1.0, labels=subset_labels)["loss"],
        "active_units": train.active_units(model, test_x, labels=labels)[0],
    })
    if grid.has_exact_likelihood(model):  # a 2-D code: the truth the two bounds are read against
        n = min(EXACT_IMAGES, len(subset))
        exact_labels = None if labels is None else labels[:n]
        result.update({
            "exact_nll": -train.log_likelihood_grid(model, test_x[:n], labels=exact_labels).mean().item(),
            "exact_images": n, "iw_nll_exact_images": -bound[:n].mean().item(),
            "neg_elbo_exact_images": train.evaluate(model, test_x[:n], beta=1.0, labels=exact_labels)["loss"],
        })
    return result


@torch.no_grad()
def code_collapse(model: nn.Module, test_x: torch.Tensor) -> dict:
    """How much of an autoencoder's code a ReLU on it has switched off, on `test_x`.

    `dead_units`: code coordinates that are 0 for every image; `clipped_share`: the share of images with at
    least one coordinate clipped to 0 (chapter 2).
    """
    codes, _ = train.encode_dataset(model, test_x)  # (N, L)
    zero = codes == 0
    return {"dead_units": int(zero.all(dim=0).sum()), "clipped_share": zero.any(dim=1).float().mean().item()}


def test_images(binarized: bool = False, dataset: str = "mnist") -> torch.Tensor:
    """The test images (10000, 784) of `dataset` (MNIST unless told): grey levels, or drawn once as
    binary pixels (seed 0)."""
    checks.check_flag("binarized", binarized)
    test_x, _ = data.load_mnist("test", dataset=dataset)
    return data.binarize(test_x, seed=0) if binarized else test_x


def dataset_of(record: dict) -> str:
    """The dataset a checkpoint's sidecar (or a recipe's config) was trained on: MNIST unless it says.

    Introduced in: 12_collection
    """
    dataset = record.get("dataset", "mnist")
    data._dataset_info(dataset)  # an unknown name: ValueError naming the known ones
    return dataset


def train_recipe(spec: Recipe, train_subset: int | None = None, device=None, progress: bool = True,
                 compute_metrics: bool = True, iw_k: int | None = None) -> tuple[nn.Module, list, dict]:
    """Build and train a model from `spec` on its dataset; returns (model, history, test metrics).

    A conditional recipe ('cvae') trains with the training labels and is scored with the test labels.
    """
    checks.check_flag("progress", progress), checks.check_flag("compute_metrics", compute_metrics)
    train_x, train_y = data.load_mnist("train", dataset=spec.dataset)
    test_x = test_images(spec.binarized, spec.dataset)
    if train_subset is not None:
        train.check_positive_int("train_subset", train_subset)
        if train_subset > len(train_x):
            raise ValueError(f"train_subset must be at most {len(train_x)}, the number of training images, "
                             f"got {train_subset} (None trains on all of them)")
        train_x, train_y = train_x[:train_subset], train_y[:train_subset]
    # A quick run on N training images also scores each epoch on the first N test images (the rows say
    # how many, as `test_images`): on a CPU, scoring all 10,000 would cost more than the training.
    epoch_test_x = test_x if train_subset is None else test_x[:train_subset]
    torch.manual_seed(spec.seed)
    model = models.build(spec.kind, spec.latent_dim, spec.activation, **spec.options())
    conditional = models.is_conditional(model)
    test_y = data.load_mnist("test", dataset=spec.dataset)[1] if conditional else None  # (N,) digits
    labels = dict(labels=train_y, test_labels=test_y[: len(epoch_test_x)]) if conditional else {}
    history = train.fit(model, train_x, epoch_test_x, epochs=spec.epochs, beta=spec.beta, lr=spec.lr,
                        batch_size=spec.batch_size, seed=spec.seed, device=device,
                        mixed_precision=spec.mixed_precision, progress=progress, binarize=spec.binarized,
                        final_lr=spec.final_lr, warmup_epochs=spec.warmup_epochs, free_bits=spec.free_bits,
                        **labels)
    model.eval()
    if not compute_metrics:
        return model, history, {}
    test_labels = test_y if conditional else None
    neg_elbo_fp32 = train.evaluate(model, test_x, labels=test_labels)["loss"]
    round_to_float16(model)  # the metrics describe the weights as they are stored
    metrics = test_metrics(model, test_x, spec.iw_images, spec.iw_k if iw_k is None else iw_k, progress, test_labels)
    metrics["neg_elbo_fp32"] = neg_elbo_fp32
    return model, history, metrics


@torch.no_grad()
def round_to_float16(model: nn.Module) -> None:
    """Round every parameter to float16 and back, as a float16 checkpoint stores it."""
    for tensor in model.state_dict().values():
        tensor.copy_(tensor.half().float())


def status(name: str, directory: Path | None = None) -> str:
    """'valid', 'missing' or 'invalid: <why>' for a registry model's checkpoint."""
    recipe(name)
    directory = None if directory is None else checks.check_path("directory", directory)
    stem = (directory or checkpoints.CHECKPOINT_DIR) / name
    weights, sidecar = checkpoints.paths(stem)
    if not weights.exists() and not sidecar.exists():
        return "missing"
    try:
        checkpoints.load(stem, expected=recipe(name).expected())
    except checkpoints.CheckpointError as error:
        return f"invalid: {error}"
    return "valid"


TRAINED_ON = "2 cores of an AMD EPYC (Zen 4) CPU"  # where the shipped checkpoints were trained and timed


def shipped_history(name: str, directory: Path | None = None) -> list[dict]:
    """The per-epoch history of the shipped checkpoint of `name` (its sidecar's), or [] without one."""
    recipe(name)  # an unknown name: the registry's error
    _, sidecar = checkpoints.paths((directory or checkpoints.CHECKPOINT_DIR) / name)
    try:
        history = json.loads(sidecar.read_text()).get("history")
    except (OSError, ValueError, AttributeError):
        return []
    return history if isinstance(history, list) and all(isinstance(row, dict) for row in history) else []


def expected_wait(name: str, epochs: int | None = None, train_subset: int | None = None,
                  directory: Path | None = None) -> str:
    """One line for a learner about to wait: how long the shipped checkpoint of `name` took to train on
    TRAINED_ON (shared with other work), scaled to `epochs` and `train_subset`. Introduced in: 02_autoencoder"""
    spec = recipe(name)
    history = shipped_history(name, directory)
    seconds = sum(float(row.get("seconds") or 0) for row in history)
    if not seconds:
        return f"training {name}: no shipped timing to go by; the progress bar shows the epochs as they pass"
    epochs = epochs or spec.epochs
    expected = seconds * epochs / len(history) * min(train_subset or 60_000, 60_000) / 60_000
    said = (f"about {expected / 60:.0f} min" if expected >= 90 else f"about {expected:.0f} s" if expected >= 10
            else "a few seconds")
    return (f"training {name} ({epochs} epochs{f', {train_subset:,} images' if train_subset else ''}): "
            f"expect {said} on {TRAINED_ON}, as the shipped checkpoint's training took "
            f"{seconds / 60:.1f} min for its {len(history)} epochs; the bar below shows the progress")


def load_or_train(name: str, retrain: bool = False, train_subset: int | None = None, epochs: int | None = None,
                  device=None, directory: Path | None = None, progress: bool = True, **overrides) -> nn.Module:
    """The registry model `name`: loaded from its checkpoint, or trained with its recipe and saved.

    - No checkpoint yet: train with the recipe, save it, return it.
    - A valid checkpoint: load it (fast: this is what the book does).
    - A damaged or mismatched checkpoint: `CheckpointError`; it is never used, nor overwritten, quietly.
    - `retrain=True`, or any change to the recipe (`epochs`, `train_subset`, `beta`, ...): train a fresh
      model and return it without touching the shipped checkpoint.
    The model comes back in eval mode with its sidecar-like record as `model.record`.

    Introduced in: 02_autoencoder
    """
    spec = recipe(name)
    train.check_flag("retrain", retrain)
    train.check_flag("progress", progress)
    directory = None if directory is None else checks.check_path("directory", directory)
    settable = [f.name for f in dataclasses.fields(Recipe)
                if f.name not in ("kind", "description", "iw_images", "iw_k", "dataset")]
    unknown = [key for key in overrides if key not in settable]
    if unknown:
        raise ValueError(f"load_or_train has no setting {unknown[0]!r}: choose from {', '.join(settable)}")
    changes = {key: value for key, value in dict(overrides, epochs=epochs).items()
               if value is not None and value != getattr(spec, key)}
    if changes:
        spec = dataclasses.replace(spec, **changes)
        custom_recipe(**{key: getattr(spec, key) for key in ("kind", "latent_dim", "beta", "epochs", "seed",
                                                            "batch_size", "lr", "activation")})
        checks.check_warmup_epochs(spec.warmup_epochs)
        checks.check_free_bits(spec.free_bits)
    if device is not None:
        device = train.resolve_device(device)  # 'cuda' on a machine without one: a clear error, not torch's
    stem = (directory or checkpoints.CHECKPOINT_DIR) / name
    weights, sidecar = checkpoints.paths(stem)
    exact = not changes and train_subset is None
    if exact and not retrain and (weights.exists() or sidecar.exists()):
        model, record = checkpoints.load(stem, expected=spec.expected(), device=device or "cpu")
        model.record = record
        return model
    save = exact and not retrain  # only the recipe itself becomes the shipped checkpoint
    if save:
        files.check_writable_folder(stem.parent, "the checkpoints")  # before training, not after
    if progress:
        print(expected_wait(name, spec.epochs, train_subset, directory), flush=True)
    model, history, metrics = train_recipe(spec, train_subset, device, progress, compute_metrics=save)
    if save:
        save_trained(stem, spec, model, history, metrics)
    model.record = {**spec.config(), "mixed_precision": spec.mixed_precision,
                    "precision": trained_precision(history), "train_subset": train_subset,
                    "history": history, "metrics": metrics}
    return model.eval()


def trained_precision(history: list, mixed_precision=False) -> str:
    """The precision that trained the model ('float32', 'bfloat16', ...), from its history.

    A checkpoint saved before the history recorded it: bfloat16 if its `mixed_precision` was True (all
    that True could mean then), else float32.
    """
    if history and "precision" in history[-1]:
        return history[-1]["precision"]
    return "bfloat16" if mixed_precision is True else "float32"


def save_trained(stem: str | Path, spec: Recipe, model: nn.Module, history: list, metrics: dict,
                 overwrite: bool = True) -> Path:
    """Save a model trained with `spec`, its recipe and the data's checksums in the sidecar.

    When the save fails (a full disk, a folder made read-only, a checkpoint that another run saved at
    `stem` meanwhile), the trained model is kept under another name and `SaveFailed` says where.
    """
    checks.check_flag("overwrite", overwrite)
    config = {**spec.config(), "mixed_precision": spec.mixed_precision, "precision": trained_precision(history),
              "data_sha256": data.DATASETS[spec.dataset].sha256}
    try:
        if overwrite:  # a file that vaelib did not write, put there while this model trained: kept
            try:
                checks.check_replaceable_checkpoint(*checkpoints.paths(stem), overwrite)
            except ValueError as refusal:
                raise FileExistsError(str(refusal)) from None
        return checkpoints.save(stem, model, config, history, metrics, overwrite=overwrite)
    except OSError as error:
        reason = (f"{checkpoints.paths(stem)[0]} appeared while this model trained" if isinstance(error, FileExistsError)
                  and not overwrite else str(error) if isinstance(error, FileExistsError)
                  else f"could not save to {checkpoints.paths(stem)[0]} ({error.strerror or error})")
        for folder in (Path.cwd(), Path(tempfile.gettempdir())):
            kept = folder / f"{Path(stem).name}.rescued-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            try:
                checkpoints.save(kept, model, config, history, metrics, overwrite=False)
            except OSError:
                continue
            raise checkpoints.SaveFailed(f"{reason}: the trained model is kept at {checkpoints.paths(kept)[0]} "
                                         f"(and its .json): move both where you want them") from error
        raise checkpoints.SaveFailed(f"{reason}, nor anywhere else: the trained model is lost; free some "
                                     f"space and train again") from error


def retrain_and_save(name: str, directory: Path | None = None, device=None, progress: bool = True) -> Path:
    """Train `name` with its recipe and replace its checkpoint, atomically, only once training succeeded."""
    spec = recipe(name)
    checks.check_flag("progress", progress)
    directory = None if directory is None else checks.check_path("directory", directory)
    directory = files.check_writable_folder(directory or checkpoints.CHECKPOINT_DIR, "the checkpoints")
    checks.check_replaceable_checkpoint(*checkpoints.paths(directory / name), True)  # before training
    model, history, metrics = train_recipe(spec, device=device, progress=progress)
    return save_trained(directory / name, spec, model, history, metrics)
