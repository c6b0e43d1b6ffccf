"""The table of registered models and the ``@register_model`` decorator that fills it.

Below :mod:`ferkit.models.registry`: the family modules register themselves here, and the registry imports them
to fill the table, so neither imports the other both ways.
"""

from __future__ import annotations

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
