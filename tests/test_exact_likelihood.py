"""The exact 2-D likelihood on a grid, against independent computations; the IW bound's proposals; study.compare."""
import math

import numpy as np
import pytest
import scipy.integrate
import torch

from vaelib import data, grid, models, registry, study, train

TWO_D = ["vae-l2-b0", "vae-l2-b1", "vae-l2-b4", "vae-l2-b1-tanh", "cvae-l2-b1", "vae-fashion-l2-b1", "convvae-l2-b1"]


def numpy_log_px(vae, image, half=6.0, step=0.02):
    """An independent sum: float64 NumPy over a fixed square, the decoder's weights copied out of torch."""
    w = [p.detach().double().numpy() for p in vae.decoder.parameters()]  # Linear, act, Linear
    axis = np.arange(-half, half + step / 2, step)
    z1, z2 = np.meshgrid(axis, axis, indexing="ij")
    z = np.stack([z1.ravel(), z2.ravel()], 1)  # (G, 2)
    x = image.double().numpy()
    parts = []
    for start in range(0, len(z), 20_000):  # (g, 784) logits at a time
        zs = z[start : start + 20_000]
        logits = np.maximum(zs @ w[0].T + w[1], 0) @ w[2].T + w[3]  # the ReLU decoder
        parts.append(logits @ x - np.logaddexp(0, logits).sum(1) - 0.5 * (zs**2).sum(1) - math.log(2 * math.pi))
    log_joint = np.concatenate(parts)
    top = log_joint.max()
    return top + math.log(np.exp(log_joint - top).sum()) + 2 * math.log(step)


@pytest.fixture(scope="module")
def small_vae():
    torch.manual_seed(0)
    return models.VAE(latent_dim=2, hidden_dim=16).eval()


def test_the_grid_agrees_with_an_independent_numpy_sum_and_with_scipy(small_vae, mnist_test):
    x = mnist_test[0][:3]
    ours = train.log_likelihood_grid(small_vae, x, step=0.05)
    for i in range(3):
        assert abs(ours[i].item() - numpy_log_px(small_vae, x[i])) < 0.05
    # scipy's adaptive quadrature of p(x, z) / p(x, z*) (scaled near 1, so its tolerance means something)
    image = x[0]
    top = ours[0].item() - math.log(2 * math.pi)

    def density(z2, z1):
        z = torch.tensor([[z1, z2]], dtype=torch.float32)
        with torch.no_grad():
            logits = small_vae.decode_logits(z)[0].double()
        log_joint = (image.double() * logits - torch.nn.functional.softplus(logits)).sum() - 0.5 * (z1**2 + z2**2)
        return math.exp(log_joint.item() - math.log(2 * math.pi) - top)

    value, _ = scipy.integrate.dblquad(density, -6, 6, -6, 6, epsabs=1e-8, epsrel=1e-4)
    assert abs(top + math.log(value) - ours[0].item()) < 0.05


def test_the_grid_widens_until_no_posterior_touches_its_border(small_vae):
    far = models.VAE(latent_dim=2, hidden_dim=16).eval()
    with torch.no_grad():  # a decoder whose images are best explained far from the origin, at z1 ~ 9
        far.decoder[0].weight.zero_()
        far.decoder[0].weight[:, 0] = 1.0
        far.decoder[0].bias.fill_(-9.0)
        far.decoder[2].weight.fill_(0.5)
    x = (torch.rand(2, 784) < 0.9).float()
    sums = grid.posterior_sums(far, x)
    assert sums["box"][0, 1] > 9  # pushed out beyond the start's +-4 (and the encoder's guess)
    assert (sums["top_border"] < sums["top"] - 25).all()


def test_models_without_a_2d_prior_are_refused_with_one_line():
    with pytest.raises(ValueError, match="no prior over its code"):
        train.log_likelihood_grid(models.Autoencoder(latent_dim=2), torch.rand(2, 784))
    with pytest.raises(ValueError, match="latent_dim is 10.*importance_weighted_bound"):
        train.log_likelihood_grid(models.VAE(latent_dim=10), torch.rand(2, 784))
    with pytest.raises(ValueError, match="pass labels"):
        train.log_likelihood_grid(models.ConditionalVAE(latent_dim=2), torch.rand(2, 784))


