"""Checkpoints: written atomically, loaded with ``weights_only=True`` (a model file is data, never code).

A checkpoint is a dict::

    {"format": "ferkit", "version": 1,
     "model": {"name", "num_classes", "in_chans", "kwargs"},
     "state_dict": ..., "preprocess": Preprocess.to_dict(), "config": {...},
     # training state, present in run checkpoints (last.pt), absent in exported weights:
     "epoch", "optimizer", "scheduler", "rng", "history", "best", ...}
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferkit.engine.preprocess import Preprocess
from ferkit.models.ensemble import Ensemble, MemberInput
from ferkit.models.registry import create_model, model_info
from ferkit.runtime import sha256_file

ENSEMBLE = "ensemble"  # the model name of an ensemble checkpoint
FORMAT = "ferkit"
VERSION = 1
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "weights" / "default.pt"
# The models shipped in the package, by the name --model / model= takes. "fer2013" names the FER2013-label model
# for comparisons with papers (70.8 % PrivateTest) whatever becomes the default (today the same file).
SHIPPED_MODELS = {"default": DEFAULT_MODEL, "fer2013": DEFAULT_MODEL, "ferplus": DEFAULT_MODEL.with_name("ferplus.pt")}
# What every --model / model= argument accepts (.onnx files are run by ONNX Runtime, not loaded here).
MODEL_SPECS = ("'default' (the shipped model), 'fer2013' (the FER2013-label model; today the default), 'ferplus' (the "
               "shipped 8-class FER+ model), a checkpoint "
               "file (.pt), a run folder from 'ferkit train', an .onnx file from 'ferkit export', or several "
               "checkpoints joined by commas (an ensemble: a,b,c)")


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
    if str(spec) in SHIPPED_MODELS:
        shipped = SHIPPED_MODELS[str(spec)]
        if not shipped.is_file():
            raise FileNotFoundError(f"the shipped {spec!r} model is missing at {shipped}; reinstall ferkit")
        return shipped
    if ensemble_members(spec):
        raise ValueError(f"{spec}: an ensemble of several checkpoints, not one file; load it with load_checkpoint")
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


def ensemble_members(spec: str | Path) -> list[str] | None:
    """The member specs of ``"a,b,c"`` (an ensemble given on the command line), or None for one model."""
    text = str(spec)
    if "," not in text or Path(text).exists():
        return None
    parts = [s.strip() for s in text.split(",")]
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"{spec!r}: an ensemble is two or more models joined by commas, e.g. default,runs/b,runs/c")
    return parts


def model_digest(spec: str | Path) -> str:
    """sha256 of the model ``spec`` names: of its file, or for an ensemble of its members' digests in order."""
    members = ensemble_members(spec)
    if members is None:
        return sha256_file(resolve_checkpoint_path(spec))
    return hashlib.sha256(",".join(model_digest(m) for m in members).encode()).hexdigest()


PIN_LATEST = "latest"  # ``default@latest``: whatever file ships, said explicitly
PIN_HEX = 12  # a pin gives at least this many hex digits of the file's sha256


def pinned_spelling(name: str) -> str:
    """``name@<first 12 hex of its sha256>``: how a setting names the shipped model ``name`` as it ships today."""
    return f"{name}@{model_digest(name)[:PIN_HEX]}"


