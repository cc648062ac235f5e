import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from vaelib import checkpoints, losses, models


@pytest.mark.parametrize("latent_dim", [1, 2, 10, 20])
@pytest.mark.parametrize("kind", ["autoencoder", "vae", "conv_vae"])
def test_shapes_and_ranges(kind, latent_dim):
    torch.manual_seed(0)
    model = models.build(kind, latent_dim)
    x = torch.rand(5, 784)
    logits, mu, logvar = model(x)
    assert logits.shape == (5, 784)
    assert mu.shape == (5, latent_dim)
    assert (logvar is None) == (kind == "autoencoder")
    if logvar is not None:
        assert logvar.shape == (5, latent_dim)
    x_hat = model.decode(torch.randn(7, latent_dim))
    assert x_hat.shape == (7, 784) and x_hat.min() >= 0 and x_hat.max() <= 1
    assert torch.allclose(model.decode(mu), torch.sigmoid(model.decode_logits(mu)))


def test_mlp_layer_sizes_match_the_original():
    vae = models.VAE(latent_dim=2)
    sizes = [(m.in_features, m.out_features) for m in vae.modules() if isinstance(m, nn.Linear)]
    assert sizes == [(784, 400), (400, 2), (400, 2), (2, 400), (400, 784)]
    ae = models.Autoencoder(latent_dim=3)
    sizes = [(m.in_features, m.out_features) for m in ae.modules() if isinstance(m, nn.Linear)]
    assert sizes == [(784, 400), (400, 3), (3, 400), (400, 784)]
    assert models.count_parameters(vae) == 784 * 400 + 400 + 2 * (400 * 2 + 2) + 2 * 400 + 400 + 400 * 784 + 784


def test_conv_vae_intermediate_shapes_are_the_chapters():
    model = models.ConvVAE(latent_dim=2)
    shapes = []
    h = torch.rand(3, 1, 28, 28)
    for layer in model.encoder:
        h = layer(h)
        if isinstance(layer, nn.Conv2d):
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(32, 13, 13), (64, 5, 5), (128, 2, 2)]
    assert h.shape == (3, 512)
    h = model.decoder_input(torch.randn(3, 2)).view(-1, 1024, 1, 1)
    shapes = []
    for layer in model.decoder:
        h = layer(h)
        if isinstance(layer, nn.ConvTranspose2d):
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(256, 4, 4), (128, 12, 12), (1, 28, 28)]


def test_autoencoder_bottleneck_relu_is_faithful_and_optional():
    torch.manual_seed(0)
    x = torch.rand(64, 784)
    faithful = models.Autoencoder(latent_dim=2)
    code, logvar = faithful.encode(x)
    assert logvar is None and (code >= 0).all() and (code == 0).any()  # folded onto the positive quadrant
    free = models.Autoencoder(latent_dim=2, bottleneck_relu=False)
    free.load_state_dict(faithful.state_dict())
    raw, _ = free.encode(x)
    assert (raw < 0).any() and torch.equal(torch.relu(raw), code)


def test_tanh_encoder_is_bounded():
    torch.manual_seed(0)
    model = models.VAE(latent_dim=2, activation="tanh")
    h = model.encoder(torch.rand(8, 784) * 100)
    assert isinstance(model.encoder[1], nn.Tanh) and h.abs().max() <= 1
    assert isinstance(models.ConvVAE(2, activation="tanh").encoder[1], nn.Tanh)


def test_reparameterize_has_the_right_moments_and_gradients():
    torch.manual_seed(0)
    mu = torch.full((200_000, 1), 1.5, requires_grad=True)
    logvar = torch.full((200_000, 1), 2 * torch.log(torch.tensor(0.5)).item(), requires_grad=True)
    z = models.reparameterize(mu, logvar)
    assert abs(z.mean().item() - 1.5) < 0.01 and abs(z.std().item() - 0.5) < 0.01
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones_like(mu))  # dz/dmu = 1
    assert logvar.grad.abs().sum() > 0


def test_fast_transposed_conv_agrees_with_the_plain_layer():
    torch.manual_seed(0)
    plain = models.ConvVAE(latent_dim=2, fast=False)
    fast = models.ConvVAE(latent_dim=2, fast=True)
    fast.load_state_dict(plain.state_dict())  # same keys, same parameters
    z = torch.randn(16, 2)
    out_plain, out_fast = plain.decode_logits(z), fast.decode_logits(z)
    assert torch.allclose(out_plain, out_fast, atol=1e-4, rtol=1e-4)
    target = torch.rand(16, 784)
    for model, out in ((plain, out_plain), (fast, out_fast)):
        nn.functional.binary_cross_entropy_with_logits(out, target).backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-3), name


