"""Chapter 10's remedies for posterior collapse: the KL per dimension, free bits, and KL warm-up in fit."""
import dataclasses
import math

import pytest
import torch
from torch import distributions as D

from vaelib import losses, models, registry, train


def posteriors(seed=0, batch=16, latent_dim=5):
    torch.manual_seed(seed)
    mu = torch.randn(batch, latent_dim) * torch.linspace(0.0, 2.0, latent_dim)  # dimension 0: mu = 0
    logvar = torch.randn(batch, latent_dim) * 0.3 * torch.linspace(0.0, 1.0, latent_dim)  # dimension 0: sigma = 1
    return mu, logvar


def independent_kl(mu, logvar):
    """KL(q(z_j | x_b) || N(0, 1)) for every image b and dimension j, by torch.distributions.  (B, L)"""
    q = D.Normal(mu.double(), (0.5 * logvar.double()).exp())
    return D.kl_divergence(q, D.Normal(torch.zeros_like(q.loc), torch.ones_like(q.loc)))


def test_kl_per_dimension_matches_torch_distributions_and_adds_up():
    mu, logvar = posteriors()
    per_dimension = losses.kl_per_dimension(mu, logvar)  # (L,)
    assert per_dimension.shape == (5,)
    assert torch.allclose(per_dimension.double(), independent_kl(mu, logvar).sum(0), rtol=1e-5, atol=1e-6)
    assert torch.isclose(per_dimension.sum(), losses.kl_to_standard_normal(mu, logvar), rtol=1e-6)
    assert per_dimension[0].abs() < 1e-6  # the dimension at the prior costs nothing


@pytest.mark.parametrize("free_bits", [0.0, 0.05, 0.5, 3.0])
def test_free_bits_kl_matches_an_independent_computation(free_bits):
    mu, logvar = posteriors(seed=1)
    batch_mean = independent_kl(mu, logvar).mean(0)  # (L,) nats per image
    expected = len(mu) * torch.clamp(batch_mean, min=free_bits).sum()  # Kingma et al. 2016, eq. 15
    assert math.isclose(losses.free_bits_kl(mu, logvar, free_bits).item(), expected.item(), rel_tol=1e-5)
    if free_bits == 0.0:
        assert torch.isclose(losses.free_bits_kl(mu, logvar, 0.0), losses.kl_to_standard_normal(mu, logvar))


def test_free_bits_stop_the_push_only_on_dimensions_below_the_threshold():
    mu, logvar = posteriors(seed=2)
    mu.requires_grad_(True)
    batch_mean = independent_kl(mu.detach(), logvar).mean(0)  # (L,)
    free_bits = 0.5
    losses.free_bits_kl(mu, logvar, free_bits).backward()
    below = batch_mean < free_bits
    assert below.any() and (~below).any()  # the example has dimensions on both sides
    assert (mu.grad[:, below] == 0).all()  # a free dimension feels no pull to the prior
    assert torch.allclose(mu.grad[:, ~below], mu.detach()[:, ~below])  # d(mu^2 / 2)/d mu elsewhere


def test_vae_loss_with_free_bits_changes_the_objective_not_the_reported_kl():
    mu, logvar = posteriors(seed=3)
    torch.manual_seed(0)
    logits, x = torch.randn(16, 784), torch.rand(16, 784)
    plain = losses.vae_loss(logits, x, mu, logvar, beta=2.0)
    freed = losses.vae_loss(logits, x, mu, logvar, beta=2.0, free_bits=1.0)
    assert torch.equal(freed.kl, plain.kl) and torch.equal(freed.reconstruction, plain.reconstruction)
    expected = plain.reconstruction + 2.0 * losses.free_bits_kl(mu, logvar, 1.0)
    assert torch.isclose(freed.total, expected) and freed.total > plain.total


@pytest.fixture(scope="module")
def small(mnist_train, mnist_test):
    return mnist_train[0][:512], mnist_test[0][:128]


