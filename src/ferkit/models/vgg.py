"""VGG-style networks for 48x48 face crops (Simonyan & Zisserman 2015, with batch norm).

A network is a list of conv stages, each ``n`` times (3x3 conv + BN + ReLU) at one
width followed by a 2x2 max-pool, then hidden fully connected layers with dropout
and the linear ``head``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ferkit.models.base import FerModel, init_weights
from ferkit.models.registration import register_model


@dataclass(frozen=True)
class VGGConfig:
    stages: tuple[tuple[int, int], ...]  # (number of 3x3 convs, channels) per stage; each ends in a 2x2 max-pool
    fc: tuple[int, ...]  # widths of the hidden fully connected layers
    input_size: int = 48
    dropout: float = 0.5  # after each hidden FC layer


def conv_stage(cin: int, cout: int, n: int) -> nn.Sequential:
    """``n`` x (3x3 conv, BN, ReLU) then a 2x2 max-pool that halves the resolution."""
    layers: list[nn.Module] = []
    for i in range(n):
        # No conv bias: the BatchNorm right after it has one.
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class VGG(FerModel):
    """Conv stages -> flatten -> hidden FC layers (ReLU, dropout) -> linear head."""

    def __init__(self, cfg: VGGConfig, num_classes: int = 7, in_chans: int = 1):
        super().__init__()
        stages, cin = [], in_chans
        for n, cout in cfg.stages:
            stages.append(conv_stage(cin, cout, n))
            cin = cout
        self.stages = nn.Sequential(*stages)
        side = cfg.input_size // 2 ** len(cfg.stages)  # 48 -> 3 after four stages
        if side < 1:
            raise ValueError(f"input_size {cfg.input_size} is too small for {len(cfg.stages)} pooling stages")
        fc, width = [], cin * side * side
        for hidden in cfg.fc:
            fc += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)]
            width = hidden
        self.fc = nn.Sequential(*fc)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, 48, 48) -> (B, 512, 3, 3) -> (B, 512*9) -> (B, F)
        return self.fc(torch.flatten(self.stages(x), 1))


@register_model(input_size=48, family="vgg")
def vgg9(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.5) -> VGG:
    """VGG-9: 6 convs in 4 stages (64, 128, 2x256, 2x512) and FC 2048-2048."""
    cfg = VGGConfig(stages=((1, 64), (1, 128), (2, 256), (2, 512)), fc=(2048, 2048), dropout=dropout)
    return VGG(cfg, num_classes, in_chans)


@register_model(input_size=48, family="vgg")
def vgg_khaireddin(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.2) -> VGG:
    """VGG of Khaireddin & Chen 2021: 4 stages of 2 convs (64 to 512 channels), FC 4096-4096.

    "Facial Emotion Recognition: State of the Art Performance on FER2013" (arXiv
    2105.03588): 8 conv layers (conv, BN, ReLU, in the order of the authors' code)
    in 4 stages with max-pooling, two hidden FC layers of 4096 with dropout (0.2 in
    the authors' code), then the output layer. The paper trains on random 40x40
    crops of the 48x48 images and averages ten 40x40 crops at test time; ferkit
    keeps the input at 48 (so the first FC sees 512x3x3 rather than 512x2x2) and
    gets the ten-crop test-time augmentation from
    ``ferkit.data.augment.tta_views(x, "tencrop")`` (crops resized back to 48).
    """
    cfg = VGGConfig(stages=((2, 64), (2, 128), (2, 256), (2, 512)), fc=(4096, 4096), dropout=dropout)
    return VGG(cfg, num_classes, in_chans)
