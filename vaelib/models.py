"""The course's three networks, layer for layer as in Day 9 of *10 Days of Grad*.

All three share one interface:
    encode(x)          x (B, 784) -> (mu (B, L), logvar (B, L))   (the autoencoder: (code, None))
    decode_logits(z)   z (B, L) -> logits (B, 784)                 (for the numerically stable loss)
    decode(z)          z (B, L) -> x_hat (B, 784) in [0, 1]
    forward(x)         -> (logits (B, 784), mu, logvar)            (a VAE samples z on the way)

The conditional VAE adds the digit label `y` to each: encode(x, y), decode_logits(z, y), forward(x, y).

Introduced in: 02_autoencoder (Autoencoder), 03_vae (VAE), 06_conv_vae (ConvVAE), 11_conditional (ConditionalVAE)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import MAX_HIDDEN_LAYERS, MAX_LATENT_DIM, check_choice, check_flag, check_latent_dim, check_positive_int, check_walk  # noqa: F401  (check_latent_dim: its home is checks.py)

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def activation_layer(name: str) -> nn.Module:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + eps * sigma with eps ~ N(0, I) and sigma = exp(logvar / 2).  (B, L) -> (B, L)

    The noise is drawn outside the network, so gradients flow through mu and logvar
    (Kingma and Welling 2014, section 2.4). It is drawn, and z computed, in float32 even under bfloat16
    autocast: PyTorch draws bfloat16 noise by another route, so the same seed would give another sample
    (a different draw, not a rounding of the same one) in each precision. Introduced in: 03_vae
    """
    dtype = torch.promote_types(mu.dtype, torch.float32)  # bfloat16 or float16 -> float32; float64 stays
    std = torch.exp(0.5 * logvar.to(dtype))  # (B, L)
    eps = torch.randn(std.shape, dtype=dtype, device=std.device)  # (B, L), whatever the autocast dtype
    return mu.to(dtype) + eps * std