@pytest.mark.parametrize("name", TWO_D)
def test_every_2d_checkpoint_exact_above_iw_above_elbo_and_the_step_is_fine(name, mnist_test):
    model = registry.load_or_train(name).cpu()
    n = 12 if name.startswith("conv") else 40
    dataset = registry.dataset_of(model.record)
    x, y = data.load_mnist("test", dataset=dataset)
    x, labels = x[:n], (y[:n] if models.is_conditional(model) else None)
    exact = train.log_likelihood_grid(model, x, labels=labels)  # (n,) at step 0.05
    iw = train.importance_weighted_bound(model, x, k=1000, labels=labels)
    with torch.no_grad():
        mu, logvar = model.encode(x, labels) if labels is not None else model.encode(x)
        z = mu + torch.randn(50, *mu.shape) * (0.5 * logvar).exp()  # (50, n, 2): the ELBO from 50 draws
        logits = torch.stack([model.decode_logits(zs, labels) if labels is not None else model.decode_logits(zs) for zs in z])
        elbo = (-(torch.nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none"))
                .sum(-1).mean(0) - (-0.5 * (1 + logvar - mu**2 - logvar.exp())).sum(-1))
    assert exact.mean() > iw.mean() > elbo.mean()
    # (per image, one IW estimate may land above log p(x): it is a lower bound in expectation, not draw by draw)
    # Halving the step moves log p(x) by < 0.05 nats on average. The conv decoder's posteriors are the sharpest
    # (sigma down to 0.025; step 0.1 is then 0.36 nats off) and its decoder the costliest: 6 images at 0.025.
    few = 6 if name.startswith("conv") else n
    finer = train.log_likelihood_grid(model, x[:few], step=0.025, labels=None if labels is None else labels[:few])
    assert (finer - exact[:few]).abs().mean() < 0.05


def test_beta_zero_importance_sampling_is_stuck_and_a_wider_proposal_helps(mnist_test):
    model = registry.load_or_train("vae-l2-b0").cpu()
    x = mnist_test[0][:20]
    exact = train.log_likelihood_grid(model, x)
    encoder = train.importance_weighted_bound(model, x, k=1000)
    mixture = train.importance_weighted_bound(model, x, k=1000, prior_share=0.5)
    assert (exact - encoder).mean() > 10  # a proposal far narrower than the posterior: very loose
    assert encoder.mean() < mixture.mean() < exact.mean()
    sizes = train.effective_sample_size(model, x, k=1000)
    assert sizes.median() < 100  # a few of the 1000 draws carry the weight


def test_prior_share_and_sigma_scale_still_give_the_exact_bound_for_a_gaussian_model():
    """A linear-Gaussian check: with k large any proposal converges to the same log p(x) from below."""
    torch.manual_seed(1)
    vae = models.VAE(latent_dim=2, hidden_dim=8).eval()
    x = torch.rand(3, 784)
    exact = train.log_likelihood_grid(vae, x)
    for options in (dict(), dict(sigma_scale=2.0), dict(prior_share=0.3)):
        bound = train.importance_weighted_bound(vae, x, k=20000, **options)
        assert (bound <= exact + 0.05).all() and (exact - bound).mean() < 0.2
    with pytest.raises(ValueError, match="prior_share must be below 1"):
        train.importance_weighted_bound(vae, x, k=10, prior_share=1.0)


def rows(recipe, values):
    return [{"recipe": recipe, "seed": s, "neg_elbo": v} for s, v in enumerate(values)]


def test_compare_matches_scipy_and_an_exact_permutation_count():
    import scipy.stats

    a, b = [150.1, 151.2, 149.8, 150.9, 150.3], [152.4, 153.1, 151.9, 152.8, 153.6]
    result = study.compare(rows("a", a), rows("b", b))
    assert result["welch_p"] == pytest.approx(scipy.stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    assert result["permutation_p"] == pytest.approx(2 / 252)  # fully separated groups: only the two extreme splits
    low, high = result["interval"]
    assert low < result["difference"] < high < 0 and result["resolved"]
    same = study.compare(rows("a", a), rows("c", [x + 0.1 for x in a[::-1]]))
    assert not same["resolved"] and "not resolved with 5 and 5 seeds" in same["text"]


def test_compare_refuses_one_seed_or_no_spread():
    with pytest.raises(ValueError, match="at least two seeds"):
        study.compare(rows("a", [1.0]), rows("b", [2.0, 3.0]))
    with pytest.raises(ValueError, match="no spread"):
        study.compare(rows("a", [1.0, 1.0]), rows("b", [1.0, 1.0]))


def test_a_conditional_vae_sums_each_digit_with_one_shared_mask():
    """The per-digit path hands each digit's images on with the mask shared by all, shape (1, 784)."""
    torch.manual_seed(0)
    cvae = models.ConditionalVAE(latent_dim=2, hidden_dim=8).eval()
    x, y = torch.rand(6, 784), torch.tensor([0, 1, 1, 2, 0, 3])
    together = train.log_likelihood_grid(cvae, x, step=0.2, labels=y)  # (6,), a coarse grid: cheap
    alone = torch.cat([train.log_likelihood_grid(cvae, x[i : i + 1], step=0.2, labels=y[i : i + 1]) for i in range(6)])
    assert torch.allclose(together, alone, atol=1e-3)
    top = torch.arange(784) < 392
    assert grid.posterior_sums(cvae, x, visible=top, step=0.2, labels=y)["log_px"].shape == (6,)
