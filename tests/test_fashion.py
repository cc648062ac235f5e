"""A recipe on Fashion-MNIST is trained, scored, saved, studied and evaluated on Fashion-MNIST, never on MNIST.

(Chapter 12 rests on it: a Fashion model scored on MNIST's digits would give numbers that mean nothing.)
"""
import dataclasses
import json

import pytest
import torch

from vaelib import checkpoints, data, registry, study, train
from vaelib.__main__ import main

NAME = "vae-fashion-l2-b1"


@pytest.fixture(scope="module")
def fashion_test():
    return data.load_mnist("test", dataset="fashion-mnist")


@pytest.fixture(scope="module")
def tiny(fashion_test):
    """A Fashion recipe trained for 1 epoch on 512 images, its IW bound cheap: (spec, model, history, metrics)."""
    spec = dataclasses.replace(registry.recipe(NAME), epochs=1, iw_images=20, iw_k=4)
    model, history, metrics = registry.train_recipe(spec, train_subset=512, progress=False)
    return spec, model, history, metrics


def test_only_the_recipes_off_mnist_name_their_dataset_in_their_config():
    for name, spec in registry.REGISTRY.items():  # the shipped MNIST sidecars, sealed before the field, still match
        assert ("dataset" in spec.config()) == (spec.dataset != "mnist"), name
    assert registry.recipe(NAME).config()["dataset"] == "fashion-mnist"
    assert registry.dataset_of({}) == "mnist" and registry.dataset_of({"dataset": "fashion-mnist"}) == "fashion-mnist"
    with pytest.raises(ValueError, match="unknown dataset 'kmnist'"):
        registry.dataset_of({"dataset": "kmnist"})


def test_fashion_class_names_fit_the_labels(fashion_test):
    x, y = fashion_test
    assert len(data.FASHION_CLASSES) == len(set(data.FASHION_CLASSES)) == int(y.max()) + 1 == 10
    ink = torch.stack([x[y == label].mean() for label in range(10)])  # (10,) mean grey level per class
    # an independent check of the order: trousers and sandals are the thinnest garments, pullovers and coats
    # among the most inked
    names = dict(zip(data.FASHION_CLASSES, ink.tolist()))
    assert max(names["Trouser"], names["Sandal"]) < min(names["Pullover"], names["Coat"])


def test_a_fashion_recipe_is_trained_and_scored_on_fashion_test_images(tiny, fashion_test, mnist_test):
    spec, model, history, metrics = tiny
    on_fashion = train.evaluate(model, fashion_test[0])  # the whole Fashion test set, as the metrics should be
    on_mnist = train.evaluate(model, mnist_test[0])
    assert metrics["neg_elbo"] == pytest.approx(on_fashion["loss"], abs=1e-3)
    assert metrics["reconstruction"] == pytest.approx(on_fashion["reconstruction"], abs=1e-3)
    assert abs(on_fashion["loss"] - on_mnist["loss"]) > 5  # so the test above tells the two apart
    # the epoch's scores are on the first 512 Fashion test images (a quick run's rule)
    assert history[-1]["test_images"] == 512
    first = train.evaluate(model, fashion_test[0][:512])["loss"]  # the stored model is rounded to float16: close
    assert history[-1]["test_loss"] == pytest.approx(first, abs=0.5)
    assert abs(history[-1]["test_loss"] - train.evaluate(model, mnist_test[0][:512])["loss"]) > 5


def test_the_sidecar_records_the_dataset_and_a_mismatch_is_refused(tiny, tmp_path):
    spec, model, history, metrics = tiny
    registry.save_trained(tmp_path / "fashion", spec, model, history, metrics)
    sidecar = checkpoints.read_sidecar(tmp_path / "fashion")
    assert sidecar["dataset"] == "fashion-mnist"
    assert sidecar["data_sha256"] == data.DATASETS["fashion-mnist"].sha256 != data.DATASETS["mnist"].sha256
    checkpoints.load(tmp_path / "fashion", expected=spec.expected())
    with pytest.raises(checkpoints.CheckpointError, match="has dataset='fashion-mnist', expected None"):
        checkpoints.load(tmp_path / "fashion", expected=dataclasses.replace(spec, dataset="mnist").expected())
    for name in ("vae-l2-b1", "vae-l50-bin"):  # the shipped MNIST checkpoints still match their recipes
        checkpoints.load(name, expected=registry.recipe(name).expected())
    with pytest.raises(checkpoints.CheckpointError, match="has binarized=True, expected None"):
        checkpoints.load("vae-l50-bin", expected=dataclasses.replace(registry.recipe("vae-l50-bin"),
                                                                     binarized=False).expected())


def test_evaluate_scores_a_fashion_checkpoint_on_fashion_images(tiny, tmp_path, capsys, fashion_test):
    spec, model, history, metrics = tiny
    registry.save_trained(tmp_path / "fashion", spec, model, history, metrics)
    assert main(["evaluate", str(tmp_path / "fashion"), "--k", "2", "--iw-images", "10", "--markdown"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    neg_elbo = float(row.strip("|").split("|")[1])
    assert neg_elbo == pytest.approx(train.evaluate(model, fashion_test[0])["loss"], abs=0.01)


def test_a_fashion_study_records_its_dataset(tmp_path):
    table = study.run(NAME, "0", out=tmp_path, epochs=1, train_subset=256, iw_images=10, iw_k=2, progress=False)
    record = json.loads((table.parent / "seed-0-metrics.json").read_text())
    assert record["config"]["dataset"] == "fashion-mnist"
    assert checkpoints.read_sidecar(table.parent / "seed-0")["dataset"] == "fashion-mnist"


def test_the_shipped_fashion_model_reproduces_its_metrics_on_fashion_test_images(fashion_test, mnist_test):
    model, sidecar = checkpoints.load(NAME, expected=registry.recipe(NAME).expected())
    assert registry.dataset_of(sidecar) == "fashion-mnist"
    assert train.evaluate(model, fashion_test[0])["loss"] == pytest.approx(sidecar["metrics"]["neg_elbo"], abs=1e-3)
    assert abs(train.evaluate(model, mnist_test[0])["loss"] - sidecar["metrics"]["neg_elbo"]) > 5
