import math
import warnings

import pytest
import torch
from torch import distributions as D

from vaelib import device, models, registry, train


@pytest.fixture(scope="module")
def small(mnist_train, mnist_test):
    return mnist_train[0][:2048], mnist_test[0][:512]


def fit_small(train_x, test_x, seed=0, **options):
    """A small VAE trained on the CPU: the tests compare it with CPU numbers, even where CUDA is present."""
    torch.manual_seed(seed)
    model = models.VAE(latent_dim=2)
    history = train.fit(model, train_x, test_x, seed=seed, progress=False, **{"device": "cpu", **options})
    return model, history


def test_loss_goes_down_and_history_has_every_part(small):
    _, history = fit_small(*small, epochs=3)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 20
    assert history[-1]["test_loss"] < history[0]["test_loss"]
    for row in history:
        assert math.isclose(row["test_loss"], row["test_reconstruction"] + row["test_kl"], rel_tol=1e-6)
        assert row["train_kl"] > 0


def test_same_seed_same_history_bit_for_bit(small):
    _, first = fit_small(*small, epochs=2, seed=7)
    _, second = fit_small(*small, epochs=2, seed=7)
    _, other = fit_small(*small, epochs=2, seed=8)
    strip = lambda history: [{k: v for k, v in row.items() if k != "seconds"} for row in history]  # noqa: E731
    assert strip(first) == strip(second)
    assert strip(first) != strip(other)


def test_beta_zero_has_no_kl_pressure(small):
    _, history = fit_small(*small, epochs=1, beta=0.0)
    assert math.isclose(history[0]["train_loss"], history[0]["train_reconstruction"], rel_tol=1e-9)


def test_divergence_stops_with_epoch_and_batch(small):
    with pytest.raises(train.TrainingDiverged, match=r"at epoch 1, batch \d+ of 16: training diverged"):
        fit_small(*small, epochs=1, lr=1e12)


def test_a_deferred_divergence_check_names_the_same_epoch_and_batch(small, monkeypatch):
    """On a GPU the losses are read every CHECK_EVERY["cuda"] batches, not every batch: the same check,
    run here on the CPU every 5 and every 16 batches, names the same first batch as the check of every batch."""
    messages = []
    for every in (1, 5, 16):
        monkeypatch.setitem(train.CHECK_EVERY, "cpu", every)
        with pytest.raises(train.TrainingDiverged, match=r"at epoch 2, batch \d+ of 16: training diverged") as error:
            fit_small(small[0], None, epochs=2, lr=1e-3, final_lr=1e12)
        messages.append(str(error.value))
    assert messages[0] == messages[1] == messages[2], messages


