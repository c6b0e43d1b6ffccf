"""Deep-Emotion (Minaee, Minaei & Abdolrashidi 2021): an attentional CNN with a spatial transformer.

"Deep-Emotion: Facial Expression Recognition Using Attentional Convolutional
Network" (Sensors 21(9), 3046; arXiv 1902.01019). A small localisation network
regresses an affine transform ``theta`` from the image; the image is resampled
with it, so the classifier sees the face region the network learnt to attend
to. The transform starts as the identity, so training begins from the plain CNN.

Layer sizes follow the widely used PyTorch re-implementation of the paper
(10-filter 3x3 convs, FC 50); unlike it, dropout is switched off in eval mode.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.models.base import FerModel, init_weights
from ferkit.models.registration import register_model


def _valid(side: int, k: int) -> int:
    """Output side of an unpadded ``k x k`` conv."""
    return side - k + 1


class Localisation(nn.Module):
    """Image -> affine transform ``theta`` ``(B, 2, 3)``: 2 x (conv, max-pool, ReLU), FC 32, FC 6."""

    def __init__(self, in_chans: int, input_size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 8, 7), nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.Conv2d(8, 10, 5), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        )
        side = _valid(_valid(input_size, 7) // 2, 5) // 2  # 48 -> 42 -> 21 -> 17 -> 8
        self.fc = nn.Sequential(nn.Linear(10 * side * side, 32), nn.ReLU(inplace=True), nn.Linear(32, 6))

    def reset_to_identity(self) -> None:
        # Zero weights and an identity bias: every image starts un-warped whatever the features.
        nn.init.zeros_(self.fc[2].weight)
        with torch.no_grad():
            self.fc[2].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, 48, 48) -> (B, 10, 8, 8) -> (B, 2, 3)
        return self.fc(torch.flatten(self.features(x), 1)).view(-1, 2, 3)


class DeepEmotion(FerModel):
    """Spatial transformer -> 4 convs (BN after the last, max-pool every two) -> dropout -> FC -> head."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, input_size: int = 48, channels: int = 10,
                 hidden: int = 50, dropout: float = 0.5):
        super().__init__()
        self.localisation = Localisation(in_chans, input_size)
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c, 3), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3), nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3), nn.BatchNorm2d(c), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        )
        side = _valid(_valid(_valid(_valid(input_size, 3), 3) // 2, 3), 3) // 2  # 48 -> 44 -> 22 -> 18 -> 9
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(c * side * side, hidden), nn.ReLU(inplace=True))
        self.num_features = hidden
        self.head = nn.Linear(hidden, num_classes)
        init_weights(self)
        self.localisation.reset_to_identity()

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """The input resampled by the learnt affine transform (the attended face region), same shape."""
        theta = self.localisation(x)  # (B, 2, 3)
        # The grid in float32 even under autocast: in bf16 (8-bit mantissa) sample positions are off by
        # ~0.1 px at 48x48 and small learnt shifts of theta are rounded away.
        no_amp = torch.autocast(x.device.type, enabled=False) if torch.amp.is_autocast_available(x.device.type) else nullcontext()
        with no_amp:
            grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)  # (B, H, W, 2) in [-1, 1]
            return F.grid_sample(x.float(), grid, align_corners=False).to(x.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, 48, 48) -> warped (B, C, 48, 48) -> (B, 10, 9, 9) -> (B, 50)
        return self.fc(torch.flatten(self.features(self.warp(x)), 1))


@register_model(input_size=48, family="deep_emotion")
def deep_emotion(
    num_classes: int = 7, in_chans: int = 1, channels: int = 10, hidden: int = 50, dropout: float = 0.5
) -> DeepEmotion:
    """Deep-Emotion: a small CNN behind a spatial-transformer attention (Minaee et al. 2021)."""
    return DeepEmotion(num_classes, in_chans, 48, channels, hidden, dropout)