def resolve_pinned(spec: str | Path, key: str = "init_from", legacy_ok: bool = False) -> tuple[str, str | None]:
    """``(what load_checkpoint takes, sha256 of the shipped file or None)`` for a setting that names a starting model.

    A checkpoint file or run folder passes through (digest None). A shipped model (:data:`SHIPPED_MODELS`) must be
    pinned: ``default@<12+ hex of its sha256>``, refused with both digests when the shipped file differs, or
    ``default@latest`` for whatever ships. A bare ``default`` is refused with the pinned spelling of today's file,
    unless ``legacy_ok`` (a run configured before pins, resumed): then it is taken as ``@latest``.
    """
    text = str(spec)
    name, sep, pin = text.rpartition("@")
    if not sep or Path(text).exists() or name not in SHIPPED_MODELS:
        if text not in SHIPPED_MODELS:
            return text, None  # a checkpoint file or run folder (load_checkpoint says if it is neither)
        if not legacy_ok:
            raise ValueError(f"{key}={text} names the shipped {text!r} model, which changes whenever ferkit ships a new "
                             f"one: pin today's file by its digest, {key}={pinned_spelling(text)}, or say "
                             f"{key}={text}@{PIN_LATEST} to take whatever ships")
        name, pin = text, PIN_LATEST
    digest = model_digest(name)
    if pin == PIN_LATEST:
        return name, digest
    if len(pin) < PIN_HEX or not re.fullmatch(r"[0-9a-fA-F]+", pin):
        raise ValueError(f"{key}={text}: after '@' give {PIN_HEX} or more hex digits of the shipped file's sha256 "
                         f"(today {key}={pinned_spelling(name)}) or {PIN_LATEST!r}")
    if not digest.startswith(pin.lower()):
        raise ValueError(f"{key}={text}: the shipped {name!r} model ({SHIPPED_MODELS[name].name}) has sha256 "
                         f"{digest[:PIN_HEX]}..., not the pinned {pin}...: this ferkit ships another file than the one "
                         f"the setting was written for. To start from today's file, set {key}={pinned_spelling(name)} "
                         f"(or {key}={name}@{PIN_LATEST}); to reproduce the pinned run, give {key}=PATH of a file whose "
                         f"sha256 starts with {pin} (e.g. from the ferkit version that shipped it)")
    return name, digest


