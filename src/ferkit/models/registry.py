"""Model registry: one way to build a model, ``create_model(name, num_classes, in_chans, **kw)``."""

from __future__ import annotations

import difflib

from torch import nn

from ferkit.models.registration import _REGISTRY, ModelInfo, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]  # register_model: the families
# import it from ferkit.models.registration (the registry imports them); it stays importable from here


def _lookup(name: str) -> ModelInfo:
    _import_all()
    key = name.lower().replace("-", "_")
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, _REGISTRY, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} Valid names: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def create_model(name: str, num_classes: int = 7, in_chans: int = 1, **kwargs) -> nn.Module:
    """Build a registered model for ``num_classes`` outputs and ``in_chans`` input channels."""
    return _lookup(name).fn(num_classes=num_classes, in_chans=in_chans, **kwargs)


def model_info(name: str) -> ModelInfo:
    return _lookup(name)


def list_models() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def _import_all() -> None:
    # Importing the family modules runs their @register_model decorators.
    from ferkit.models import deep_emotion, efficientnet_lite, lenet, pretrained, resnet, vgg  # noqa: F401
