"""The conditional VAE (chapter 11): its network, its loss against a hand computation, training with labels."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

from vaelib import checkpoints, models, registry, train


@pytest.fixture(scope="module")
def small(mnist_train, mnist_test):
    (train_x, train_y), (test_x, test_y) = mnist_train, mnist_test
    return train_x[:2048], train_y[:2048], test_x[:256], test_y[:256]


def by_hand(model, x, y):
    """The network's pieces applied to explicitly concatenated inputs: (encode, decode_logits) as functions."""
    onehot = F.one_hot(y, 10).float()  # (B, 10)

    def encode(x):
        h = F.relu(model.encoder[0](torch.cat([x, onehot], 1)))  # (B, 794) -> (B, 400)
        return model.to_mu(h), model.to_logvar(h)

    def decode_logits(z, labels=onehot):
        return model.decoder[2](F.relu(model.decoder[0](torch.cat([z, labels], -1))))  # (..., L + 10) -> (..., 784)

    return encode, decode_logits


def test_layer_sizes_take_the_label_on_both_sides():
    model = models.build("cvae", 2)
    sizes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert sizes == [(794, 400), (400, 2), (400, 2), (12, 400), (400, 784)]
    logits, mu, logvar = model(torch.rand(5, 784), torch.arange(5))
    assert logits.shape == (5, 784) and mu.shape == logvar.shape == (5, 2)
    assert models.is_conditional(model) and not models.is_conditional(models.VAE())


def test_digits_and_one_hot_rows_are_the_same_condition_and_the_label_changes_the_image():
    torch.manual_seed(0)
    model = models.ConditionalVAE(latent_dim=2)
    z = torch.randn(10, 2)
    digits = torch.arange(10)
    assert torch.equal(model.decode(z, digits), model.decode(z, F.one_hot(digits, 10).float()))
    same_z = z[:1].expand(10, 2)  # one z, ten labels
    images = model.decode(same_z, digits)  # (10, 784)
    assert (images[1:] - images[0]).abs().amax(dim=1).min() > 1e-4  # every label decodes differently
    half = 0.5 * (F.one_hot(torch.tensor([3]), 10) + F.one_hot(torch.tensor([8]), 10))  # (1, 10): half 3, half 8
    assert torch.equal(models.one_hot(half), half.float())  # weights pass through as they are
    with pytest.raises(ValueError, match=r"labels must lie in 0..9"):
        model.decode(z, torch.full((10,), 10))
    with pytest.raises(ValueError, match=r"integer digits \(B,\) or weights \(B, 10\)"):
        model.decode(z, torch.zeros(10, 3))


def test_elbo_equals_the_hand_computation(small):
    torch.manual_seed(3)
    model = models.ConditionalVAE(latent_dim=2)
    x, y = small[2][:64], small[3][:64]
    metrics = train.evaluate(model, x, labels=y, seed=5)  # one batch: one draw of eps, seed 5
    encode, decode_logits = by_hand(model, x, y)
    with torch.no_grad():
        mu, logvar = encode(x)
        torch.manual_seed(5)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # the reparametrization, same noise
        bce = F.binary_cross_entropy(torch.sigmoid(decode_logits(z)), x, reduction="sum") / len(x)
        q = D.Normal(mu, (0.5 * logvar).exp())
        kl = D.kl_divergence(q, D.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum() / len(x)
    assert math.isclose(metrics["reconstruction"], bce.item(), rel_tol=1e-4)
    assert math.isclose(metrics["kl"], kl.item(), rel_tol=1e-4)
    assert math.isclose(metrics["loss"], bce.item() + kl.item(), rel_tol=1e-4)
    other = train.evaluate(model, x, labels=(y + 1) % 10, seed=5)["loss"]
    assert other != metrics["loss"]  # the labels are read


def test_iw_bound_conditions_every_term_on_the_label(small):
    torch.manual_seed(1)
    model = models.ConditionalVAE(latent_dim=2)
    x, y, k = small[2][:12], small[3][:12], 50
    mine = train.importance_weighted_bound(model, x, k=k, labels=y, images_per_chunk=12, decode_batch=64, seed=2)
    encode, decode_logits = by_hand(model, x, y)
    with torch.no_grad():
        mu, logvar = encode(x)
        q = D.Normal(mu, (0.5 * logvar).exp())
        torch.manual_seed(2)
        z = mu + torch.randn(k, *mu.shape) * (0.5 * logvar).exp()  # (k, 12, 2), the same draws
        logits = decode_logits(z, F.one_hot(y, 10).float().expand(k, 12, 10))  # (k, 12, 784)
        log_px_z = (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)  # (k, 12), the BCE's form
        log_w = log_px_z + D.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)  # (k, 12)
        reference = torch.logsumexp(log_w, 0) - math.log(k)
    assert torch.allclose(mine, reference, atol=1e-3)