@pytest.mark.parametrize("option, value, message", [
    ("epochs", -1, "epochs must be an integer >= 0"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("beta", -0.5, "beta must be a finite number >= 0"),
    ("lr", float("nan"), "lr must be a finite number > 0"),
])
def test_bad_settings_are_refused(small, option, value, message):
    with pytest.raises(ValueError, match=message):
        fit_small(*small, **{option: value})


def test_wrong_image_shape_is_refused():
    with pytest.raises(ValueError, match=r"shape \(N, 784\)"):
        train.fit(models.VAE(), torch.rand(10, 28, 28), progress=False)


def test_conv_vae_trains_with_automatic_precision(small):
    torch.manual_seed(0)
    model = models.ConvVAE(latent_dim=2)
    history = train.fit(model, small[0][:512], epochs=2, batch_size=64, mixed_precision="auto", progress=False,
                        device="cpu")
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32
    chosen = device.choose_precision("cpu", models.ConvVAE(latent_dim=2), small[0][:64]).precision
    assert [row["precision"] for row in history] == [chosen, chosen]


def test_forced_bfloat16_trains_in_bfloat16(small):
    torch.manual_seed(0)
    model = models.ConvVAE(latent_dim=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # on a CPU without native bfloat16 it warns (tests/test_device.py)
        history = train.fit(model, small[0][:64], epochs=1, batch_size=32, mixed_precision=True, progress=False,
                            device="cpu")
    assert history[0]["precision"] == "bfloat16"


def reference_iw_bound(model, x, k):
    """The same bound from torch.distributions, one image at a time."""
    bounds = []
    for image in x:
        mu, logvar = model.encode(image[None])
        q = D.Normal(mu[0], (0.5 * logvar[0]).exp())
        z = q.sample((k,))  # (k, L)
        log_px_z = D.Bernoulli(logits=model.decode_logits(z), validate_args=False).log_prob(image.expand(k, -1)).sum(-1)
        log_pz = D.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_w = log_px_z + log_pz - q.log_prob(z).sum(-1)
        bounds.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.stack(bounds)


def test_importance_weighted_bound_matches_torch_distributions_and_tightens(small):
    model, _ = fit_small(*small, epochs=2)
    x = small[1][:20]
    mine = train.importance_weighted_bound(model, x, k=1000, images_per_chunk=7)
    torch.manual_seed(1)
    with torch.no_grad():
        reference = reference_iw_bound(model, x, k=1000)
    assert mine.shape == (20,)
    # Two Monte Carlo estimates of the same numbers: close for most images, and on average.
    assert (mine - reference).abs().median() < 0.3
    assert abs((mine - reference).mean()) < 1.0
    neg_elbo = train.evaluate(model, x)["loss"]
    assert -mine.mean() < neg_elbo  # a tighter bound than the ELBO
    assert torch.allclose(train.importance_weighted_bound(model, x, k=1).mean(), -torch.tensor(neg_elbo), atol=8)


def test_iw_bound_needs_a_vae(small):
    with pytest.raises(ValueError, match="needs a VAE"):
        train.importance_weighted_bound(models.Autoencoder(), small[1][:4], k=2)


def test_encode_dataset_and_active_units(small):
    model, _ = fit_small(*small, epochs=2)
    mu, labels = train.encode_dataset(model, small[1], torch.arange(512), batch_size=100)
    assert mu.shape == (512, 2) and torch.equal(labels, torch.arange(512))
    assert torch.allclose(mu, model.encode(small[1])[0], atol=1e-6)
    count, variance = train.active_units(model, small[1])
    assert variance.shape == (2,) and count == int((mu.var(0) > 0.01).sum())
    dead = models.VAE(latent_dim=3)
    for head in (dead.to_mu,):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    assert train.active_units(dead, small[1])[0] == 0  # constant means: no active unit


def test_default_device_is_cuda_only_when_present():
    assert train.default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_asking_for_a_missing_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    x = torch.rand(8, 784)
    with pytest.raises(ValueError, match="'cuda' was asked for, but this PyTorch has no CUDA device here: use "
                                         "device='cpu'"):
        train.fit(models.VAE(2), x, epochs=1, device="cuda", progress=False)
    with pytest.raises(ValueError, match="has no CUDA device here"):
        registry.load_or_train("vae-l2-b1", device="cuda")  # before any loading or training


@pytest.mark.parametrize("device", ["tpu", "gpu", 3.5])
def test_an_unknown_device_names_the_valid_ones(device):
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda', 'mps' or None \(pick automatically\)"):
        train.resolve_device(device)


def test_resolve_device_keeps_a_valid_choice():
    assert train.resolve_device("cpu") == torch.device("cpu")
    assert train.resolve_device(None) == train.default_device()


def test_binarize_draws_each_pixel_with_its_grey_level_as_probability():
    from vaelib import data

    x = torch.full((200, 784), 0.3)
    x[:, :100] = 0.0
    x[:, 100:200] = 1.0
    drawn = data.binarize(x, seed=0)  # (200, 784)
    assert set(drawn.unique().tolist()) == {0.0, 1.0}
    assert drawn[:, :100].max() == 0 and drawn[:, 100:200].min() == 1  # 0 and 1 stay as they are
    share = drawn[:, 200:].mean().item()  # 200 * 584 draws of a Bernoulli(0.3): sd 0.0013
    assert abs(share - 0.3) < 0.006
    assert torch.equal(drawn, data.binarize(x, seed=0)) and not torch.equal(drawn, data.binarize(x, seed=1))


def test_fit_with_binarize_trains_on_fresh_binary_draws_of_every_batch(small):
    train_x, _ = small
    model = models.VAE(2)
    seen = []
    model.encoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    train.fit(model, train_x[:256], epochs=2, batch_size=256, progress=False, binarize=True, device="cpu")
    assert len(seen) == 2 and all(set(batch.unique().tolist()) <= {0.0, 1.0} for batch in seen)
    first, second = (batch.sum(dim=1).sort().values for batch in seen)  # the same images, drawn twice
    assert not torch.equal(first, second)
    grey_ink = train_x[:256].sum(dim=1).mean()
    assert abs(seen[0].sum(dim=1).mean() - grey_ink) < 3  # binary ink matches grey ink on average


def test_a_binarized_recipe_says_so_in_its_config_and_other_recipes_do_not():
    import dataclasses

    spec = registry.recipe("vae-l2-b1")
    assert "binarized" not in spec.config()  # the shipped sidecars, sealed before the field existed, still match
    assert dataclasses.replace(spec, binarized=True).config()["binarized"] is True


def test_trained_precision_reads_the_history_and_knows_old_checkpoints():
    assert registry.trained_precision([{"epoch": 1, "precision": "bfloat16"}]) == "bfloat16"
    assert registry.trained_precision([{"epoch": 1}], mixed_precision=True) == "bfloat16"  # saved before the field
    assert registry.trained_precision([{"epoch": 1}], mixed_precision="auto") == "float32"
    assert registry.trained_precision([]) == "float32"
    from vaelib import checkpoints

    _, sidecar = checkpoints.load("convvae-l2-b1")  # shipped conv VAE: trained in bfloat16 autocast
    assert registry.trained_precision(sidecar["history"], sidecar.get("mixed_precision")) == "bfloat16"


def test_final_lr_decays_the_learning_rate_geometrically_to_its_value(small):
    model, history = fit_small(*small, epochs=3, lr=1e-3, final_lr=1e-4)
    lrs = [row["lr"] for row in history]
    assert lrs == pytest.approx([1e-3, 1e-3 * 0.1 ** 0.5, 1e-4])
    _, constant = fit_small(*small, epochs=2, lr=2e-3)
    assert [row["lr"] for row in constant] == [2e-3, 2e-3]
    with pytest.raises(ValueError, match="final_lr must be a finite number > 0, got -1"):
        fit_small(*small, epochs=1, final_lr=-1.0)


def test_a_deeper_or_decaying_recipe_records_it_and_the_shipped_recipes_do_not():
    import dataclasses

    spec = registry.recipe("vae-l2-b1")
    assert spec.config()["options"] == {} and "final_lr" not in spec.config()
    deeper = dataclasses.replace(spec, hidden_dim=512, hidden_layers=2, final_lr=1e-4).config()
    assert deeper["options"] == {"hidden_dim": 512, "hidden_layers": 2} and deeper["final_lr"] == 1e-4


def test_elbo_matches_torch_distributions_for_a_given_q(small):
    model, _ = fit_small(*small, epochs=1)
    x = small[1][:16]
    with torch.no_grad():
        mu, logvar = model.encode(x)  # (16, 2)
        # A q of width ~0: E_q[log p(x | z)] is log p(x | mu), exactly.
        narrow = torch.full_like(logvar, -30.0)
        mine = train.elbo(model, x, mu, narrow, samples=3)
        q = D.Normal(mu, (0.5 * narrow).exp())
        reference = (D.Bernoulli(logits=model.decode_logits(mu), validate_args=False).log_prob(x).sum(-1)
                     - D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(-1))
        assert mine.shape == (16,) and torch.allclose(mine, reference, rtol=1e-4, atol=1e-2)
        # The encoder's own q, many samples: a Monte Carlo estimate of the same expectation as torch's.
        q = D.Normal(mu, (0.5 * logvar).exp())
        torch.manual_seed(3)
        z = q.sample((2000,))  # (2000, 16, 2)
        log_px_z = D.Bernoulli(logits=model.decode_logits(z), validate_args=False).log_prob(x).sum(-1).mean(0)  # (16,)
        reference = log_px_z - D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(-1)
        difference = train.elbo(model, x, samples=2000) - reference  # (16,): two estimates' sampling noise
        assert difference.abs().max() < 2.0 and difference.mean().abs() < 0.3
        # beta weighs the KL; the mean over images is minus the -ELBO of train.evaluate, up to sampling noise
        kl = D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(-1)
        assert torch.allclose(train.elbo(model, x, beta=4.0) - train.elbo(model, x, beta=1.0), -3 * kl, atol=1e-3)
        # evaluate draws one z per image, so its -ELBO moves by about 1 nat from seed to seed: average ten seeds
        neg_elbo = sum(train.evaluate(model, small[1], seed=seed)["loss"] for seed in range(10)) / 10
        assert abs(train.elbo(model, small[1], samples=20).mean().item() + neg_elbo) < 1.0


def test_refine_posterior_raises_each_images_elbo_and_leaves_the_model_alone(small):
    model, _ = fit_small(*small, epochs=1)
    x = small[1][:32]
    before = {key: value.clone() for key, value in model.state_dict().items()}
    mu0, logvar0 = train.refine_posterior(model, x, steps=0)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip((mu0, logvar0), model.encode(x)))  # no step: the encoder's q
    mu, logvar = train.refine_posterior(model, x, steps=100, lr=0.05, samples=4)
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())  # decoder frozen
    assert all(p.requires_grad for p in model.parameters())  # and trainable again afterwards
    with torch.no_grad():
        fitted = train.elbo(model, x, mu, logvar, samples=200, seed=9)
        encoder = train.elbo(model, x, samples=200, seed=9)
    assert fitted.mean() > encoder.mean() and (fitted > encoder - 0.5).float().mean() > 0.9
    # An independent upper limit: log p(x) of this 2-D model, summed on a grid, is above every ELBO.
    axis = torch.arange(-6, 6.001, 0.05)
    z = torch.cartesian_prod(axis, axis)  # (G, 2)
    with torch.no_grad():
        decoder = D.Bernoulli(logits=model.decode_logits(z), validate_args=False)  # (G, 784)
        log_pz = D.Normal(0.0, 1.0).log_prob(z).sum(-1)  # (G,)
        log_px = torch.stack([torch.logsumexp(decoder.log_prob(image).sum(-1) + log_pz, 0) for image in x[:8]])
    log_px = log_px + 2 * math.log(0.05)  # (8,)
    assert (fitted[:8] < log_px + 0.05).all()


def test_iw_bound_takes_a_posterior_of_our_choice(small):
    model, _ = fit_small(*small, epochs=1)
    x = small[1][:10]
    with torch.no_grad():
        mu, logvar = model.encode(x)
    own = train.importance_weighted_bound(model, x, k=50)
    given = train.importance_weighted_bound(model, x, k=50, posterior=(mu, logvar))
    assert torch.equal(own, given)  # the encoder's q, handed in: the same draws, the same bound
    shifted = train.importance_weighted_bound(model, x, k=50, posterior=(mu + 3.0, logvar))
    assert shifted.mean() < own.mean() - 1  # a q far from the posterior: a much looser bound
