"""ipywidgets explorers: sliders over latent coordinates that decode live, and a beta picker.

Each explorer keeps its state in plain attributes (`sliders`, `image`, `decoded`), so tests can set
a slider's value and read what was drawn without a browser. Introduced in: 05_latent_walk
"""
from __future__ import annotations

import io

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib import pyplot as plt

from . import plots
from .evaluate import model_device


def png_bytes(image: np.ndarray, scale: int = 4) -> bytes:
    """A (28, 28) array in [0, 1] as PNG bytes, enlarged `scale` times without smoothing."""
    big = np.kron(np.clip(image, 0, 1), np.ones((scale, scale)))
    buffer = io.BytesIO()
    plt.imsave(buffer, big, cmap="gray", vmin=0, vmax=1, format="png")
    return buffer.getvalue()


class LatentExplorer:
    """One slider per latent coordinate; moving any of them decodes z and redraws the digit.

    >>> explorer = widgets.LatentExplorer(model); explorer   # in a notebook cell
    >>> explorer.sliders[0].value = 1.5; explorer.decoded   # (784,) in [0, 1]
    """

    def __init__(self, model, low: float = -3.0, high: float = 3.0, step: float = 0.1, scale: int = 5,
                 start: torch.Tensor | None = None):
        self.model = model.eval()
        start = torch.zeros(model.latent_dim) if start is None else start
        self.sliders = [
            widgets.FloatSlider(value=float(start[u]), min=low, max=high, step=step, description=f"z{u + 1}",
                                continuous_update=True, layout=widgets.Layout(width="320px"))
            for u in range(model.latent_dim)
        ]
        self.scale = scale
        size = f"{28 * scale}px"  # fixed and kept at the top: a flex row would stretch it to the sliders' height
        self.image = widgets.Image(format="png",
                                   layout=widgets.Layout(width=size, height=size, align_self="flex-start"))
        for slider in self.sliders:
            slider.observe(self._redraw, names="value")
        self.widget = widgets.HBox([widgets.VBox(self.sliders), self.image])
        self._redraw()

    @property
    def z(self) -> torch.Tensor:
        return torch.tensor([[s.value for s in self.sliders]], dtype=torch.float32)  # (1, L)

    def _redraw(self, change=None) -> None:
        with torch.no_grad():
            self.decoded = self.model.decode(self.z.to(model_device(self.model)))[0].cpu()  # (784,)
        self.image.value = png_bytes(self.decoded.view(28, 28).numpy(), self.scale)

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


class BetaExplorer:
    """A slider over beta that redraws the test set's latent means for the model trained with it.

    The scatter is drawn to PNG bytes shown by an `Image` widget, like LatentExplorer's digit: an
    `Output` widget with `clear_output(wait=True)` made headless runs (papermill, the book's build)
    stall at this cell now and then, the kernel idle and the client waiting for its reply.
    """

    def __init__(self, encoded: dict[float, tuple[torch.Tensor, torch.Tensor]], figsize=(5, 5)):
        self.encoded = encoded  # beta -> (mu (N, 2), labels (N,))
        betas = sorted(encoded)
        self.slider = widgets.SelectionSlider(options=betas, value=betas[0], description="beta")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width=f"{figsize[0] * 80}px"))
        self.figsize = figsize
        self.slider.observe(self._redraw, names="value")
        self.widget = widgets.VBox([self.slider, self.image])
        self._redraw()

    def _redraw(self, change=None) -> None:
        beta = self.slider.value
        mu, labels = self.encoded[beta]
        fig, ax = plt.subplots(figsize=self.figsize)
        plots.latent_scatter(mu, labels, ax=ax, title=f"latent means, beta = {beta:g}")
        reach = 1.15 * mu.abs().quantile(0.995).item()  # each model's own range: beta = 0 reaches far beyond 3
        ax.set_xlim(-reach, reach)  # z1 across, z2 up, one scale on both axes
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        plt.close(fig)  # drawn once, into the image; not shown again by the notebook
        self.image.value = buffer.getvalue()
        self.shown_beta = beta
        self.figure = fig

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)