class Autoencoder(nn.Module):
    """784 -> 400 -> L -> 400 -> 784, ReLU after each hidden layer, sigmoid out.

    The original also puts a ReLU on the L-sized code (`bottleneck_relu=True`); it folds the code into
    the positive quadrant, which chapter 02 shows. Introduced in: 02_autoencoder
    """

    def __init__(self, latent_dim: int = 2, hidden_dim: int = 400, bottleneck_relu: bool = True,
                 activation: str = "relu"):
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        check_positive_int("hidden_dim", hidden_dim, maximum=MAX_LATENT_DIM)
        self.bottleneck_relu = check_flag("bottleneck_relu", bottleneck_relu)
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
        check_positive_int("hidden_dim", hidden_dim, maximum=MAX_LATENT_DIM)
        check_positive_int("hidden_layers", hidden_layers, maximum=MAX_HIDDEN_LAYERS)
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
    - a stride that divides the kernel (k = s*r), on an input at least 4r pixels wide: read in the
      channels-last layout, the input is a matrix with one row per pixel, so one product
      (B*H*W, C_in) @ (C_in, C_out*k*k) gives every pixel's patch at once. Tap (s*p + a) of input
      pixel i lands on output row s*(i + p) + a, so the col2im is r*r shifted additions, one per
      (p, q), each filling all s*s "phases" (a, b) at once (`AddShiftedPatches`).
    Other shapes without padding, dilation or groups run PyTorch's kernel forward and a backward made of
    two ordinary convolutions (`TransposedConvolution`); the rest go to the parent. Same parameters and
    state-dict keys, so checkpoints load into either layer; outputs and gradients agree with
    `nn.ConvTranspose2d` (tests/test_models.py).
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
        if plain:
            return TransposedConvolution.apply(x, self.weight, self.bias, self.stride)
        return super().forward(x)

    def _as_linear(self, x: torch.Tensor) -> torch.Tensor:
        c_out, (k_h, k_w) = self.out_channels, self.kernel_size
        weight = self.weight.reshape(self.in_channels, c_out * k_h * k_w)  # (C_in, C_out*k*k)
        out = F.linear(x.flatten(1), weight.t())  # (B, C_in) -> (B, C_out*k*k)
        return out.view(-1, c_out, k_h, k_w) + self.bias.view(1, -1, 1, 1)  # (B, C_out, k, k)

    def _as_matmul_and_shifts(self, x: torch.Tensor) -> torch.Tensor:
        batch, c_in, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(batch * h * w, c_in)  # (B*H*W, C_in): no copy if x is channels-last
        patches = rows @ self.weight.reshape(c_in, -1)  # (B*H*W, C_out*k*k): every pixel's k x k patch
        stride = self.stride[0]
        out = AddShiftedPatches.apply(patches, (batch, h, w), self.out_channels, stride, self.kernel_size[0] // stride)
        return out + self.bias.view(1, -1, 1, 1)  # (B, C_out, s*(H + r - 1), s*(W + r - 1))


class AddShiftedPatches(torch.autograd.Function):
    """col2im for a stride s that divides the kernel k = s*r: each pixel's k x k patch added into the output.

    patches (B*H*W, C_out*k*k), the kernel's rows and columns ordered s*p + a -> out (B, C_out, s*(H+r-1),
    s*(W+r-1)). Its gradient is a sliding-window view of the output's gradient: patch tap (p, a, q, b) of
    pixel (i, j) reads output pixel (s*(i + p) + a, s*(j + q) + b). The backward copies that view once,
    where autograd through r*r slice additions would build r*r zero-filled tensors of the patches' size.
    """

    @staticmethod
    def forward(ctx, patches, image_size, c_out, s, r):  # r: taps per phase, k = s*r
        batch, h, w = image_size
        ctx.shape = (batch, h, w, c_out, s, r)
        taps = patches.view(batch, h, w, c_out, r, s, r, s)  # kernel row s*p + a, column s*q + b
        taps = taps.permute(0, 3, 1, 5, 2, 7, 4, 6)  # (B, C_out, i, a, j, b, p, q)
        out = patches.new_zeros(batch, c_out, h + r - 1, s, w + r - 1, s)  # (B, C_out, row, a, column, b)
        for p in range(r):
            for q in range(r):
                out[:, :, p : p + h, :, q : q + w, :] += taps[..., p, q]  # tap (p, q) shifts by (p, q)
        return out.view(batch, c_out, s * (h + r - 1), s * (w + r - 1))

    @staticmethod
    def backward(ctx, grad):
        batch, h, w, c_out, s, r = ctx.shape
        grad = grad.reshape(batch, c_out, h + r - 1, s, w + r - 1, s)  # (B, C_out, row, a, column, b)
        windows = grad.unfold(2, r, 1).unfold(4, r, 1)  # (B, C_out, i, a, j, b, p, q): row i + p, column j + q
        grad_patches = windows.permute(0, 2, 4, 1, 6, 3, 7, 5).reshape(batch * h * w, -1)  # (B*H*W, C_out*k*k)
        return grad_patches, None, None, None, None


class TransposedConvolution(torch.autograd.Function):
    """`F.conv_transpose2d(x, weight, bias, stride)` (no padding, dilation or groups), whose backward pass
    is two ordinary convolutions:
    - the input's gradient: a transposed convolution is the adjoint of a convolution, so the gradient is
      the output's gradient convolved with the same weights at the same stride;
    - the weights' gradient, dW[i, o, u, v] = sum over images b and input pixels (p, q) of
      x[b, i, p, q] * g[b, o, s*p + u, s*q + v], is a convolution too: of g with images and channels
      swapped, (C_out, B, H', W'), by x likewise swapped, (C_in, B, H, W), read s pixels apart (dilation s).
    On the CPU, oneDNN runs these two forward convolutions faster than its own backward kernels for the
    decoder's 4x4 -> 12x12 layer, on AVX-512 and on AVX2 alike (benchmarks/train_speed.py).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride):
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return F.conv_transpose2d(x, weight, bias, stride=stride)  # (B, C_in, H, W) -> (B, C_out, H', W')

    @staticmethod
    def backward(ctx, grad):  # grad (B, C_out, H', W')
        x, weight = ctx.saved_tensors
        x, weight = x.to(grad.dtype), weight.to(grad.dtype)  # under autocast the gradient is bfloat16
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight, stride=ctx.stride)  # (B, C_in, H, W)
        if ctx.needs_input_grad[1]:
            swapped = F.conv2d(grad.transpose(0, 1), x.transpose(0, 1), dilation=ctx.stride)  # (C_out, C_in, k, k)
            grad_weight = swapped.transpose(0, 1)  # (C_in, C_out, k, k), as the weight
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))  # (C_out,)
        return grad_x, grad_weight, grad_bias, None


class ConvVAE(nn.Module):
    """The convolutional VAE of the original, with the sizes of each stage.

    Encoder: (B, 1, 28, 28) -> conv k4 s2 -> (B, 32, 13, 13) -> conv k4 s2 -> (B, 64, 5, 5)
             -> conv k3 s2 -> (B, 128, 2, 2) -> flatten (B, 512) -> mu, logvar (B, L)
    Decoder: (B, L) -> linear (B, 1024) -> (B, 1024, 1, 1) -> convT k4 s2 -> (B, 256, 4, 4)
             -> convT k6 s2 -> (B, 128, 12, 12) -> convT k6 s2 -> (B, 1, 28, 28)

    `fast=True` computes the transposed convolutions as `FastConvTranspose2d` does (the first, on a 1x1
    input, as a linear map; the middle with a backward of two convolutions; the last as a matrix product
    and shifted additions), and stores the other convolutions' weights channels-last (channels innermost
    in memory): PyTorch's CPU kernels (oneDNN) run them fastest so, and their outputs come channels-last,
    so the last layer reads each pixel's channels as one matrix row without a copy. The same function
    and parameters, fewer CPU cycles (benchmarks/train_speed.py).
    Introduced in: 06_conv_vae
    """

    def __init__(self, latent_dim: int = 2, activation: str = "relu", fast: bool = True):
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        check_flag("fast", fast)
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
        if fast:  # weights stored channels-last: the convolutions then output channels-last activations too
            self.encoder.to(memory_format=torch.channels_last)
            self.decoder[2].to(memory_format=torch.channels_last)  # 4x4 input: TransposedConvolution

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


def one_hot(y: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Labels as rows of weights over the classes: int labels (B,) -> one-hot (B, C); (B, C) passes as float.

    A (B, C) input may be any weights (e.g. half "3", half "8"): the conditional VAE concatenates what it gets.
    Introduced in: 11_conditional
    """
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"the labels must be a torch.Tensor, (B,) digits or (B, {num_classes}) weights, "
                         f"got {type(y).__name__}")
    if y.ndim == 1 and not y.is_floating_point():
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {y.min().item()}..{y.max().item()}")
        return F.one_hot(y.long(), num_classes).float()  # (B,) -> (B, C)
    if y.ndim == 2 and y.shape[1] == num_classes:
        return y.float()  # (B, C)
    raise ValueError(f"labels must be integer digits (B,) or weights (B, {num_classes}), got "
                     f"{str(y.dtype)[6:]} {tuple(y.shape)}")


