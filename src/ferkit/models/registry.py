"""Model registry: one way to build a model, ``create_model(name, num_classes, in_chans, **kw)``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fn: Callable[..., nn.Module]
    input_size: int  # the side length the model is designed for (square inputs)
    family: str
    description: str


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(input_size: int = 48, family: str = "", description: str = "") -> Callable:
    """Decorator registering ``fn(num_classes, in_chans, **kw) -> nn.Module`` under its function name."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        _REGISTRY[name] = ModelInfo(name, fn, input_size, family or fn.__module__.rsplit(".", 1)[-1], doc)
        return fn

    return wrap


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
