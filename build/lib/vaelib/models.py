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

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def check_latent_dim(latent_dim) -> int:
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be an integer >= 1, got {latent_dim!r}")
    return latent_dim


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

    Introduced in: 03_vae
    """

    def __init__(self, latent_dim: int = 2, hidden_dim: int = 400, activation: str = "relu"):
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.encoder = nn.Sequential(nn.Linear(784, hidden_dim), activation_layer(activation))  # (B, 784) -> (B, 400)
        self.to_mu = nn.Linear(hidden_dim, latent_dim)  # (B, 400) -> (B, L)
        self.to_logvar = nn.Linear(hidden_dim, latent_dim)  # (B, 400) -> (B, L)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(),  # (B, L) -> (B, 400)
            nn.Linear(hidden_dim, 784),  # (B, 400) -> (B, 784) logits
        )

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
    """An `nn.ConvTranspose2d` computed the way a CPU does fastest, with the same function.

    - On a 1x1 input, a transposed convolution spreads each input channel's value over one
      (C_out, k, k) patch: out = x (B, C_in) @ W (C_in, C_out*k*k) + b, one matrix product.
    - When the stride s divides the kernel k, every output pixel of phase (a, b) = (row mod s,
      column mod s) sees only the taps W[..., a + s*p, b + s*q]: the layer is a plain convolution with
      (k/s) x (k/s) kernels and C_out*s*s output channels, whose phases `pixel_shuffle` interleaves
      back (the "sub-pixel" form of Shi et al. 2016). oneDNN runs that convolution directly, in
      channels-last memory, with no col2im. Used where the zero padding it needs costs little
      (at most 1.5x the multiply-adds: inputs at least 4x the kernel's k/s).
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
            return self._as_subpixel_conv(x)
        return super().forward(x)

    def _as_linear(self, x: torch.Tensor) -> torch.Tensor:
        c_out, (k_h, k_w) = self.out_channels, self.kernel_size
        weight = self.weight.reshape(self.in_channels, c_out * k_h * k_w)  # (C_in, C_out*k*k)
        out = F.linear(x.flatten(1), weight.t())  # (B, C_in) -> (B, C_out*k*k)
        return out.view(-1, c_out, k_h, k_w) + self.bias.view(1, -1, 1, 1)  # (B, C_out, k, k)

    def _as_subpixel_conv(self, x: torch.Tensor) -> torch.Tensor:
        s, r = self.stride[0], self.kernel_size[0] // self.stride[0]  # stride, taps per phase
        c_in, c_out = self.in_channels, self.out_channels
        # W (C_in, C_out, k, k) with k = s*p + a  ->  (C_out, s, s, C_in, r, r), taps reversed: a convolution
        # correlates where a transposed convolution scatters.
        weight = self.weight.view(c_in, c_out, r, s, r, s).permute(1, 3, 5, 0, 2, 4).flip(-1, -2)
        weight = weight.reshape(c_out * s * s, c_in, r, r)
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's fastest layout
        phases = F.conv2d(x, weight, self.bias.repeat_interleave(s * s), padding=r - 1)  # (B, C_out*s*s, H+r-1, W+r-1)
        return F.pixel_shuffle(phases, s)  # (B, C_out, s*(H+r-1), s*(W+r-1)) = (B, C_out, (H-1)*s + k, ...)


class ConvVAE(nn.Module):
    """The convolutional VAE of the original, with the sizes of each stage.

    Encoder: (B, 1, 28, 28) -> conv k4 s2 -> (B, 32, 13, 13) -> conv k4 s2 -> (B, 64, 5, 5)
             -> conv k3 s2 -> (B, 128, 2, 2) -> flatten (B, 512) -> mu, logvar (B, L)
    Decoder: (B, L) -> linear (B, 1024) -> (B, 1024, 1, 1) -> convT k4 s2 -> (B, 256, 4, 4)
             -> convT k6 s2 -> (B, 128, 12, 12) -> convT k6 s2 -> (B, 1, 28, 28)

    `fast=True` computes the first transposed convolution, whose input is 1x1, as a linear map
    (`FastConvTranspose2d`): the same function and parameters, fewer CPU cycles. Introduced in: 06_conv_vae
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