class ConditionalVAE(nn.Module):
    """The MLP VAE told the digit: the label's one-hot vector joins the encoder's and the decoder's input.

    Encoder: [x (B, 784), y (B, 10)] -> (B, 794) -> 400 -> (mu, logvar) in R^L, that is q(z | x, y);
    decoder: [z (B, L), y (B, 10)] -> (B, L + 10) -> 400 -> 784 logits, that is p(x | z, y); the prior
    p(z) = N(0, I) stays the same for every label. Sohn, Lee and Yan (2015), "Learning Structured Output
    Representation using Deep Conditional Generative Models"; Kingma, Rezende, Mohamed and Welling (2014),
    "Semi-supervised Learning with Deep Generative Models" (model M2 with its labels observed).
    `y`: digits (B,) or one-hot rows (B, 10) (`one_hot`). Introduced in: 11_conditional
    """

    def __init__(self, latent_dim: int = 2, hidden_dim: int = 400, activation: str = "relu", num_classes: int = 10):
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        check_positive_int("hidden_dim", hidden_dim, maximum=MAX_LATENT_DIM)
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2, maximum=1000)
        self.encoder = nn.Sequential(nn.Linear(784 + num_classes, hidden_dim),
                                     activation_layer(activation))  # (B, 794) -> (B, 400)
        self.to_mu = nn.Linear(hidden_dim, latent_dim)  # (B, 400) -> (B, L)
        self.to_logvar = nn.Linear(hidden_dim, latent_dim)  # (B, 400) -> (B, L)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden_dim), nn.ReLU(),  # (B, L + 10) -> (B, 400)
            nn.Linear(hidden_dim, 784),  # (B, 400) -> (B, 784) logits
        )

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(torch.cat([x, one_hot(y, self.num_classes).to(x)], dim=1))  # (B, 794) -> (B, 400)
        return self.to_mu(h), self.to_logvar(h)  # (B, L), (B, L)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, one_hot(y, self.num_classes).to(z)], dim=1))  # (B, L + 10) -> (B, 784)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z, y))  # (B, 784) in [0, 1]

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        mu, logvar = self.encode(x, y)
        z = reparameterize(mu, logvar)  # (B, L)
        return self.decode_logits(z, y), mu, logvar


def is_conditional(model: nn.Module) -> bool:
    """Whether `model` takes the digit label beside each image (a ConditionalVAE). Introduced in: 11_conditional"""
    return isinstance(model, ConditionalVAE)


MODEL_KINDS = {"autoencoder": Autoencoder, "vae": VAE, "conv_vae": ConvVAE, "cvae": ConditionalVAE}


def build(kind: str, latent_dim: int = 2, activation: str = "relu", **options) -> nn.Module:
    """A model by its kind name: 'autoencoder', 'vae', 'conv_vae' or 'cvae'; `options` go to its constructor."""
    check_choice("kind", kind, MODEL_KINDS)
    return MODEL_KINDS[kind](latent_dim=latent_dim, activation=activation, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def latent_grid(low: float = -3.0, high: float = 3.0, steps: int = 21) -> torch.Tensor:
    """The points of a steps x steps grid over [low, high]^2, rows z1 and columns z2.  -> (steps^2, 2)"""
    low, high, steps = check_walk(low, high, steps, minimum=1)
    axis = torch.linspace(low, high, steps)
    z1, z2 = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([z1.flatten(), z2.flatten()], dim=1)

