"""train.fit checks every input at its door: nothing trains on data it would get wrong."""
import numpy as np
import pytest
import torch

from vaelib import models, train

GOOD = torch.rand(8, 784)


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(train, "Batches", lambda *a, **k: pytest.fail("training started before the check"))


@pytest.mark.parametrize("train_x, message", [
    ((GOOD * 255).to(torch.uint8), r"train_x must be float32 pixels in \[0, 1\], got uint8: divide by 255 as in x.float\(\) / 255"),
    (GOOD.long(), "got int64: convert it with .float()"),
    (GOOD.double(), "got float64: convert it with .float()"),
    (GOOD * 255, r"values from .* to .*: divide by 255"),
    (GOOD - 0.5, r"must hold pixels in \[0, 1\]"),
    (torch.full((8, 784), float("nan")), "train_x holds NaN pixels"),
    (torch.empty(0, 784), r"train_x holds no images \(shape \(0, 784\)\)"),
    (GOOD.numpy(), r"train_x must be a torch.Tensor \(N, 784\), got ndarray: convert it with torch.as_tensor"),
    (torch.rand(8, 28, 28), r"train_x must have shape \(N, 784\), got \(8, 28, 28\)"),
])
def test_bad_training_images_are_refused_with_the_fix(train_x, message, no_training):
    with pytest.raises(ValueError, match=message):
        train.fit(models.VAE(latent_dim=2, hidden_dim=8), train_x, progress=False)


@pytest.mark.parametrize("test_x", [torch.rand(4, 28, 28), torch.rand(4, 783), np.zeros((4, 784), np.float32)])
def test_a_test_set_of_the_wrong_shape_is_refused_before_the_first_epoch(test_x, no_training):
    with pytest.raises(ValueError, match="test_x must"):
        train.fit(models.VAE(latent_dim=2, hidden_dim=8), GOOD, test_x, epochs=1, progress=False)


@pytest.mark.parametrize("setting", ["yes", "bf16", 1])
def test_an_unknown_mixed_precision_is_refused_before_training(setting, no_training):
    with pytest.raises(ValueError, match=f"mixed_precision must be 'auto', 'float32'.*got {setting!r}"):
        train.fit(models.VAE(latent_dim=2, hidden_dim=8), GOOD, mixed_precision=setting, progress=False)


def test_good_images_still_train():
    history = train.fit(models.VAE(latent_dim=2, hidden_dim=8), GOOD, GOOD[:4], epochs=1, batch_size=4,
                        progress=False)
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