@pytest.mark.parametrize("c_in, c_out, kernel, stride, size", [
    (1024, 256, 4, 2, 1),  # 1x1 input: one linear map (the decoder's first layer)
    (128, 1, 6, 2, 12),  # stride divides kernel, large input: the sub-pixel convolution (its last layer)
    (8, 3, 4, 2, 9),  # the same path with several output channels and an odd size
    (256, 128, 6, 2, 4),  # small input: TransposedConvolution (PyTorch's forward, two convolutions backward)
    (4, 2, 5, 2, 8),  # stride does not divide the kernel: TransposedConvolution
    (3, 5, 4, 3, 5),  # stride 3: TransposedConvolution
])
def test_each_fast_path_of_the_transposed_conv_matches_the_plain_layer(c_in, c_out, kernel, stride, size):
    torch.manual_seed(0)
    plain = nn.ConvTranspose2d(c_in, c_out, kernel, stride=stride)
    fast = models.FastConvTranspose2d(c_in, c_out, kernel, stride=stride)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(5, c_in, size, size)
    outputs, grads = [], []
    for layer in (plain, fast):
        x_in = x.clone().requires_grad_()
        out = layer(x_in)
        out.backward(torch.linspace(-0.5, 1.5, out.numel()).view_as(out))  # differs per pixel, sum far from 0
        outputs.append(out.detach())
        grads.append([x_in.grad, layer.weight.grad, layer.bias.grad])
    assert outputs[0].shape == outputs[1].shape == (5, c_out, (size - 1) * stride + kernel, (size - 1) * stride + kernel)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5, rtol=1e-4)
    for name, a, b in zip(("input", "weight", "bias"), *grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), name


def test_the_shifted_patch_addition_has_the_gradient_of_its_function():
    """Its hand-written backward against finite differences (float64), for one and for several channels."""
    torch.manual_seed(0)
    for c_out, s, r, h, w in ((1, 2, 3, 4, 5), (3, 2, 2, 3, 3), (2, 3, 2, 2, 4)):
        patches = torch.randn(2 * h * w, c_out * (s * r) ** 2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda p: models.AddShiftedPatches.apply(p, (2, h, w), c_out, s, r),
                                        (patches,))


def test_the_transposed_convolution_has_the_gradient_of_its_function():
    """Its backward (two ordinary convolutions) against finite differences (float64), strides 2 and (3, 2)."""
    torch.manual_seed(0)
    for stride, kernel in ((2, 3), ((3, 2), 4)):
        x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(3, 2, kernel, kernel, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda *a: models.TransposedConvolution.apply(*a, stride), (x, weight, bias))


def test_the_fast_conv_vae_keeps_its_layout_through_a_checkpoint(tmp_path):
    """Channels-last weights are a storage choice: a checkpoint saves them in the usual order, and they load
    into a fast or a plain model alike, with the same outputs."""
    torch.manual_seed(0)
    fast = models.ConvVAE(latent_dim=2)
    convolutions = [fast.encoder[0], fast.encoder[2], fast.encoder[4], fast.decoder[2]]
    assert all(layer.weight.is_contiguous(memory_format=torch.channels_last) for layer in convolutions)
    config = {"kind": "conv_vae", "latent_dim": 2, "beta": 1.0, "activation": "relu", "epochs": 1, "seed": 0,
              "batch_size": 128, "lr": 1e-3}
    checkpoints.save(tmp_path / "conv", fast, config, dtype=torch.float32)
    stored = safetensors.torch.load_file(checkpoints.paths(tmp_path / "conv")[0])
    for name, tensor in fast.state_dict().items():
        assert torch.equal(stored[name], tensor), name  # the same values at the same indices
    loaded, _ = checkpoints.load(tmp_path / "conv")
    plain = models.ConvVAE(latent_dim=2, fast=False)
    plain.load_state_dict(stored)
    x = torch.rand(8, 784)
    with torch.no_grad():
        expected = plain.decode_logits(plain.encode(x)[0])
        for model in (fast, loaded):
            assert torch.allclose(model.decode_logits(model.encode(x)[0]), expected, atol=1e-4, rtol=1e-4)
    assert loaded.encoder[2].weight.is_contiguous(memory_format=torch.channels_last)  # loading keeps the layout