def load_checkpoint(spec: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict as data (``weights_only``); a file that holds code or other objects is refused,
    and so is one whose preprocessing or model description is out of range (:func:`check_contents`).

    ``"a,b,c"`` loads each and returns their :func:`ensemble_checkpoint`."""
    members = ensemble_members(spec)
    if members is not None:
        return ensemble_checkpoint([load_checkpoint(m, map_location) for m in members])
    path = resolve_checkpoint_path(spec)
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive (PK..), older versions a pickle (protocol 2+: 0x80 then the protocol)
    if not (head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)):
        what = "an empty file" if not head else "neither a PyTorch zip archive nor a pickle"
        raise ValueError(f"{path}: not a checkpoint file ({what}); expected a .pt file from 'ferkit train' or "
                         "'ferkit export'")
    try:
        with warnings.catch_warnings():
            # torch warns (e.g. about a pickle protocol) before it refuses a file; ferkit's one line says it all
            warnings.simplefilter("ignore")
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
    check_contents(ckpt, path)
    ckpt["path"] = str(path)
    return ckpt


# Sane ranges of what a checkpoint describes: far beyond any facial-expression model, yet they stop a damaged or
# hand-edited file before it allocates gigabytes (an input_size of 100000 is 10^10 pixels a face).
INPUT_SIZE_RANGE = (8, 1024)  # pixels, the square side
MAX_CLASSES = 1000
CROP_MARGIN_RANGE = (-0.5, 2.0)  # fraction of the face box's longer side, each side
CROP_OFFSET_RANGE = (-1.0, 1.0)  # fraction of the face box's longer side


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _preprocess_problem(pre: Any, num_classes: Any) -> str | None:
    """What is wrong with a stored ``preprocess`` dict for a model of ``num_classes`` outputs, or None."""
    if not isinstance(pre, dict):
        return f"preprocess is {type(pre).__name__}, expected a dict"
    missing = [k for k in ("input_size", "channels", "mean", "std", "label_names") if k not in pre]
    if missing:
        return f"preprocess lacks {missing}"
    size, ch, mean, std, names = (pre[k] for k in ("input_size", "channels", "mean", "std", "label_names"))
    lo, hi = INPUT_SIZE_RANGE
    if not _is_int(size) or not lo <= size <= hi:
        return f"preprocess input_size {size!r}, expected a whole number of pixels in {lo}..{hi}"
    if ch not in (1, 3) or not _is_int(ch):
        return f"preprocess channels {ch!r}, expected 1 or 3"
    for key, vals in (("mean", mean), ("std", std)):
        if not isinstance(vals, (list, tuple)) or len(vals) != ch or not all(_is_number(v) for v in vals):
            return f"preprocess {key} {vals!r}, expected {ch} finite number(s), one per channel"
    if any(v <= 0 for v in std):
        return f"preprocess std {list(std)!r}, expected values > 0"
    if (not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n.strip() for n in names)
            or len(set(names)) != len(names)):
        return f"preprocess label_names {names!r}, expected a non-empty list of distinct class names"
    if len(names) != num_classes:
        return f"preprocess has {len(names)} label_names but the model has {num_classes!r} outputs"
    crops = [("crop_margin", pre.get("crop_margin", 0.1), CROP_MARGIN_RANGE)]
    geometry = pre.get("crop_geometry") or {}
    if not isinstance(geometry, dict) or not all(isinstance(g, dict) for g in geometry.values()):
        return f"preprocess crop_geometry {geometry!r}, expected detector name -> {{margin, offset_y, align}}"
    for det, g in geometry.items():
        crops += [(f"crop_geometry[{det!r}] margin", g.get("margin"), CROP_MARGIN_RANGE),
                  (f"crop_geometry[{det!r}] offset_y", g.get("offset_y", 0.0), CROP_OFFSET_RANGE)]
    for key, v, (lo, hi) in crops:
        if not _is_number(v) or not lo <= v <= hi:
            return f"preprocess {key} {v!r}, expected a number in {lo}..{hi}"
    try:
        Preprocess.from_dict(pre)  # Preprocess's own checks (e.g. its temperature range)
    except (TypeError, ValueError) as exc:
        return f"preprocess: {exc}"
    return None


def check_contents(ckpt: dict, path: str | Path) -> None:
    """Refuse, in one line naming ``path`` and the bad value, a checkpoint whose model description or
    preprocessing is out of range or inconsistent (an ensemble: each member's too)."""
    model = ckpt.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ValueError(f"{path}: a damaged ferkit checkpoint: 'model' is {model!r}, expected {{name, num_classes, ...}}")
    n = model.get("num_classes")
    if not _is_int(n) or not 1 <= n <= MAX_CLASSES:
        raise ValueError(f"{path}: a damaged ferkit checkpoint: model num_classes {n!r}, expected 1..{MAX_CLASSES}")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path}: a damaged ferkit checkpoint: it holds no state_dict of weights")
    problem = _preprocess_problem(ckpt.get("preprocess"), n)
    if problem is None and model.get("in_chans") != ckpt["preprocess"]["channels"]:
        problem = f"model in_chans {model.get('in_chans')!r} but preprocess channels {ckpt['preprocess']['channels']}"
    if problem is not None:
        raise ValueError(f"{path}: a damaged ferkit checkpoint: {problem}")
    if model["name"] == ENSEMBLE:
        for i, m in enumerate((model.get("kwargs") or {}).get("members") or []):
            check_contents({**m, "state_dict": {}}, f"{path} (ensemble member {i})")


def _create(spec: dict) -> nn.Module:
    """An untrained module of the checkpoint model description ``spec`` (an ensemble: of its members)."""
    kwargs = dict(spec.get("kwargs", {}))
    if spec["name"] == ENSEMBLE:
        inputs = []
        for m in kwargs["members"]:
            pre = Preprocess.from_dict(m["preprocess"])
            inputs.append(MemberInput(pre.input_size, pre.channels, pre.mean, pre.std, pre.label_names, pre.temperature))
        return Ensemble([_create(m["model"]) for m in kwargs["members"]], inputs, kwargs.get("weights"))
    kwargs.pop("weights", None)  # pretrained-backbone source: the checkpoint's own weights replace it anyway
    return create_model(spec["name"], num_classes=spec["num_classes"], in_chans=spec["in_chans"], **kwargs)


def build_from_checkpoint(ckpt: dict) -> tuple[nn.Module, Preprocess]:
    """``(model with the checkpoint's weights, its Preprocess)``. Weights that do not fit the architecture the
    checkpoint names are refused in one line that names the architecture and the first tensors that disagree."""
    spec = ckpt["model"]
    try:
        model = _create(spec)
    except (TypeError, ValueError, KeyError) as exc:  # an unknown architecture or an argument it does not take
        raise ValueError(f"{ckpt.get('path', 'checkpoint')}: its model {spec.get('name')!r} with {spec.get('kwargs')} "
                         f"cannot be built ({type(exc).__name__}: {exc})") from None
    problem = _state_mismatch(model.state_dict(), ckpt["state_dict"])
    if problem:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in (spec.get("kwargs") or {}).items() if k != "members")
        raise ValueError(f"{ckpt.get('path', 'checkpoint')}: its weights do not fit its architecture {spec['name']}"
                         f"({kwargs}) with {spec['num_classes']} classes: {problem}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    return model, Preprocess.from_dict(ckpt["preprocess"])


def _state_mismatch(want: dict[str, torch.Tensor], got: dict[str, Any], show: int = 3) -> str:
    """Which tensors of ``got`` (a checkpoint's) disagree with ``want`` (the model's), the first ``show`` of
    each kind by name; "" when they fit."""
    def first(items: list[str], sep: str = ", ") -> str:
        return sep.join(items[:show]) + (f" and {len(items) - show} more" if len(items) > show else "")

    parts = []
    shapes = [f"{k} is {tuple(got[k].shape)} in the file, {tuple(v.shape)} in the model" for k, v in want.items()
              if k in got and isinstance(got[k], torch.Tensor) and got[k].shape != v.shape]
    if shapes:
        parts.append(f"{len(shapes)} tensor(s) of another shape: {first(shapes, '; ')}")
    not_tensors = [k for k, v in got.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        parts.append(f"{len(not_tensors)} entry(ies) that are not tensors: {first(not_tensors)}")
    missing = [k for k in want if k not in got]
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing: {first(missing)}")
    unexpected = [k for k in got if k not in want]
    if unexpected:
        parts.append(f"{len(unexpected)} tensor(s) the model does not have: {first(unexpected)}")
    return ". ".join(parts)


def ensemble_checkpoint(ckpts: list[dict], weights: list[float] | None = None) -> dict:
    """One checkpoint holding the models of ``ckpts``, which averages their probabilities (:class:`Ensemble`).

    It takes the first member's preprocessing (input, crop geometry) and classes, and the first member's
    config (so ``ferkit eval`` finds the same dataset); every member keeps its own input and
    normalisation inside. Saved with :func:`export_weights`, it is one file that every command loads
    as it loads a single model, and :func:`ferkit.engine.export.export_onnx` writes as one ONNX graph.
    """
    if len(ckpts) < 2:
        raise ValueError(f"an ensemble needs two or more models, got {len(ckpts)}")
    for c in ckpts:
        if c["model"]["name"] == ENSEMBLE:
            raise ValueError(f"{c.get('path')}: is itself an ensemble; list its members instead")
    first = ckpts[0]
    # each member applies its own temperature inside; the ensemble's own (fitted on the mean) start at 1
    pre = {**first["preprocess"], "temperature": 1.0,
           "crop_geometry": {d: {k: v for k, v in g.items() if k != "temperature"}
                             for d, g in (first["preprocess"].get("crop_geometry") or {}).items()}}
    members = [{"model": c["model"], "preprocess": c["preprocess"], "source": _source_name(c)} for c in ckpts]
    model = {"name": ENSEMBLE, "num_classes": len(pre["label_names"]), "in_chans": int(pre["channels"]),
             "kwargs": {"members": members, "weights": None if weights is None else [float(w) for w in weights]}}
    state = {f"members.{i}.{k}": v for i, c in enumerate(ckpts) for k, v in c["state_dict"].items()}
    _create(model)  # the members must fit together (classes, weights): fail here, not at first use
    out = {"format": FORMAT, "version": VERSION, "model": model, "state_dict": state, "preprocess": dict(pre),
           "config": dict(first.get("config") or {})}
    out["path"] = ",".join(str(c.get("path", "?")) for c in ckpts)
    return out


def _source_name(ckpt: dict) -> str:
    """A checkpoint's folder and file name: enough to say where it came from, without this machine's layout."""
    return "/".join(Path(str(ckpt.get("path", "?"))).parts[-2:])


def load_model(spec: str | Path = "default", device: str | torch.device = "cpu") -> tuple[nn.Module, Preprocess]:
    """Load a model for inference from ``"default"``, a checkpoint file or a run folder.

    Returns ``(model in eval mode on device, its Preprocess)``.
    """
    model, pre = build_from_checkpoint(load_checkpoint(spec))
    return model.to(device).eval(), pre


def export_weights(ckpt: dict, path: str | Path, half: bool = False, extra: dict[str, Any] | None = None) -> None:
    """Write an inference-only checkpoint (no optimizer state); ``half`` stores weights as float16."""
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    out = {k: ckpt[k] for k in ("format", "version", "model", "preprocess", "config", "interpolated", "calibration") if k in ckpt}
    out["state_dict"] = sd
    out.update(extra or {})
    save_checkpoint(out, path)


def interpolate_checkpoints(a: dict, b: dict, alpha: float) -> dict:
    """A checkpoint whose weights are ``(1 - alpha) * a + alpha * b`` (float tensors; integer buffers from ``b``):
    ``alpha`` is the weight of ``b``; 0 gives ``a``'s weights exactly, 1 ``b``'s.

    Weight-space ensembling of two fine-tuning stages of one model (WiSE-FT, Wortsman et al. 2022): when ``b``
    was fine-tuned from ``a`` (here, with stronger augmentation), the points between them keep most of ``a``'s
    accuracy on clean inputs and most of ``b``'s robustness. Both must be the same architecture with the same
    classes and input (:func:`check_same_model`); the result carries ``b``'s model spec, preprocessing and
    config, and no training state. ``ferkit export --interpolate A,B --alpha 0.25`` writes it to a file.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the second model), got {alpha}")
    check_same_model([a, b])
    sa, sb = a["state_dict"], b["state_dict"]
    state = {k: torch.lerp(sa[k].float(), sb[k].float(), alpha) if sb[k].is_floating_point() else sb[k].clone() for k in sb}
    out = {k: b[k] for k in ("format", "version", "model", "preprocess", "config") if k in b}
    out["state_dict"] = state
    out["interpolated"] = {"a": _source_name(a), "b": _source_name(b), "alpha": float(alpha)}
    return out


def soup_checkpoints(ckpts: list[dict]) -> dict:
    """A uniform weight soup (Wortsman et al. 2022): the mean of the float weights of ``ckpts`` (two or more
    fine-tunings of one model; integer buffers from the last). The result carries the last checkpoint's model
    spec, preprocessing and config; ``ferkit export --interpolate A,B,C`` writes it to a file."""
    if len(ckpts) < 2:
        raise ValueError(f"a weight soup needs two or more checkpoints, got {len(ckpts)}")
    check_same_model(ckpts)
    last = ckpts[-1]
    state = {}
    for k, v in last["state_dict"].items():
        if v.is_floating_point():
            state[k] = torch.stack([c["state_dict"][k].float() for c in ckpts]).mean(0)
        else:
            state[k] = v.clone()
    out = {k: last[k] for k in ("format", "version", "model", "preprocess", "config") if k in last}
    out["state_dict"] = state
    out["interpolated"] = {"soup": [_source_name(c) for c in ckpts]}
    return out


def check_same_model(ckpts: list[dict]) -> None:
    """Refuse, naming both files, checkpoints whose weights cannot be averaged: another architecture (or its
    arguments), other classes, another input (size, channels, normalisation), or tensors of other names/shapes."""
    first = ckpts[0]
    for c in ckpts[1:]:
        names = f"{first.get('path')} and {c.get('path')}"
        if ENSEMBLE in (first["model"]["name"], c["model"]["name"]):
            raise ValueError(f"cannot average the weights of {names}: an ensemble's members are different models; "
                             "average single models")
        if c["model"] != first["model"]:
            raise ValueError(f"cannot average the weights of {names}: different architectures "
                             f"({first['model']} vs {c['model']})")
        pa, pb = first["preprocess"], c["preprocess"]
        for key in ("label_names", "input_size", "channels", "mean", "std"):
            va, vb = (list(v) if isinstance(v, (list, tuple)) else v for v in (pa[key], pb[key]))
            if va != vb:
                raise ValueError(f"cannot average the weights of {names}: different {key} ({pa[key]} vs {pb[key]})")
        sa, sb = first["state_dict"], c["state_dict"]
        if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
            raise ValueError(f"cannot average the weights of {names}: their tensors differ in names or shapes")
