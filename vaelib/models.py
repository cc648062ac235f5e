"""The course's three networks, layer for layer as in Day 9 of *10 Days of Grad*.

All three share one interface:
    encode(x)          x (B, 784) -> (mu (B, L), logvar (B, L))   (the autoencoder: (code, None))
    decode_logits(z)   z (B, L) -> logits (B, 784)                 (for the numerically stable loss)
    decode(z)          z (B, L) -> x_hat (B, 784) in [0, 1]
    forward(x)         -> (logits (B, 784), mu, logvar)            (a VAE samples z on the way)

Introduced in: 02_autoencoder (Autoencoder), 03_vae (VAE), 06_conv_vae (ConvVAE)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_latent_dim, check_positive_int  # noqa: F401  (check_latent_dim: its home is checks.py)

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def activation_layer(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + eps * sigma with eps ~ N(0, I) and sigma = exp(logvar / 2).  (B, L) -> (B, L)

    The noise is drawn outside the network, so gradients flow through mu and logvar
    (Kingma and Welling 2014, section 2.4). Introduced in: 03_vae
    """
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    return mu + eps * std


class Autoencoder(nn.Module):
    """784 -> 400 -> L -> 400 -> 784, ReLU after each hidden layer, sigmoid out.

    The original also puts a ReLU on the L-sized code (`bottleneck_relu=True`); it folds the code into
    the positive quadrant, which chapter 02 shows. Introduced in: 02_autoencoder
    """

    def __init__(self, latent_dim: int = 2, hidden_dim: int = 400, bottleneck_relu: bool = True,
                 activation: str = "relu"):
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.bottleneck_relu = bottleneck_relu
        self.encoder = nn.Sequential(
            nn.Linear(784, hidden_dim), activation_layer(activation),  # (B, 784) -> (B, 400)
            nn.Linear(hidden_dim, latent_dim),  # (B, 400) -> (B, L)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(),  # (B, L) -> (B, 400)
            nn.Linear(hidden_dim, 784),  # (B, 400) -> (B, 784) logits
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        code = self.encoder(x)  # (B, L)
        return (F.relu(code) if self.bottleneck_relu else code), None

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, L) -> (B, 784)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))  # (B, 784) in [0, 1]

    def forward(self, x: torch.Tensor):
        code, _ = self.encode(x)
        return self.decode_logits(code), code, None


class VAE(nn.Module):
    """The MLP VAE: 784 -> 400 -> (mu, logvar) in R^L, then L -> 400 -> 784.

    `hidden_layers` stacks more hidden layers of `hidden_dim` units on each side (784 -> H -> H -> ...):
    the binarized-MNIST model of chapter 9 uses two, as Burda et al. (2016) do.

    Introduced in: 03_vae
    """

    def __init__(self, latent_dim: int = 2, hidden_dim: int = 400, activation: str = "relu", hidden_layers: int = 1):
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        check_positive_int("hidden_layers", hidden_layers, maximum=8)
        encoder = [nn.Linear(784, hidden_dim), activation_layer(activation)]  # (B, 784) -> (B, H)
        decoder = [nn.Linear(latent_dim, hidden_dim), nn.ReLU()]  # (B, L) -> (B, H)
        for _ in range(hidden_layers - 1):
            encoder += [nn.Linear(hidden_dim, hidden_dim), activation_layer(activation)]  # (B, H) -> (B, H)
            decoder += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]  # (B, H) -> (B, H)
        self.encoder = nn.Sequential(*encoder)
        self.to_mu = nn.Linear(hidden_dim, latent_dim)  # (B, H) -> (B, L)
        self.to_logvar = nn.Linear(hidden_dim, latent_dim)  # (B, H) -> (B, L)
        self.decoder = nn.Sequential(*decoder, nn.Linear(hidden_dim, 784))  # ... -> (B, 784) logits

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, 400)
        return self.to_mu(h), self.to_logvar(h)  # (B, L), (B, L)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, L) -> (B, 784)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))  # (B, 784) in [0, 1]

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)  # (B, L)
        return self.decode_logits(z), mu, logvar