def test_a_bfloat16_training_step_follows_the_float32_gradient():
    """Autocast runs the fast layers' products in bfloat16 and their hand-written backward takes its
    bfloat16 gradients: each parameter's gradient must still point where the float32 one does."""
    torch.manual_seed(0)
    model = models.ConvVAE(latent_dim=2)
    x = torch.rand(64, 784)
    gradients = {}
    for precision in ("float32", "bfloat16"):
        model.zero_grad()
        torch.manual_seed(1)  # the same noise in the reparameterization
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            logits, mu, logvar = model(x)
        losses.vae_loss(logits, x, mu, logvar, 1.0).total.backward()
        gradients[precision] = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name, exact in gradients["float32"].items():
        mixed = gradients["bfloat16"][name]
        assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all(), name
        assert F.cosine_similarity(mixed.flatten(), exact.flatten(), dim=0) > 0.98, name


@pytest.mark.parametrize("batch", [63, 64, 500])
def test_the_reparameterization_draws_the_same_noise_in_every_precision(batch):
    """PyTorch draws bfloat16 noise by another route than float32 noise (on some CPUs and versions, other
    numbers altogether): z must not depend on the autocast dtype, or a bfloat16 step is a step on other noise."""
    mu, logvar = torch.randn(batch, 2), torch.randn(batch, 2)
    torch.manual_seed(1)
    exact = models.reparameterize(mu, logvar)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = models.reparameterize(mu.bfloat16(), logvar.bfloat16())
    torch.manual_seed(1)
    eps = torch.randn(batch, 2)
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, mu.bfloat16().float() + eps * torch.exp(0.5 * logvar.bfloat16().float()))
    assert (mixed - exact).abs().max() < 0.05 * (1 + exact.abs().max())  # only mu and logvar were rounded


def test_bfloat16_autocast_keeps_the_function():
    torch.manual_seed(0)
    model = models.ConvVAE(latent_dim=2)
    z = torch.randn(32, 2)
    exact = model.decode(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.decode(z).float()
    assert (exact - mixed).abs().max() < 0.02  # bfloat16 keeps about 3 significant digits


@pytest.mark.parametrize("bad", [0, -1, 2.0, "2", True])
def test_bad_latent_dim_is_refused(bad):
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 1"):
        models.VAE(latent_dim=bad)


def test_unknown_kind_and_activation_are_refused():
    with pytest.raises(ValueError, match="kind must be one of .*conv_vae.*got .gan."):
        models.build("gan")
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'"):
        models.VAE(activation="sigmoid")


def test_latent_grid_is_the_originals():
    grid = models.latent_grid()
    assert grid.shape == (441, 2)
    assert torch.allclose(grid[0], torch.tensor([-3.0, -3.0])) and torch.allclose(grid[-1], torch.tensor([3.0, 3.0]))
    assert torch.allclose(grid[1], torch.tensor([-3.0, -2.7]))  # columns walk z2 in steps of 0.3
    assert torch.allclose(grid[21], torch.tensor([-2.7, -3.0]))  # rows walk z1


def test_deeper_mlp_vae_stacks_hidden_layers_and_keeps_the_one_layer_names():
    deep = models.VAE(latent_dim=50, hidden_dim=64, hidden_layers=2)
    sizes = [(m.in_features, m.out_features) for m in deep.modules() if isinstance(m, nn.Linear)]
    assert sizes == [(784, 64), (64, 64), (64, 50), (64, 50), (50, 64), (64, 64), (64, 784)]
    assert models.count_parameters(deep) == (784 * 64 + 64) + (64 * 64 + 64) + 2 * (64 * 50 + 50) \
        + (50 * 64 + 64) + (64 * 64 + 64) + (64 * 784 + 784)
    one_layer_names = ["encoder.0.weight", "encoder.0.bias", "to_mu.weight", "to_mu.bias", "to_logvar.weight",
                       "to_logvar.bias", "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias"]
    assert list(models.VAE(latent_dim=2).state_dict()) == one_layer_names  # shipped checkpoints still load
    with pytest.raises(ValueError, match="hidden_layers must be an integer >= 1"):
        models.VAE(hidden_layers=0)
