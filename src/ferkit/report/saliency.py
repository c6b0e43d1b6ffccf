"""What a model looks at: vanilla-gradient saliency and Grad-CAM, and image grids of both.

- **Vanilla gradient** (Simonyan et al. 2014): ``|d score / d pixel|``, the largest over
  colour channels: which pixels change the class score most.
- **Grad-CAM** (Selvaraju et al. 2017): the last convolutional feature maps weighted by
  the spatially averaged gradient of the class score, ReLU, upsampled to the input.
  The layer is found automatically: the last module (in execution order) whose output
  is a ``(B, C, h, w)`` map with ``h * w > 1``, i.e. the end of the convolutional part
  before global pooling / flattening (``forward_features`` of every zoo model ends there).

Maps are float arrays in [0, 1] at the model input's spatial size, one per image, for
the predicted class unless a target class is given. For Deep-Emotion the maps refer to
the input image (the gradient flows through its spatial transformer); Grad-CAM sees the
features of the warped image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.engine.preprocess import Preprocess

log = logging.getLogger(__name__)


def find_cam_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the module Grad-CAM uses: the last one run whose output is a 4-D map larger than 1x1."""
    order: list[str] = []
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(m, i, o, name=name):
            if isinstance(o, torch.Tensor) and o.ndim == 4 and o.shape[2] * o.shape[3] > 1:
                order.append(name)

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ValueError(f"{type(model).__name__} has no module with a spatial (B, C, h, w) output: Grad-CAM needs one")
    return order[-1]


def _targets(logits: torch.Tensor, target: torch.Tensor | list[int] | None) -> torch.Tensor:
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, device=logits.device, dtype=torch.long).reshape(-1)
    if len(t) != len(logits):
        raise ValueError(f"got {len(t)} target classes for {len(logits)} images")
    if (t < 0).any() or (t >= logits.shape[1]).any():
        raise ValueError(f"target classes {t.tolist()} outside 0..{logits.shape[1] - 1}")
    return t


def _normalise(maps: torch.Tensor) -> np.ndarray:
    """Per-map scaling to [0, 1] by the map's maximum (all-zero maps stay zero)."""
    flat = maps.flatten(1)
    peak = flat.max(1).values.clamp_min(1e-12).view(-1, 1, 1)
    return (maps / peak).clamp_(0, 1).detach().cpu().numpy().astype(np.float32)


def vanilla_saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor | list[int] | None = None) -> np.ndarray:
    """Gradient saliency ``(N, H, W)`` in [0, 1] for normalised input ``x`` ``(N, C, H, W)`` (predicted class by default)."""
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        t = _targets(logits, target)
        score = logits.gather(1, t[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x)
    return _normalise(grad.abs().amax(1))  # (N, H, W)


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | list[int] | None = None,
             layer: str | None = None) -> np.ndarray:
    """Grad-CAM ``(N, H, W)`` in [0, 1] at the input's size; ``layer`` names the module (default: :func:`find_cam_layer`)."""
    model.eval()
    name = layer or find_cam_layer(model, x)
    module = model.get_submodule(name)
    acts: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # so the graph reaches the features even if all weights were frozen
            logits = model(x)
            t = _targets(logits, target)
            a = acts[-1]  # (N, C, h, w)
            (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), a)
    finally:
        handle.remove()
    weights = g.mean((2, 3), keepdim=True)  # (N, C, 1, 1): importance of each feature map
    cam = F.relu((weights * a).sum(1, keepdim=True))  # (N, 1, h, w)
    cam = F.interpolate(cam.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _normalise(cam)


@dataclass
class Explanation:
    """One image as the model sees it, with its maps and prediction."""

    image: np.ndarray  # uint8 (S, S) grey or (S, S, 3) RGB, at the model's input size
    saliency: np.ndarray  # float (S, S) in [0, 1]
    gradcam: np.ndarray  # float (S, S) in [0, 1]
    pred: int
    confidence: float
    probs: np.ndarray  # (K,)
    true: int | None
    label_names: tuple[str, ...]
    name: str = ""

    @property
    def title(self) -> str:
        pred = f"pred {self.label_names[self.pred]} {self.confidence:.2f}"
        true = f"true {self.label_names[self.true]} | " if self.true is not None else ""
        return f"{true}{pred}"


def explain_images(
    model: nn.Module,
    pre: Preprocess,
    images: list[np.ndarray] | np.ndarray,
    labels: list[int] | np.ndarray | None = None,
    names: list[str] | None = None,
    target: list[int] | None = None,
    layer: str | None = None,
) -> list[Explanation]:
    """Saliency and Grad-CAM of ``model`` for face crops ``images`` (uint8, any size, grey or RGB).

    Images are brought to the model's size and channels by ``pre`` (as in deployment).
    ``labels``: true class indices (shown in grids); ``target``: explain these classes
    instead of the predicted ones.
    """
    if len(images) == 0:
        raise ValueError("no images to explain")
    batch = pre.prepare_images(images)  # uint8 (N, S, S[, 3])
    device = next(model.parameters()).device
    x = pre.to_tensor(batch, device)  # (N, C, S, S), normalised
    model.eval()
    with torch.no_grad():
        probs = pre.probs(model(x)).cpu().numpy()
    sal = vanilla_saliency(model, x, target)
    cam = grad_cam(model, x, target, layer)
    out = []
    for i in range(len(batch)):
        true = None if labels is None else int(labels[i])
        out.append(Explanation(batch[i], sal[i], cam[i], int(probs[i].argmax()), float(probs[i].max()), probs[i], true,
                               tuple(pre.label_names), names[i] if names else ""))
    return out


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 image with ``heat`` (``(H, W)`` in [0, 1]) blended over it in the 'jet' colour map."""
    from ferkit.plots.figures import heat_overlay

    return heat_overlay(image, heat, alpha)


def save_explanation_grid(explanations: list[Explanation], path: str | Path | BinaryIO, title: str = "",
                          per_row: int | None = None) -> Path | BinaryIO:
    """A PNG grid (to a path or a binary file object): per image original | vanilla saliency | Grad-CAM overlay.

    Each image is titled with its true (when known) and predicted label; mistakes in red.
    """
    from ferkit.plots.figures import plot_explanations

    if not explanations:
        raise ValueError("no explanations to draw")
    cells = [{"image": e.image, "saliency": e.saliency, "gradcam": e.gradcam, "wrong": e.true is not None and e.true != e.pred,
              "title": e.title + (f"\n{Path(e.name).name[:30]}" if e.name else "")} for e in explanations]
    return plot_explanations(cells, path, title, per_row)
