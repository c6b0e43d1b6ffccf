"""LeNet-5 (LeCun et al. 1998) sized for 48x48 face crops: a small, fast baseline.

Modernised the usual way: ReLU instead of scaled tanh and max-pooling instead of
trainable sub-sampling; the layer sizes (6 and 16 filters of 5x5, FC 120 and 84)
are the original ones.
"""

from __future__ import annotations

import torch
from torch import nn

from ferkit.models.base import FerModel, init_weights
from ferkit.models.registration import register_model


class LeNet(FerModel):
    """conv5x5(6) - pool - conv5x5(16) - pool - FC(120) - FC(84) - head."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, input_size: int = 48, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = ((input_size - 4) // 2 - 4) // 2  # 48 -> 44 -> 22 -> 18 -> 9
        if side < 1:
            raise ValueError(f"LeNet needs input_size >= 16, got {input_size}")
        self.fc = nn.Sequential(
            nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True),
        )
        self.num_features = 84
        self.head = nn.Sequential(nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Linear(84, num_classes))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, 48, 48) -> (B, 16, 9, 9) -> (B, 84)
        return self.fc(torch.flatten(self.features(x), 1))


@register_model(input_size=48, family="lenet")
def lenet(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.0) -> LeNet:
    """LeNet-5 for 48x48 inputs (ReLU, max-pool): a tiny, fast baseline."""
    return LeNet(num_classes, in_chans, 48, dropout)
