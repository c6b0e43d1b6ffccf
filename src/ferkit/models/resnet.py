"""ResNet-11/18/34/50/101/152 and ResNeXt-18 adapted to small (48x48) face crops.

Differences from ImageNet ResNets: a 3x3 stride-1 stem and no max-pool, so a
48x48 input keeps its resolution into the first stage (48 -> 48 -> 24 -> 12 -> 6).
``stem_stride=2`` halves it in the stem instead (48 -> 24 -> 12 -> 6 -> 3): about 4x
fewer FLOPs for the same parameters (src/ferkit/recipes/default_fer2013_fast.yaml trains one).
"""

from __future__ import annotations

import torch
from torch import nn

from ferkit.models.base import FerModel, init_weights
from ferkit.models.registration import register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, base_width: int = 64, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.drop(self.bn2(self.conv2(out)))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64, dropout: float = 0.0):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.drop(self.bn3(self.conv3(out)))
        return torch.relu(out + self.shortcut(x))


class ResNeXtBlock(Bottleneck):
    """ResNeXt block (Xie et al. 2017, form C): a Bottleneck whose 3x3 conv is split into ``groups`` paths.

    Inner width ``groups * base_width * planes / 64`` and output ``planes * 4``, as in ResNeXt-50
    32x4d: planes 64, 128, 256 give inner widths 128, 256, 512 and outputs 256, 512, 1024.
    """

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 32, base_width: int = 4, dropout: float = 0.0):
        super().__init__(cin, planes, stride, groups=groups, base_width=base_width, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # On CPU, oneDNN runs grouped convs fast only in channels_last; from NCHW input a bf16 training
        # step of resnext18 takes about 2x as long. After the first block this is a no-op.
        return super().forward(x.contiguous(memory_format=torch.channels_last))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(FerModel):
    """A small-input ResNet: stem conv3x3 -> stages -> global average pool -> (dropout) -> linear head.

    ``layers`` blocks per stage, stage widths ``width * 2**i``, first stage stride 1; the stem has
    stride ``stem_stride`` (1 keeps the input resolution, 2 halves it).
    ``block_dropout`` gives a dropout rate per stage (applied inside its blocks).
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: tuple[int, ...],
        num_classes: int = 7,
        in_chans: int = 1,
        width: int = 64,
        groups: int = 1,
        base_width: int = 64,
        block_dropout: tuple[float, ...] | None = None,
        dropout: float = 0.0,
        stem_stride: int = 1,
    ):
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        block_dropout = block_dropout or (0.0,) * len(layers)
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages, cin = [], width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, planes, stride, groups=groups, base_width=base_width, dropout=block_dropout[i]))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.head = nn.Sequential(nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Linear(cin, num_classes))
        init_weights(self)
        # Zero the last BN of each residual branch: each block starts as identity (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, (BasicBlock,)):
                nn.init.zeros_(m.bn2.weight)
            elif isinstance(m, (Bottleneck, ResNeXtBlock)):
                nn.init.zeros_(m.bn3.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, F)
        x = self.stages(self.stem(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


@register_model(family="resnet")
def resnet11(num_classes: int = 7, in_chans: int = 1, width: int = 64, dropout: float = 0.0, stages: int = 4,
             stem_stride: int = 1) -> ResNet:
    """ResNet-11: one basic block per stage; ``stages`` stages (4 is the standard one; 3 or 5 for depth studies)."""
    if not 1 <= stages <= 6:
        raise ValueError(f"resnet11: stages must be between 1 and 6, got {stages}")
    return ResNet(BasicBlock, (1,) * stages, num_classes, in_chans, width, dropout=dropout, stem_stride=stem_stride)


@register_model(family="resnet")
def resnet18(num_classes: int = 7, in_chans: int = 1, width: int = 64, dropout: float = 0.0, stem_stride: int = 1) -> ResNet:
    """ResNet-18 for small inputs (stride-1 stem; ``stem_stride=2`` for the fast variant)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, width, dropout=dropout, stem_stride=stem_stride)


@register_model(family="resnet")
def resnet34(num_classes: int = 7, in_chans: int = 1, width: int = 64, dropout: float = 0.0, stem_stride: int = 1) -> ResNet:
    """ResNet-34 for small inputs (stride-1 stem; ``stem_stride=2`` for the fast variant)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, width, dropout=dropout, stem_stride=stem_stride)


@register_model(family="resnet")
def resnet50(num_classes: int = 7, in_chans: int = 1, width: int = 64, dropout: float = 0.0) -> ResNet:
    """ResNet-50 (bottleneck) for small inputs."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, width, dropout=dropout)


@register_model(family="resnet")
def resnet101(num_classes: int = 7, in_chans: int = 1, width: int = 64, dropout: float = 0.0) -> ResNet:
    """ResNet-101 (bottleneck) for small inputs."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, width, dropout=dropout)


@register_model(family="resnet")
def resnet152(num_classes: int = 7, in_chans: int = 1, width: int = 64, dropout: float = 0.0) -> ResNet:
    """ResNet-152 (bottleneck) for small inputs."""
    return ResNet(Bottleneck, (3, 8, 36, 3), num_classes, in_chans, width, dropout=dropout)


@register_model(family="resnext")
def resnext18(
    num_classes: int = 7,
    in_chans: int = 1,
    width: int = 64,
    groups: int = 32,
    base_width: int = 4,
    block_dropout: tuple[float, float, float] = (0.0, 0.2, 0.4),
    dropout: float = 0.0,
) -> ResNet:
    """ResNeXt-18 32x4d: 3 stages of 2 grouped bottleneck blocks, dropout 0.2/0.4 in the last two stages."""
    # 48 -> 48 (256 ch) -> 24 (512 ch) -> 12 (1024 ch) -> pool -> (B, 1024); about 3.3 M parameters.
    return ResNet(ResNeXtBlock, (2, 2, 2), num_classes, in_chans, width, groups=groups, base_width=base_width,
                  block_dropout=tuple(block_dropout), dropout=dropout)
