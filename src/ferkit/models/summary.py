"""Model size and cost: parameter counts, FLOPs and a table of the whole zoo."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ferkit.models.registry import list_models, model_info


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int, in_chans: int) -> int:
    """Forward FLOPs of one ``(1, in_chans, input_size, input_size)`` image.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-add
    (so FLOPs = 2 x MACs) of convolutions, matrix products and attention; element-wise
    ops (BN, ReLU, pooling) are not counted. Works on a model on the ``meta`` device,
    which costs no memory or compute.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, in_chans, input_size, input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_table(names: list[str] | None = None) -> list[dict]:
    """One row per registered model (or per name in ``names``) for 7 classes at its input size.

    Rows: ``name, family, input_size, in_chans, params, flops, description``. ``in_chans``
    is the model's natural channel count: 3 for ImageNet (``pretrained``) backbones,
    1 (grey) for the others. Models are built on the ``meta`` device, so the table of
    the whole zoo takes seconds and no memory.
    """
    rows = []
    for name in names if names is not None else list_models():
        info = model_info(name)
        in_chans = 3 if info.family == "pretrained" else 1
        with torch.device("meta"):
            model = info.fn(num_classes=7, in_chans=in_chans)
        rows.append(
            {
                "name": info.name,
                "family": info.family,
                "input_size": info.input_size,
                "in_chans": in_chans,
                "params": count_params(model),
                "flops": count_flops(model, info.input_size, in_chans),
                "description": info.description,
            }
        )
    return rows