def test_warm_up_raises_beta_linearly_batch_by_batch(small, monkeypatch):
    seen = []
    real = losses.vae_loss

    def recording(logits, x, mu, logvar, beta=1.0, free_bits=0.0):
        seen.append(beta)
        return real(logits, x, mu, logvar, beta, free_bits)

    monkeypatch.setattr(losses, "vae_loss", recording)
    torch.manual_seed(0)
    history = train.fit(models.VAE(latent_dim=4), small[0], epochs=3, beta=2.0, batch_size=128,
                        warmup_epochs=2, progress=False)
    assert len(seen) == 12  # 4 batches per epoch, 3 epochs
    assert seen[:8] == pytest.approx([2.0 * step / 8 for step in range(8)])  # from 0, linear
    assert seen[8:] == [2.0] * 4  # then the recipe's beta
    assert [row["beta"] for row in history] == pytest.approx([2.0 * 1.5 / 8, 2.0 * 5.5 / 8, 2.0])


def test_without_warm_up_every_row_records_the_recipes_beta(small):
    torch.manual_seed(0)
    history = train.fit(models.VAE(latent_dim=4), small[0], small[1], epochs=2, beta=1.5, progress=False)
    assert [row["beta"] for row in history] == [1.5, 1.5]


def test_fit_with_free_bits_charges_at_least_the_free_nats_and_reports_the_plain_kl(small):
    torch.manual_seed(0)
    history = train.fit(models.VAE(latent_dim=4), small[0], small[1], epochs=1, free_bits=10.0, progress=False)
    row = history[0]
    assert row["train_loss"] - row["train_reconstruction"] >= 4 * 10.0 - 1e-6  # every dimension charged 10 nats
    assert row["train_kl"] < 4 * 10.0  # the plain KL of the same batches is below that
    assert math.isclose(row["test_loss"], row["test_reconstruction"] + row["test_kl"], rel_tol=1e-6)  # no free bits


@pytest.mark.parametrize("option, value, message", [
    ("warmup_epochs", -1, "warmup_epochs must be an integer >= 0, got -1"),
    ("warmup_epochs", 2.5, "warmup_epochs must be an integer >= 0, got 2.5"),
    ("free_bits", -0.5, "free_bits must be a finite number >= 0, got -0.5"),
    ("free_bits", "0.5", "free_bits must be a finite number >= 0, got '0.5'"),
    ("free_bits", float("inf"), "free_bits must be a finite number >= 0, got inf"),
])
def test_bad_remedy_settings_are_refused_in_one_line(small, option, value, message, monkeypatch):
    monkeypatch.setattr(train, "Batches", lambda *a, **k: pytest.fail("training started before the check"))
    with pytest.raises(ValueError, match=f"^{message}$"):
        train.fit(models.VAE(latent_dim=2), small[0], progress=False, **{option: value})


def test_recipes_name_the_remedies_only_when_set_and_training_passes_them_on(monkeypatch):
    plain = registry.recipe("vae-l2-b1")
    assert "warmup_epochs" not in plain.config() and "free_bits" not in plain.config()  # old hashes stay valid
    spec = dataclasses.replace(plain, warmup_epochs=3, free_bits=0.25, epochs=1)
    assert spec.config()["warmup_epochs"] == 3 and spec.config()["free_bits"] == 0.25
    given = {}

    def fake_fit(model, train_x, test_x=None, **options):
        given.update(options)
        return []

    monkeypatch.setattr(train, "fit", fake_fit)
    registry.train_recipe(spec, train_subset=16, progress=False, compute_metrics=False)
    assert given["warmup_epochs"] == 3 and given["free_bits"] == 0.25
    with pytest.raises(ValueError, match="free_bits must be a finite number >= 0"):
        registry.load_or_train("vae-l2-b1", free_bits=-1.0)


def test_a_remedys_checkpoint_never_loads_under_the_plain_recipe():
    from vaelib import checkpoints

    for name in ("vae-l32-b2", "vae-l32-b2-warmup", "vae-l32-b2-freebits"):  # each matches its own recipe
        checkpoints.load(name, expected=registry.recipe(name).expected())
    plain = registry.recipe("vae-l32-b2")
    with pytest.raises(checkpoints.CheckpointError, match="has warmup_epochs=5, expected None"):
        checkpoints.load("vae-l32-b2-warmup", expected=dataclasses.replace(plain, seed=4).expected())
    with pytest.raises(checkpoints.CheckpointError, match="has free_bits=0.25, expected None"):
        checkpoints.load("vae-l32-b2-freebits", expected=plain.expected())
