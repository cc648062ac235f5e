import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaelib import checkpoints, models, registry, train

CONFIG = {"kind": "vae", "latent_dim": 2, "beta": 1.0, "activation": "relu", "epochs": 1, "seed": 0,
          "batch_size": 128, "lr": 1e-3}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = models.VAE(latent_dim=2)
    stem = tmp_path / "tiny"
    checkpoints.save(stem, model, CONFIG, history=[{"epoch": 1}], metrics={"neg_elbo": 1.0})
    return stem, model


def test_round_trip_in_float16(saved):
    stem, model = saved
    loaded, sidecar = checkpoints.load(stem, expected={"kind": "vae", "latent_dim": 2})
    for (name, original), restored in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(original.half().float(), restored), name
    assert sidecar["dtype"] == "float16" and sidecar["history"] == [{"epoch": 1}]
    assert sidecar["weights_sha256"] == hashlib.sha256(stem.with_suffix(".safetensors").read_bytes()).hexdigest()
    assert not loaded.training


def test_saved_config_gives_back_exactly_the_config_that_save_was_given(saved):
    assert checkpoints.saved_config(checkpoints.read_sidecar(saved[0])) == CONFIG


def test_sidecar_holds_the_recipe(saved):
    sidecar = json.loads(saved[0].with_suffix(".json").read_text())
    for key in ("kind", "latent_dim", "beta", "activation", "epochs", "seed", "batch_size", "lr",
                "vaelib_version", "history", "metrics", "weights_sha256"):
        assert key in sidecar, key


def test_damaged_weights_are_refused(saved):
    weights = saved[0].with_suffix(".safetensors")
    payload = bytearray(weights.read_bytes())
    payload[-10] ^= 0x01
    weights.write_bytes(bytes(payload))
    with pytest.raises(checkpoints.CheckpointError, match=r"tiny.safetensors is damaged.*SHA-256"):
        checkpoints.load(saved[0])


def test_truncated_weights_are_refused(saved):
    weights = saved[0].with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(checkpoints.CheckpointError, match="tiny.safetensors is damaged"):
        checkpoints.load(saved[0])


def test_damaged_sidecar_is_refused(saved):
    saved[0].with_suffix(".json").write_text("{ not json")
    with pytest.raises(checkpoints.CheckpointError, match=r"tiny.json is not valid JSON"):
        checkpoints.load(saved[0])


def test_config_mismatch_is_refused(saved):
    with pytest.raises(checkpoints.CheckpointError, match=r"has beta=1.0, expected 4.0"):
        checkpoints.load(saved[0], expected={"beta": 4.0})


def test_weights_that_do_not_fit_the_config_are_refused(saved):
    sidecar_path = saved[0].with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["latent_dim"] = 3  # the stored tensors are for L = 2
    checkpoints.write_sidecar(saved[0], sidecar)  # re-sealed: only the shapes can tell
    with pytest.raises(checkpoints.CheckpointError, match="does not fit its config"):
        checkpoints.load(saved[0])


def test_loading_never_unpickles(saved, monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must not be used"))
    checkpoints.load(saved[0])


def test_save_replaces_atomically_and_leaves_no_temporary_files(saved):
    stem, model = saved
    checkpoints.save(stem, model, {**CONFIG, "epochs": 2})
    assert sorted(p.name for p in stem.parent.iterdir()) == ["tiny.json", "tiny.safetensors"]
    assert checkpoints.load(stem)[1]["epochs"] == 2


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "vaelib", *args], capture_output=True, text=True, **kwargs)


def test_killed_training_leaves_the_previous_checkpoint(saved):
    stem, _ = saved
    before = {p.name: p.read_bytes() for p in stem.parent.iterdir()}
    process = subprocess.Popen([sys.executable, "-m", "vaelib", "train", "--model", "vae", "--epochs", "50",
                                "--out", str(stem), "--overwrite"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    seen = b""
    while b"training:" not in seen and time.time() < deadline:  # wait until batches are running
        seen += os.read(process.stderr.fileno(), 4096)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert b"training:" in seen
    after = {p.name: p.read_bytes() for p in stem.parent.iterdir()}
    assert after == before  # untouched, and no temporary file left
    checkpoints.load(stem)


def test_diverging_training_fails_clearly_and_keeps_the_checkpoint(saved):
    stem, _ = saved
    before = {p.name: p.read_bytes() for p in stem.parent.iterdir()}
    result = run_cli("train", "--model", "vae", "--epochs", "1", "--lr", "1e12", "--out", str(stem),
                     "--overwrite")
    assert result.returncode == 1
    assert "training diverged" in result.stderr and "epoch 1, batch" in result.stderr
    assert {p.name: p.read_bytes() for p in stem.parent.iterdir()} == before


def test_load_or_train_trains_saves_then_loads(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, "tiny-vae", registry.Recipe("vae", 2, 1.0, epochs=1, iw_images=50))
    model = registry.load_or_train("tiny-vae", directory=tmp_path, progress=False, device="cpu")
    assert (tmp_path / "tiny-vae.safetensors").exists()
    sidecar = checkpoints.read_sidecar(tmp_path / "tiny-vae")
    assert len(sidecar["history"]) == 1 and sidecar["metrics"]["iw_images"] == 50
    assert abs(sidecar["metrics"]["neg_elbo"] - sidecar["metrics"]["neg_elbo_fp32"]) < 0.2
    again = registry.load_or_train("tiny-vae", directory=tmp_path, device="cpu")
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)  # the metrics were computed from the stored (float16) weights
    assert registry.status("tiny-vae", tmp_path) == "valid"


def test_load_or_train_with_changes_does_not_touch_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, "tiny-vae", registry.Recipe("vae", 2, 1.0, epochs=1, iw_images=50))
    model = registry.load_or_train("tiny-vae", directory=tmp_path, epochs=1, train_subset=256, progress=False)
    assert model.record["train_subset"] == 256 and list(tmp_path.iterdir()) == []


