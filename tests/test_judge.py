"""The judge: its shipped checkpoint's accuracy, its outputs, and sample_quality against numpy."""
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from vaelib import checkpoints, judge


@pytest.fixture(scope="module")
def model():
    return judge.load()


def test_the_shipped_judge_names_at_least_99_percent_of_the_test_digits(model, mnist_test):
    x, y = mnist_test
    labels, _ = judge.predict(x, model)
    accuracy = (labels == y).float().mean().item()
    assert accuracy >= 0.99
    assert abs(accuracy - model.record["metrics"]["test_accuracy"]) < 1e-4  # the sidecar says what it measures
    share = (labels[:500] == y[:500]).float().mean().item()
    assert judge.completion_accuracy(x[:500], y[:500], model) == pytest.approx(share)


def test_the_checkpoint_is_small_float16_and_described_like_the_models(model):
    weights = checkpoints.CHECKPOINT_DIR / "judge-mnist.safetensors"
    assert weights.stat().st_size < 1_000_000
    record = model.record
    assert record["dtype"] == "float16" and record["kind"] == "judge" and record["seed"] == 0
    assert record["metrics"]["test_images"] == 10_000 and len(record["history"]) == record["epochs"]
    assert judge.status() == "valid"
    recipe = judge.JudgeRecipe()  # retraining (load_or_train(retrain=True)) follows the shipped recipe
    assert {key: record[key] for key in vars(recipe)} == vars(recipe)
    assert sum(p.numel() for p in model.parameters()) == 104_202


def test_predict_gives_labels_and_confidences(model, mnist_test):
    x, y = mnist_test
    labels, confidence = judge.predict(x[:7], model)
    assert labels.shape == (7,) and labels.dtype == torch.int64
    assert confidence.shape == (7,) and confidence.dtype == torch.float32
    assert ((confidence >= 0.1) & (confidence <= 1)).all()
    with pytest.raises(ValueError, match=r"must have shape \(N, 784\)"):
        judge.predict(x[:7].reshape(7, 28, 28), model)
    with pytest.raises(ValueError, match="labels must be a tensor of shape"):
        judge.completion_accuracy(x[:7], y[:6], model)


class FirstTenPixels(nn.Module):
    """A hand-made 'classifier': the logits are 8 times the first ten pixels."""

    def forward(self, x):
        return 8 * x[:, :10]


def test_sample_quality_against_numpy():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(200, 784, generator=generator) ** 3
    x[:50, 3] = 1.0  # a run of confident 3s
    x[:50, :3] = 0.0
    x[:50, 4:10] = 0.0
    quality = judge.sample_quality(x, FirstTenPixels())
    logits = 8 * x[:, :10].double().numpy()
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    counts = np.array([(probs.argmax(1) == d).sum() for d in range(10)])
    shares = counts / counts.sum()
    kl = sum(p * np.log(p / 0.1) for p in shares if p > 0)
    assert quality["counts"] == counts.tolist() and quality["images"] == 200
    assert quality["confident_share"] == pytest.approx((probs.max(1) > 0.9).mean())
    assert quality["kl_from_uniform"] == pytest.approx(kl, abs=1e-9)
    assert 0.25 <= quality["confident_share"] < 1 and quality["counts"][3] >= 50


def test_sample_quality_of_one_repeated_digit_is_log_10_from_uniform(model, mnist_test):
    x, y = mnist_test
    ones = x[y == 1][:20]
    quality = judge.sample_quality(ones, model)
    assert quality["counts"][1] == 20 and quality["confident_share"] == 1.0
    assert quality["kl_from_uniform"] == pytest.approx(np.log(10))
    balanced = torch.cat([x[y == d][:10] for d in range(10)])
    assert judge.sample_quality(balanced, model)["kl_from_uniform"] < 0.01


def test_a_damaged_or_edited_judge_is_refused(tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(checkpoints.CHECKPOINT_DIR / f"judge-mnist{suffix}", tmp_path)
    assert judge.status(tmp_path) == "valid"
    sidecar = tmp_path / "judge-mnist.json"
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "epochs": 50}))
    assert "was edited" in judge.status(tmp_path)
    sidecar.write_text(json.dumps(record))
    weights = tmp_path / "judge-mnist.safetensors"
    weights.write_bytes(weights.read_bytes()[:-2] + b"\0\0")
    assert "damaged" in judge.status(tmp_path)
    assert judge.status(tmp_path / "nowhere") == "missing"


def test_list_shows_the_judge_and_its_accuracy():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "vaelib", "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("judge-mnist "))
    assert line.split()[1] == "valid" and "test accuracy 99." in line
