"""Shared model shape: every zoo model is ``head(forward_features(x))``."""

from __future__ import annotations

import torch
from torch import nn


class FerModel(nn.Module):
    """Base class: subclasses build ``self.head`` and implement :meth:`forward_features`.

    ``forward_features`` returns a flat ``(B, F)`` feature vector; ``head`` maps it
    to ``(B, num_classes)`` logits. Fine-tuning code finds the new layer by name
    (parameters under ``head.``).
    """

    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def init_weights(model: nn.Module) -> None:
    """Kaiming init for convs, unit BN, small normal for linears (the torchvision ResNet defaults)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
