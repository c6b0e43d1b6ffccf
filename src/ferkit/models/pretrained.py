"""torchvision ImageNet backbones for fine-tuning (family ``pretrained``, 224x224 RGB input).

Each model is a torchvision network (``body``) whose ImageNet classifier is cut
off and replaced by a fresh ``head`` for ``num_classes``; the trainer gives the
parameters under ``head.`` their own learning rate (``head_lr_mult``).

``weights`` chooses the starting point:

- ``None``: random initialisation (nothing is read or downloaded);
- ``"imagenet"``: torchvision's default ImageNet weights, read from torchvision's
  cache ``$TORCH_HOME/hub/checkpoints`` (by default ``~/.cache/torch/hub/checkpoints``)
  and downloaded there on first use;
- a path to a local ``.pth`` file holding a torchvision state dict, e.g. a copy of
  that cache file for machines without internet.

``in_chans`` other than 3 adapts the first convolution so ImageNet weights stay
meaningful: for grey input its RGB kernels are summed (a grey image seen as three
equal channels gives the same response).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from ferkit.models.base import FerModel
from ferkit.models.registration import register_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backbone:
    tv_name: str  # torchvision.models builder name
    classifier: str  # dotted path of the ImageNet classifier module that the new head replaces
    head_dropout: float  # default dropout before the new linear layer


BACKBONES = {
    # VGG: the head replaces only the last Linear, so the pretrained FC 4096-4096 layers are kept.
    "tv_vgg11": Backbone("vgg11", "classifier.6", 0.0),
    "tv_vgg16": Backbone("vgg16", "classifier.6", 0.0),
    "tv_resnet18": Backbone("resnet18", "fc", 0.0),
    "tv_resnet50": Backbone("resnet50", "fc", 0.0),
    # EfficientNet's classifier is Dropout(0.3) + Linear; the head keeps that dropout.
    "tv_efficientnet_b3": Backbone("efficientnet_b3", "classifier", 0.3),
}


def adapt_first_conv(model: nn.Module, in_chans: int) -> None:
    """Make the first ``nn.Conv2d`` of ``model`` take ``in_chans`` channels, keeping its weights' meaning.

    1 channel: the RGB kernels summed. Other counts: the RGB kernels repeated
    cyclically and scaled by ``3 / in_chans``, so a constant input gives the same response.
    """
    name, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d to adapt to {in_chans} input channels")
    if conv.in_channels == in_chans:
        return
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    w = conv.weight.detach()  # (out, 3, k, k)
    if in_chans == 1:
        new_w = w.sum(1, keepdim=True)
    else:
        reps = -(-in_chans // w.shape[1])  # ceil
        new_w = w.repeat(1, reps, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans)
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(new_w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)


def load_local_weights(body: nn.Module, path: Path, skip_prefix: str) -> None:
    """Load a torchvision state dict from ``path`` into ``body`` (keys under ``skip_prefix`` ignored).

    Raises ValueError naming the missing, unexpected or mis-shaped keys when the
    file is not a state dict of this architecture.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith(skip_prefix)}
    own = {k: v for k, v in body.state_dict().items() if not k.startswith(skip_prefix)}
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    wrong = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        problems = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise ValueError(f"{path}: not a state dict of torchvision's {type(body).__name__} ({'; '.join(problems)})")
    body.load_state_dict(state, strict=False)  # strict apart from the skipped classifier, checked above


class TorchvisionModel(FerModel):
    """A torchvision backbone without its ImageNet classifier, plus a new ``head``."""

    def __init__(self, backbone: Backbone, num_classes: int = 7, in_chans: int = 3, weights: str | None = None,
                 dropout: float | None = None):
        super().__init__()
        use_imagenet = weights == "imagenet"
        if weights is not None and not use_imagenet and not Path(weights).is_file():
            raise FileNotFoundError(f"weights {weights!r}: no such file; expected None, 'imagenet' or the path of a "
                                    f"local .pth state dict of torchvision's {backbone.tv_name}")
        if use_imagenet:
            log.info("%s: ImageNet weights from torchvision (cached in %s/checkpoints, downloaded on first use)",
                     backbone.tv_name, torch.hub.get_dir())
        self.body = torchvision.models.get_model(backbone.tv_name, weights="DEFAULT" if use_imagenet else None)
        if weights is not None and not use_imagenet:
            load_local_weights(self.body, Path(weights), skip_prefix=backbone.classifier + ".")
        classifier = self.body.get_submodule(backbone.classifier)
        old = [m for m in classifier.modules() if isinstance(m, nn.Linear)][-1]  # modules() includes itself
        self.num_features = old.in_features
        parent, _, attr = backbone.classifier.rpartition(".")
        setattr(self.body.get_submodule(parent), attr, nn.Identity())  # body(x) now returns (B, F)
        adapt_first_conv(self.body, in_chans)
        p = backbone.head_dropout if dropout is None else dropout
        linear = nn.Linear(self.num_features, num_classes)
        self.head = nn.Sequential(nn.Dropout(p), linear) if p > 0 else linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, 224, 224), ImageNet-normalised -> (B, F)
        return self.body(x)


@register_model(input_size=224, family="pretrained")
def tv_vgg11(
    num_classes: int = 7, in_chans: int = 3, weights: str | None = None, dropout: float | None = None
) -> TorchvisionModel:
    """torchvision VGG-11 (ImageNet), pretrained FC 4096-4096 kept, new linear head."""
    return TorchvisionModel(BACKBONES["tv_vgg11"], num_classes, in_chans, weights, dropout)


@register_model(input_size=224, family="pretrained")
def tv_vgg16(
    num_classes: int = 7, in_chans: int = 3, weights: str | None = None, dropout: float | None = None
) -> TorchvisionModel:
    """torchvision VGG-16 (ImageNet), pretrained FC 4096-4096 kept, new linear head."""
    return TorchvisionModel(BACKBONES["tv_vgg16"], num_classes, in_chans, weights, dropout)


@register_model(input_size=224, family="pretrained")
def tv_resnet18(
    num_classes: int = 7, in_chans: int = 3, weights: str | None = None, dropout: float | None = None
) -> TorchvisionModel:
    """torchvision ResNet-18 (ImageNet), new linear head on the 512-d pooled features."""
    return TorchvisionModel(BACKBONES["tv_resnet18"], num_classes, in_chans, weights, dropout)


@register_model(input_size=224, family="pretrained")
def tv_resnet50(
    num_classes: int = 7, in_chans: int = 3, weights: str | None = None, dropout: float | None = None
) -> TorchvisionModel:
    """torchvision ResNet-50 (ImageNet V2 weights), new linear head on the 2048-d pooled features."""
    return TorchvisionModel(BACKBONES["tv_resnet50"], num_classes, in_chans, weights, dropout)


@register_model(input_size=224, family="pretrained")
def tv_efficientnet_b3(
    num_classes: int = 7, in_chans: int = 3, weights: str | None = None, dropout: float | None = None
) -> TorchvisionModel:
    """torchvision EfficientNet-B3 (ImageNet) at 224 (its native size is 300: input_size=300), dropout 0.3 + linear head."""
    return TorchvisionModel(BACKBONES["tv_efficientnet_b3"], num_classes, in_chans, weights, dropout)
