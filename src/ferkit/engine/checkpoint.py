"""Checkpoints: written atomically, loaded with ``weights_only=True`` (a model file is data, never code).

A checkpoint is a dict::

    {"format": "ferkit", "version": 1,
     "model": {"name", "num_classes", "in_chans", "kwargs"},
     "state_dict": ..., "preprocess": Preprocess.to_dict(), "config": {...},
     # training state, present in run checkpoints (last.pt), absent in exported weights:
     "epoch", "optimizer", "scheduler", "rng", "history", "best", ...}
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferkit.engine.preprocess import Preprocess
from ferkit.models.registry import create_model, model_info

FORMAT = "ferkit"
VERSION = 1
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "weights" / "default.pt"
# What every --model / model= argument accepts (.onnx files are run by ONNX Runtime, not loaded here).
MODEL_SPECS = ("'default' (the shipped model), a checkpoint file (.pt), a run folder from 'ferkit train', "
               "or an .onnx file from 'ferkit export'")


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """Write ``obj`` to ``path`` atomically: a kill mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def resolve_checkpoint_path(spec: str | Path) -> Path:
    """``"default"`` -> the shipped model; a run folder -> its ``best.pt`` (else ``last.pt``); a file -> itself.

    Anything else raises FileNotFoundError saying what is accepted (and, for the name of a zoo
    architecture such as ``resnet18``, that it is untrained).
    """
    if str(spec) == "default":
        if not DEFAULT_MODEL.is_file():
            raise FileNotFoundError(f"the shipped default model is missing at {DEFAULT_MODEL}; reinstall ferkit")
        return DEFAULT_MODEL
    p = Path(spec)
    if p.is_dir():
        for name in ("best.pt", "last.pt", "model.pt"):
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p}: a folder with no best.pt, last.pt or model.pt; is it a ferkit run folder?")
    if not p.is_file():
        if not p.suffix and _is_zoo_name(str(spec)):
            raise FileNotFoundError(f"{spec}: no such checkpoint file or run folder. {spec!r} names an architecture of "
                                    f"the model zoo, which is untrained: train it first (ferkit train model={spec} ...), "
                                    f"or give {MODEL_SPECS}")
        raise FileNotFoundError(f"{p}: no such checkpoint file or run folder (expected {MODEL_SPECS})")
    return p


def _is_zoo_name(name: str) -> bool:
    try:
        model_info(name)
    except ValueError:
        return False
    return True


def load_checkpoint(spec: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict as data (``weights_only``); a file that holds code or other objects is refused."""
    path = resolve_checkpoint_path(spec)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # Whatever the weights-only loader refuses (a pickled object, which may run code when loaded, or bytes
        # that are no pickle at all). PyTorch's message advises weights_only=False, i.e. running what the file
        # holds: never pass that on.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (an object of class {found.group(1)})" if found else ""
        raise ValueError(f"{path}: not a safe ferkit checkpoint: it holds more than tensors and plain data{what}, "
                         "and ferkit never loads objects or code from a model file") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"{path}: not a loadable ferkit checkpoint ({exc.__class__.__name__}: {first})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a ferkit checkpoint (no 'format': 'ferkit' entry)")
    ckpt["path"] = str(path)
    return ckpt


def build_from_checkpoint(ckpt: dict) -> tuple[nn.Module, Preprocess]:
    spec = ckpt["model"]
    kwargs = dict(spec.get("kwargs", {}))
    kwargs.pop("weights", None)  # pretrained-backbone source: the checkpoint's own weights replace it anyway
    model = create_model(spec["name"], num_classes=spec["num_classes"], in_chans=spec["in_chans"], **kwargs)
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    return model, Preprocess.from_dict(ckpt["preprocess"])


def load_model(spec: str | Path = "default", device: str | torch.device = "cpu") -> tuple[nn.Module, Preprocess]:
    """Load a model for inference from ``"default"``, a checkpoint file or a run folder.

    Returns ``(model in eval mode on device, its Preprocess)``.
    """
    model, pre = build_from_checkpoint(load_checkpoint(spec))
    return model.to(device).eval(), pre


def export_weights(ckpt: dict, path: str | Path, half: bool = False, extra: dict[str, Any] | None = None) -> None:
    """Write an inference-only checkpoint (no optimizer state); ``half`` stores weights as float16."""
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    out = {k: ckpt[k] for k in ("format", "version", "model", "preprocess", "config") if k in ckpt}
    out["state_dict"] = sd
    out.update(extra or {})
    save_checkpoint(out, path)


def interpolate_checkpoints(a: dict, b: dict, alpha: float) -> dict:
    """A checkpoint whose weights are ``(1 - alpha) * a + alpha * b`` (float tensors; integer buffers from ``b``).

    Weight-space ensembling of two fine-tuning stages of one model (WiSE-FT, Wortsman et al. 2022): when ``b``
    was fine-tuned from ``a`` (here, with stronger augmentation), the points between them keep most of ``a``'s
    accuracy on clean inputs and most of ``b``'s robustness. Both must be the same architecture with the same
    classes; the result carries ``b``'s model spec, preprocessing and config, and no training state.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if a["model"] != b["model"] or a["preprocess"]["label_names"] != b["preprocess"]["label_names"]:
        raise ValueError(f"cannot interpolate {a.get('path')} and {b.get('path')}: different models or classes "
                         f"({a['model']} vs {b['model']})")
    sa, sb = a["state_dict"], b["state_dict"]
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ValueError(f"cannot interpolate {a.get('path')} and {b.get('path')}: their tensors differ")
    state = {k: torch.lerp(sa[k].float(), sb[k].float(), alpha) if sb[k].is_floating_point() else sb[k].clone() for k in sb}
    out = {k: b[k] for k in ("format", "version", "model", "preprocess", "config") if k in b}
    out["state_dict"] = state
    # Folder and file name only: a full path would carry this machine's layout into a shared file.
    name = lambda c: "/".join(Path(str(c.get("path", "?"))).parts[-2:])  # noqa: E731
    out["interpolated"] = {"a": name(a), "b": name(b), "alpha": float(alpha)}
    return out
