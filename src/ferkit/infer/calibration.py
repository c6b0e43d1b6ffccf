"""Calibration as a library step: fit a model's temperature and write it into a new model file.

    fit = fit_model_temperature("default")                 # on its own dataset's val split (FER2013 PublicTest)
    save_calibrated("default", fit, "default_calibrated.pt")

Temperature scaling (Guo et al. 2017) divides the logits by one scalar T, fitted to minimise the negative
log-likelihood on a held-out set: the probabilities then say how often the model is right, and the top
class never changes. T lives in the model's :class:`~ferkit.engine.preprocess.Preprocess`, so every backend
(PyTorch, ONNX Runtime from the exported metadata, an ensemble) applies it; the checkpoint's
``calibration`` entry records the set it was fitted on. An ensemble is fitted on its averaged output.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ferkit.engine.checkpoint import export_weights
from ferkit.engine.classify import ModelRef
from ferkit.engine.evaluate import SplitPredictions, predict_split
from ferkit.engine.preprocess import Preprocess
from ferkit.infer.crosseval import photo_settings, predict_photos
from ferkit.infer.recognizer import RecognizerSettings
from ferkit.metrics import calibration_metrics, fit_temperature, rescale_probs

log = logging.getLogger(__name__)


def fit_model_temperature(recognizer: str | Path | ModelRef | RecognizerSettings, data: str | None = None,
                          split: str = "val", photos: bool = False, ferplus_mode: str | None = None) -> dict:
    """Fit the temperature of the recognizer's model on one split: the model's own dataset's ``val`` split by
    default (FER2013 PublicTest, FER+ labels for a FER+ model, as in training; on the settings' device), or with
    ``photos`` a set of whole photos end to end, by a Recognizer built from ``recognizer`` (a model spec: see
    :func:`~ferkit.infer.crosseval.photo_settings`; faces not found are left out of the fit). Returns
    ``temperature`` (the model's new one: its present one times the fitted factor), what it was fitted on, and
    ECE/NLL before and after on that set."""
    settings = photo_settings(recognizer)
    settings = settings.replace(model=ModelRef.resolve(settings.model))  # once, whichever way it is scored
    detector = None
    if photos:
        if data is None:
            raise ValueError("fitting on photos needs the photo set (--photos DATA)")
        sp, _, detector = predict_photos(settings, data, split)
    else:
        sp = predict_split(settings.model, data, split, device=settings.device, ferplus_mode=ferplus_mode)
    p, y = sp.probs["none"], sp.part.labels
    answered = p.sum(1) > 0
    factor = fit_temperature(np.log(np.clip(p[answered], 1e-12, 1.0)), y[answered])
    before, after = calibration_metrics(y, p), calibration_metrics(y, rescale_probs(p, factor))
    previous = sp.pre.temperature_for(detector if photos else None)
    fit = {"temperature": float(previous * factor), "previous_temperature": float(previous),
           "detector": detector if photos else None, "fitted_on": _where(sp, photos, detector), "n": int(answered.sum()),
           "ece_before": before["ece"], "ece_after": after["ece"], "nll_before": before["nll"], "nll_after": after["nll"]}
    log.info("temperature %.3f (was %.3f) fitted on %s: ECE %.3f -> %.3f, NLL %.3f -> %.3f", fit["temperature"],
             fit["previous_temperature"], fit["fitted_on"], before["ece"], after["ece"], before["nll"], after["nll"])
    return fit


def _where(sp: SplitPredictions, photos: bool, detector: str) -> str:
    name = Path(str(sp.data_path)).name
    how = f", end to end ({detector})" if photos else ""
    labels = f", {sp.labels_from}" if sp.labels_from and not photos else ""
    return f"{name} {sp.split}{how}{labels}"


def save_calibrated(model_spec: str | Path | ModelRef, fit: dict, out: str | Path) -> Path:
    """Write ``model_spec`` (a checkpoint, run folder, shipped name or ensemble ``a,b``) with ``fit``'s
    temperature to the new checkpoint file ``out`` (inference weights only). A fit on face crops sets the
    model's temperature; a fit end to end on photos sets that detector's (``crop_geometry[detector]``), which
    the Recognizer uses for faces that detector finds. ``calibration`` records every fit, by where it applies."""
    ref = ModelRef.resolve(model_spec)
    if ref.kind == "onnx":
        raise ValueError(f"{ref.spec}: an ONNX file cannot be rewritten here; calibrate the checkpoint it was "
                         "exported from, then export that")
    ckpt = dict(ref.checkpoint)  # a copy: its preprocess is replaced below, and the ref's stays as loaded
    pre = Preprocess.from_dict(ckpt["preprocess"])
    det = fit.get("detector")
    if det:
        geometry = {**pre.crop_for(det).to_dict(), **pre.crop_geometry.get(det, {}),
                    "temperature": round(float(fit["temperature"]), 4)}
        pre.crop_geometry = {**pre.crop_geometry, det: geometry}
    else:
        pre.temperature = round(float(fit["temperature"]), 4)
    Preprocess.from_dict(pre.to_dict())  # the range check
    ckpt["preprocess"] = pre.to_dict()
    record = {**(ckpt.get("calibration") or {}), det or "crops": dict(fit)}
    half = any(v.dtype == torch.float16 for v in ckpt["state_dict"].values())  # a file shipped in float16 stays so
    export_weights(ckpt, out, half=half, extra={"calibration": record})
    return Path(out)