def test_fit_batches_each_image_with_its_own_label(small):
    train_x, train_y, test_x, test_y = small
    marked = train_x.clone()
    marked[:, 0] = train_y / 10  # the label written into the top-left pixel (0 in every MNIST digit)
    seen = []

    class Spy(models.ConditionalVAE):
        def forward(self, x, y):
            if self.training:
                seen.append((x.detach()[:, 0], y.detach()))
            return super().forward(x, y)

    torch.manual_seed(0)
    history = train.fit(Spy(latent_dim=2), marked, test_x, epochs=2, labels=train_y, test_labels=test_y,
                        progress=False, device="cpu")
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_images"] == len(test_x)
    assert len(seen) == 2 * 16 and sum(len(y) for _, y in seen) == 2 * len(train_x)
    for pixel, y in seen:
        assert torch.equal((pixel * 10).round().long(), y)  # each image came with its own label
    assert not torch.equal(torch.cat([y for _, y in seen[:16]]), train_y)  # shuffled, not in file order


def test_a_conditional_model_needs_labels_and_a_plain_one_refuses_them(small):
    train_x, train_y, test_x, _ = small
    with pytest.raises(ValueError, match="reads the digit beside each image: pass labels="):
        train.fit(models.ConditionalVAE(), train_x, epochs=1, progress=False)
    with pytest.raises(ValueError, match="pass test_labels="):
        train.fit(models.ConditionalVAE(), train_x, test_x, epochs=1, labels=train_y, progress=False)
    with pytest.raises(ValueError, match="does not read labels"):
        train.fit(models.VAE(), train_x, epochs=1, labels=train_y, progress=False)
    with pytest.raises(ValueError, match="holds 10 labels for 2048 images"):
        train.fit(models.ConditionalVAE(), train_x, epochs=1, labels=train_y[:10], progress=False)
    with pytest.raises(ValueError, match="pass labels="):
        train.evaluate(models.ConditionalVAE(), test_x)


def test_encode_dataset_and_active_units_use_the_labels(small):
    torch.manual_seed(0)
    model = models.ConditionalVAE(latent_dim=3)
    x, y = small[2], small[3]
    mu, labels = train.encode_dataset(model, x, y, batch_size=100)
    with torch.no_grad():
        assert torch.allclose(mu, model.encode(x, y)[0], atol=1e-6) and torch.equal(labels, y)
        assert not torch.allclose(mu, model.encode(x, (y + 1) % 10)[0])
    count, variance = train.active_units(model, x, labels=y)
    assert variance.shape == (3,) and count == int((mu.var(0) > 0.01).sum())


def test_checkpoint_round_trip_and_the_recipe(tmp_path):
    spec = registry.recipe("cvae-l2-b1")
    assert (spec.kind, spec.latent_dim, spec.beta, spec.epochs, spec.iw_images) == ("cvae", 2, 1.0, 20, 1000)
    torch.manual_seed(0)
    model = models.build("cvae", 2)
    checkpoints.save(tmp_path / "c", model, spec.config(), history=[{"epoch": 1}])
    loaded, sidecar = checkpoints.load(tmp_path / "c", expected=spec.config())
    assert isinstance(loaded, models.ConditionalVAE) and sidecar["kind"] == "cvae"
    z, digits = torch.randn(4, 2), torch.tensor([0, 3, 7, 9])
    with torch.no_grad():
        assert torch.allclose(loaded.decode(z, digits), model.decode(z, digits), atol=2e-3)  # float16 weights


def test_train_recipe_trains_a_cvae_with_the_labels():
    spec = registry.Recipe("cvae", 2, 1.0, epochs=1, iw_images=20)
    model, history, metrics = registry.train_recipe(spec, train_subset=512, progress=False, iw_k=10)
    assert isinstance(model, models.ConditionalVAE) and len(history) == 1 and history[0]["test_images"] == 512
    assert metrics["iw_images"] == 20 and metrics["active_units"] <= 2 and metrics["neg_elbo"] > 0


def test_the_command_line_evaluates_a_cvae_checkpoint_with_the_test_labels(tmp_path, capsys):
    from vaelib.__main__ import main

    torch.manual_seed(0)
    checkpoints.save(tmp_path / "c", models.build("cvae", 2), registry.recipe("cvae-l2-b1").config())
    assert main(["evaluate", str(tmp_path / "c"), "--k", "2", "--iw-images", "5"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[0].endswith("c") and row[4] == "5" and row[-1] in ("0", "1", "2")  # IW images, active units