def test_load_or_train_refuses_a_damaged_checkpoint(saved, monkeypatch):
    stem, _ = saved
    monkeypatch.setitem(registry.REGISTRY, "tiny", registry.Recipe("vae", 2, 1.0, epochs=1))
    stem.with_suffix(".safetensors").write_bytes(b"oops")
    with pytest.raises(checkpoints.CheckpointError, match="damaged"):
        registry.load_or_train("tiny", directory=stem.parent)
    assert stem.with_suffix(".safetensors").read_bytes() == b"oops"  # not overwritten
    assert registry.status("tiny", stem.parent).startswith("invalid")


@pytest.mark.parametrize("name", list(registry.REGISTRY))
def test_shipped_checkpoints_are_valid(name):
    model, sidecar = checkpoints.load(name, expected=registry.recipe(name).expected())
    assert len(sidecar["history"]) == sidecar["epochs"]
    metrics = sidecar["metrics"]
    assert abs(metrics["neg_elbo"] - metrics["neg_elbo_fp32"]) < 0.2  # float16 storage costs < 0.2 nats
    assert os.path.getsize(checkpoints.paths(name)[0]) < 15 * 2**20


def test_shipped_metrics_are_reproduced_from_the_stored_weights(mnist_test):
    model, sidecar = checkpoints.load("vae-l2-b1")
    assert abs(train.evaluate(model, mnist_test[0])["loss"] - sidecar["metrics"]["neg_elbo"]) < 1e-3


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model name 'vae'.*vae-l2-b1"):
        registry.load_or_train("vae")


@pytest.mark.parametrize("changes, message", [
    ({"beta": -1.0}, "beta must be a finite number >= 0"),
    ({"latent_dim": 0}, "latent_dim must be an integer >= 1"),
    ({"epochs": -3}, "epochs must be an integer >= 0"),
    ({"train_subset": 0}, "train_subset must be an integer >= 1"),
    ({"train_subset": 100_000}, r"train_subset must be at most 60000, the number of training images"),
    ({"seed": "x"}, "seed must be an integer >= 0, got 'x'"),
    ({"retrain": "yes"}, "retrain must be True or False, got 'yes'"),
    ({"activation": "gelu"}, r"unknown activation 'gelu': choose one of \['relu', 'tanh'\]"),
])
def test_chapter_parameters_are_validated_before_training(changes, message, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training started before the parameters were checked")

    monkeypatch.setattr(train, "fit", no_training)
    with pytest.raises(ValueError, match=message):
        registry.load_or_train("vae-l2-b1", progress=False, **changes)


STUDIES = Path(__file__).resolve().parent.parent / "results" / "studies"


def shipping_study(name: str) -> Path | None:
    """The study a registry model ships from: `<name>`, else the one `<name>-<precision>` there is."""
    from vaelib import study

    candidates = [STUDIES / name] + [STUDIES / f"{name}-{precision}" for precision in study.PRECISIONS]
    found = [folder for folder in candidates if (folder / "table.csv").is_file()]
    if not found or len(study.load_table(found[0])) < 3:
        return None  # no study, or one too small to choose a median from (a study still under way)
    return found[0]


@pytest.mark.parametrize("name", [name for name in registry.REGISTRY if shipping_study(name)])
def test_a_studied_recipe_ships_its_median_seed(name):
    """The shipped checkpoint is the study's seed nearest the median -ELBO, and its sidecar says so."""
    from vaelib import study

    rows = study.load_table(shipping_study(name))
    median = study.median_seed(rows)
    assert registry.recipe(name).seed == median
    _, sidecar = checkpoints.load(name, expected=registry.recipe(name).expected())
    assert sidecar["seed"] == median and sidecar["chosen"].startswith(f"seed {median}: of the study's seeds")
    row = next(row for row in rows if row["seed"] == median)
    assert sidecar["metrics"]["neg_elbo"] == pytest.approx(row["neg_elbo"], abs=0.005)  # the table's own run