class FastConvTranspose2d(nn.ConvTranspose2d):
    """An `nn.ConvTranspose2d` computed the way a CPU does it fastest, with the same function.

    A transposed convolution multiplies each input pixel's C_in values by W (C_in, C_out*k*k) and adds
    the resulting k x k patch into the output at stride s ("col2im"). Two shapes allow a cheaper route:
    - a 1x1 input: the patch is the whole output, so the layer is one matrix product,
      out = x (B, C_in) @ W (C_in, C_out*k*k) + b;
    - a stride that divides the kernel (k = s*r), on an input at least 4r pixels wide: tap (s*p + a) of
      an input pixel i lands on output row s*(i + p) + a. So after the matrix product, the col2im is
      r*r shifted additions of small blocks, one per (p, q), each filling all s*s "phases" (a, b) at
      once; a reshape interleaves the phases into the output. Everything stays in the default memory
      layout, and the backward pass is two batched matrix products and r*r slices.
    Other shapes go to the parent's forward. Same parameters and state-dict keys, so checkpoints load
    into either layer; outputs and gradients agree with `nn.ConvTranspose2d` (tests/test_models.py).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = (self.padding == (0, 0) and self.output_padding == (0, 0) and self.dilation == (1, 1)
                 and self.groups == 1 and x.ndim == 4)
        if plain and x.shape[-2:] == (1, 1):
            return self._as_linear(x)
        stride, kernel = self.stride[0], self.kernel_size[0]
        square = self.stride == (stride, stride) and self.kernel_size == (kernel, kernel)
        if plain and square and kernel % stride == 0 and min(x.shape[-2:]) >= 4 * (kernel // stride):
            return self._as_matmul_and_shifts(x)
        return super().forward(x)

    def _as_linear(self, x: torch.Tensor) -> torch.Tensor:
        c_out, (k_h, k_w) = self.out_channels, self.kernel_size
        weight = self.weight.reshape(self.in_channels, c_out * k_h * k_w)  # (C_in, C_out*k*k)
        out = F.linear(x.flatten(1), weight.t())  # (B, C_in) -> (B, C_out*k*k)
        return out.view(-1, c_out, k_h, k_w) + self.bias.view(1, -1, 1, 1)  # (B, C_out, k, k)

    def _as_matmul_and_shifts(self, x: torch.Tensor) -> torch.Tensor:
        s, r = self.stride[0], self.kernel_size[0] // self.stride[0]  # stride, taps per phase
        batch, c_in, h, w = x.shape
        c_out = self.out_channels
        weight = self.weight.reshape(c_in, c_out * s * s * r * r).t()  # (C_out*k*k, C_in)
        patches = torch.matmul(weight, x.flatten(2))  # (B, C_out*k*k, H*W): every pixel's patch
        patches = patches.view(batch, c_out, r, s, r, s, h, w)  # kernel rows k = s*p + a, columns s*q + b
        out = patches.new_zeros(batch, c_out, s, s, h + r - 1, w + r - 1)  # (B, C_out, a, b, row, column)
        for p in range(r):
            for q in range(r):
                out[..., p : p + h, q : q + w] += patches[:, :, p, :, q]  # tap (p, q) shifts by (p, q)
        out = out.permute(0, 1, 4, 2, 5, 3)  # (B, C_out, row, a, column, b): interleave the phases
        return out.reshape(batch, c_out, s * (h + r - 1), s * (w + r - 1)) + self.bias.view(1, -1, 1, 1)


class ConvVAE(nn.Module):
    """The convolutional VAE of the original, with the sizes of each stage.

    Encoder: (B, 1, 28, 28) -> conv k4 s2 -> (B, 32, 13, 13) -> conv k4 s2 -> (B, 64, 5, 5)
             -> conv k3 s2 -> (B, 128, 2, 2) -> flatten (B, 512) -> mu, logvar (B, L)
    Decoder: (B, L) -> linear (B, 1024) -> (B, 1024, 1, 1) -> convT k4 s2 -> (B, 256, 4, 4)
             -> convT k6 s2 -> (B, 128, 12, 12) -> convT k6 s2 -> (B, 1, 28, 28)

    `fast=True` computes the transposed convolutions as `FastConvTranspose2d` does (the first, on a 1x1
    input, as a linear map; the last as a matrix product and shifted additions): the same function and parameters,
    fewer CPU cycles. Introduced in: 06_conv_vae
    """

    def __init__(self, latent_dim: int = 2, activation: str = "relu", fast: bool = True):
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        act = lambda: activation_layer(activation)  # noqa: E731
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2), act(),  # (B, 1, 28, 28) -> (B, 32, 13, 13)
            nn.Conv2d(32, 64, 4, stride=2), act(),  # -> (B, 64, 5, 5)
            nn.Conv2d(64, 128, 3, stride=2), act(),  # -> (B, 128, 2, 2)
            nn.Flatten(),  # -> (B, 512)
        )
        self.to_mu = nn.Linear(512, latent_dim)  # (B, 512) -> (B, L)
        self.to_logvar = nn.Linear(512, latent_dim)  # (B, 512) -> (B, L)
        deconv = FastConvTranspose2d if fast else nn.ConvTranspose2d
        self.decoder_input = nn.Linear(latent_dim, 1024)  # (B, L) -> (B, 1024)
        self.decoder = nn.Sequential(
            deconv(1024, 256, 4, stride=2), nn.ReLU(),  # (B, 1024, 1, 1) -> (B, 256, 4, 4)
            deconv(256, 128, 6, stride=2), nn.ReLU(),  # -> (B, 128, 12, 12)
            deconv(128, 1, 6, stride=2),  # -> (B, 1, 28, 28) logits
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x.view(-1, 1, 28, 28))  # (B, 784) -> (B, 512)
        return self.to_mu(h), self.to_logvar(h)  # (B, L), (B, L)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.decoder_input(z)).view(-1, 1024, 1, 1)  # (B, L) -> (B, 1024, 1, 1)
        return self.decoder(h).flatten(1)  # (B, 1, 28, 28) -> (B, 784)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))  # (B, 784) in [0, 1]

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)  # (B, L)
        return self.decode_logits(z), mu, logvar


MODEL_KINDS = {"autoencoder": Autoencoder, "vae": VAE, "conv_vae": ConvVAE}


def build(kind: str, latent_dim: int = 2, activation: str = "relu", **options) -> nn.Module:
    """A model by its kind name: 'autoencoder', 'vae' or 'conv_vae'; `options` go to its constructor."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}: choose one of {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[kind](latent_dim=latent_dim, activation=activation, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def latent_grid(low: float = -3.0, high: float = 3.0, steps: int = 21) -> torch.Tensor:
    """The points of a steps x steps grid over [low, high]^2, rows z1 and columns z2.  -> (steps^2, 2)"""
    axis = torch.linspace(low, high, steps)
    z1, z2 = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([z1.flatten(), z2.flatten()], dim=1)

