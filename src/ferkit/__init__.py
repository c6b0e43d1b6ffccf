"""ferkit: facial-expression recognition — datasets, model zoo, training, evaluation and recognition.

    import ferkit
    data = ferkit.load_dataset("fer2013.csv")
    cfg = ferkit.load_config("vgg9_fer2013", ["epochs=10"])
    summary = ferkit.train(cfg, "runs/vgg9")
    faces = ferkit.Recognizer()("photo.jpg")

Names are imported on first use (PEP 562), so ``import ferkit`` stays fast and
does not load torch or OpenCV until they are needed.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("ferkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# public name -> module that defines it
_API = {
    "load_dataset": "ferkit.data.readers",
    "load_config": "ferkit.engine.config",
    "train": "ferkit.engine.trainer",
    "evaluate": "ferkit.engine.evaluate",
    "create_model": "ferkit.models.registry",  # the registry imports the model families itself
    "list_models": "ferkit.models.registry",
    "load_model": "ferkit.engine.checkpoint",
    "Preprocess": "ferkit.engine.preprocess",
    "Recognizer": "ferkit.infer.recognizer",
    "RecognizerSettings": "ferkit.infer.recognizer",
    "ModelRef": "ferkit.engine.classify",
    "run_predict": "ferkit.infer.pipeline",
    "create_detector": "ferkit.infer.detectors",
    "export_onnx": "ferkit.engine.export",
    "export_torchscript": "ferkit.engine.export",
    "OnnxClassifier": "ferkit.engine.classify",
    "Face": "ferkit.infer.results",
    "Detection": "ferkit.infer.results",
    "FrameResult": "ferkit.infer.results",
    "predict_ray": "ferkit.infer.distributed",  # needs the `ray` extra; ray itself is imported only when it runs
    "UsageError": "ferkit.errors",
}

__all__ = sorted([*_API, "__version__"])

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from ferkit.data.readers import load_dataset
    from ferkit.engine.checkpoint import load_model
    from ferkit.engine.classify import ModelRef, OnnxClassifier
    from ferkit.engine.config import load_config
    from ferkit.engine.evaluate import evaluate
    from ferkit.engine.export import export_onnx, export_torchscript
    from ferkit.engine.preprocess import Preprocess
    from ferkit.engine.trainer import train
    from ferkit.errors import UsageError
    from ferkit.infer.detectors import create_detector
    from ferkit.infer.distributed import predict_ray
    from ferkit.infer.pipeline import run_predict
    from ferkit.infer.recognizer import Recognizer, RecognizerSettings
    from ferkit.infer.results import Detection, Face, FrameResult
    from ferkit.models.registry import create_model, list_models


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ferkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
