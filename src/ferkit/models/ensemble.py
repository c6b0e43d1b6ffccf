"""An ensemble of trained models as one ``nn.Module``: it averages the members' class probabilities.

The ensemble takes the input of its first member (size, channels, normalisation) and hands every
member the input that member was trained on: the pixels are un-normalised, brought to the member's
channels (grey <-> RGB) and size (bilinear, antialiased), and normalised with the member's own
mean and std. Members may order their classes differently, or know more of them (an 8-class FER+
model in a 7-class FER2013 ensemble): each member's probabilities are picked by class name in the
ensemble's order and renormalised over those classes. The output is the log of the weighted mean
probability, so softmax of it gives that mean and everything that takes logits takes the ensemble.

Checkpoints of ensembles are built by :func:`ferkit.engine.checkpoint.ensemble_checkpoint`; this
module knows nothing of files, only of modules and plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ITU-R BT.601 luma, as OpenCV's RGB -> grey conversion (ferkit.imageio.to_model_channels).
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class MemberInput:
    """What one member expects: its input side, channels and normalisation, and its class names; and the
    temperature its logits are divided by (its own calibration) before its probabilities join the mean."""

    input_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label_names: tuple[str, ...]
    temperature: float = 1.0


class Ensemble(nn.Module):
    """Weighted mean of the members' probabilities over ``inputs[0]``'s classes; returns its log.

    ``members``: trained modules (logits out). ``inputs``: a :class:`MemberInput` per member; the
    first one is also the ensemble's input and class order. ``weights``: one per member (default
    equal), normalised to sum to 1.
    """

    def __init__(self, members: Sequence[nn.Module], inputs: Sequence[MemberInput], weights: Sequence[float] | None = None):
        super().__init__()
        if len(members) < 2 or len(members) != len(inputs):
            raise ValueError(f"an ensemble needs two or more members, each with its input; got {len(members)} "
                             f"members and {len(inputs)} inputs")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or min(weights) <= 0:
            raise ValueError(f"expected {len(members)} positive member weights, got {weights}")
        self.members = nn.ModuleList(members)
        self.inputs = tuple(inputs)
        first = self.inputs[0]
        self.label_names = first.label_names
        for i, inp in enumerate(self.inputs):
            missing = [n for n in first.label_names if n not in inp.label_names]
            if missing:
                raise ValueError(f"ensemble member {i} has no class {missing} (its classes: {list(inp.label_names)}); "
                                 f"every member must know the first member's classes {list(first.label_names)}")
            self.register_buffer(f"pick{i}", torch.tensor([inp.label_names.index(n) for n in first.label_names]),
                                 persistent=False)
        total = sum(weights)
        self.weights = tuple(w / total for w in weights)
        self.register_buffer("mean", torch.tensor(first.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(first.std).view(1, -1, 1, 1), persistent=False)

    def _member_input(self, pixels: torch.Tensor, inp: MemberInput) -> torch.Tensor:
        """``pixels``: float (N, C, S, S) in [0, 1] at the ensemble's input -> the member's normalised input."""
        x = pixels
        if inp.channels != x.shape[1]:
            if inp.channels == 3:
                x = x.expand(-1, 3, -1, -1)
            else:
                luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
                x = (x * luma).sum(1, keepdim=True)
        if inp.input_size != x.shape[-1]:
            x = F.interpolate(x, size=(inp.input_size, inp.input_size), mode="bilinear", align_corners=False,
                              antialias=inp.input_size < x.shape[-1])
        mean = torch.tensor(inp.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(inp.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x * self.std + self.mean
        total = None
        for i, (member, inp, w) in enumerate(zip(self.members, self.inputs, self.weights)):
            p = F.softmax(member(self._member_input(pixels, inp)).float() / inp.temperature, dim=1)
            p = p.index_select(1, getattr(self, f"pick{i}"))
            if len(inp.label_names) != len(self.label_names):  # classes the ensemble does not have: renormalise
                p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
            total = w * p if total is None else total + w * p
        return torch.log(total.clamp_min(1e-12))
