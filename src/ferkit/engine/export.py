"""Export a ferkit model to ONNX or TorchScript, with its preprocessing inside the file; run ONNX with ONNX Runtime.

Both formats take a normalised float batch ``(N, C, S, S)`` (the output of
``Preprocess.to_tensor``) with a dynamic batch axis and return logits ``(N, K)``.
The :class:`~ferkit.engine.preprocess.Preprocess` dict travels as JSON: in the
ONNX file's ``metadata_props`` (key ``ferkit.preprocess``) and in TorchScript's
extra files (``ferkit_preprocess.json``), so a deployment outside ferkit knows
the input size, channels, normalisation, face-crop margin and label names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ferkit.engine.checkpoint import ensemble_checkpoint, export_weights
from ferkit.engine.classify import META_MODEL, META_PREPROCESS, ModelRef, OnnxClassifier  # noqa: F401 (public here too)
from ferkit.engine.preprocess import Preprocess

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "checkpoint")
TS_PREPROCESS = "ferkit_preprocess.json"
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def _load(model_spec: str | Path | ModelRef) -> tuple[torch.nn.Module, Preprocess, dict]:
    ref = ModelRef.resolve(model_spec)
    if ref.kind == "onnx":
        raise ValueError(f"{ref.path}: already an ONNX file; export from the ferkit checkpoint it was made from")
    model, pre = ref.build("cpu")
    cfg = ref.config
    # Which data and splits it learned from, so `ferkit eval` can say what a figure on an exported file means.
    trained_on = {k: cfg[k] for k in ("data", "train_split", "val_split") if cfg.get(k)}
    return model, pre, dict(ref.checkpoint["model"]) | {"trained_on": trained_on}


def _example(pre: Preprocess, n: int = 2) -> torch.Tensor:
    # (n, C, S, S), float, normalised: what Preprocess.to_tensor hands the model.
    return torch.zeros(n, pre.channels, pre.input_size, pre.input_size)


@contextlib.contextmanager
def _quiet_exporter():
    """The ONNX exporter's optimiser logs every pass at INFO ("Removed 182 unused nodes"); keep only its warnings."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _tmp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes it private (0600); the file we write is an ordinary one
    return Path(name)


def _stamp(proto, pre: Preprocess, spec: dict) -> None:
    """Store the preprocessing and the model description in ``proto``'s metadata (replacing any there)."""
    del proto.metadata_props[:]
    for key, value in ((META_PREPROCESS, pre.to_dict()), (META_MODEL, spec)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    int8 = ", int8" if spec.get("quantized") else ""
    proto.doc_string = f"ferkit {spec['name']}{int8}: facial-expression logits over {', '.join(pre.label_names)}"


def export_onnx(model_spec: str | Path | ModelRef, path: str | Path, opset: int | None = None) -> Path:
    """Write ``model_spec`` ("default", a checkpoint or a run folder) as ONNX to ``path``; returns ``path``.

    Uses torch's ``torch.export``-based exporter (``dynamo=True``, needs
    onnxscript) with a dynamic batch axis; the file is written atomically.
    """
    import onnx

    model, pre, spec = _load(model_spec)
    path = Path(path)
    tmp = _tmp_beside(path)
    try:
        kwargs = {"opset_version": opset} if opset else {}
        with _quiet_exporter():
            torch.onnx.export(model, (_example(pre),), str(tmp), dynamo=True, verbose=False, external_data=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), **kwargs)
        proto = onnx.load(str(tmp))
        # The exporter annotates every node with the Python stack that made it: file paths of this
        # machine, useless to anyone who loads the file.
        for node in proto.graph.node:
            del node.metadata_props[:]
        _stamp(proto, pre, spec)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("wrote ONNX model %s (%s, input (N, %d, %d, %d))", path, spec["name"], pre.channels, pre.input_size, pre.input_size)
    return path


QUANT_METHODS = ("minmax", "percentile", "entropy")


def export_onnx_int8(model_spec: str | Path, path: str | Path, calib_images: np.ndarray, method: str = "minmax",
                     opset: int | None = None, reduce_range: bool = False) -> Path:
    """Write ``model_spec`` as an int8 ONNX model to ``path``; returns ``path``.

    Static quantization with ONNX Runtime: weights int8 per output channel, activations uint8 with
    ranges measured by running the float model on ``calib_images`` (uint8 face crops ``(N, H, W[, 3])``
    in RGB or grey, e.g. a few hundred training images; ``method`` picks how a range is taken from
    what they produce). The file holds QuantizeLinear/DequantizeLinear pairs (QDQ), so it takes and
    returns float like :func:`export_onnx`; ONNX Runtime fuses them into int8 kernels.

    The layer that reads the image stays float: quantized to uint8, every normalised pixel level
    lands on a rounding tie (the 256 levels span the calibrated range in steps of exactly one
    quantization step, offset by half a step), so the last float bit decides each pixel; that cost
    up to 0.25 points of PublicTest accuracy. ``reduce_range`` keeps weights to 7 bits, for x86 CPUs
    without VNNI, whose int8 kernels add uint8 x int8 products in pairs into 16-bit sums that full
    8-bit weights can overflow. The shipped model does not suffer from it: on PublicTest, on such a
    CPU (AMD EPYC, AVX2), float 69.57 %, int8 69.82 %, int8 with 7-bit weights 69.55 %. Its outputs
    are not equal to the float model's: score the file (``ferkit eval --model FILE.onnx``) before use.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in QUANT_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; valid: {', '.join(QUANT_METHODS)}")
    calib_images = np.asarray(calib_images)
    if calib_images.dtype != np.uint8 or calib_images.ndim not in (3, 4) or not len(calib_images):
        raise ValueError("calib_images: expected uint8 face crops (N, H, W[, 3]) with N > 0, "
                         f"got {calib_images.dtype} {calib_images.shape}")
    ref = ModelRef.resolve(model_spec)  # once: the export below and the digest stamped name the same file
    _, pre, spec = _load(ref)
    batch = pre.to_array(pre.prepare_images(calib_images))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.chunks = iter(np.array_split(batch, max(1, len(batch) // 64)))

        def get_next(self):
            chunk = next(self.chunks, None)
            return None if chunk is None else {INPUT_NAME: chunk}

    path = Path(path)
    tmps = [_tmp_beside(path) for _ in range(3)]
    try:
        export_onnx(ref, tmps[0], opset)
        quant_pre_process(str(tmps[0]), str(tmps[1]))  # shape inference and graph folding, which quantization needs
        calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                     "entropy": CalibrationMethod.Entropy}[method]
        first = [n.name for n in onnx.load(str(tmps[1])).graph.node if INPUT_NAME in n.input]
        quantize_static(str(tmps[1]), str(tmps[2]), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate,
                        reduce_range=reduce_range, nodes_to_exclude=first)  # the layer reading the image stays float
        proto = onnx.load(str(tmps[2]))
        quant = {"dtype": "int8", "method": method, "calibration_images": len(batch),
                 "weight_bits": 7 if reduce_range else 8, "source_sha256": ref.digest}
        _stamp(proto, pre, spec | {"quantized": quant})
        onnx.save(proto, str(tmps[2]))
        os.replace(tmps[2], path)
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)
    log.debug("wrote int8 ONNX model %s (%s, %d calibration images, %s)", path, spec["name"], len(batch), method)
    return path


def export_torchscript(model_spec: str | Path, path: str | Path) -> Path:
    """Write ``model_spec`` as a traced TorchScript module to ``path`` (preprocess JSON in its extra files).

    PyTorch has deprecated TorchScript in favour of ``torch.export``; ONNX is the
    better-supported deployment format. Load the file with :func:`load_torchscript`.
    """
    model, pre, spec = _load(model_spec)
    path = Path(path)
    with warnings.catch_warnings():
        # PyTorch marks torch.jit deprecated (FutureWarning) but still supports it; the format is asked for by name.
        warnings.simplefilter("ignore", FutureWarning)
        return _save_torchscript(model, pre, spec, path)


def _save_torchscript(model: torch.nn.Module, pre: Preprocess, spec: dict, path: Path) -> Path:
    with torch.no_grad():
        traced = torch.jit.trace(model, _example(pre), check_trace=False)
    # A different batch size must give the same answer: the traced graph may not bake in the example's batch.
    x = torch.randn(3, pre.channels, pre.input_size, pre.input_size)
    with torch.no_grad():
        if not torch.allclose(traced(x), model(x), atol=1e-4, rtol=1e-4):
            raise RuntimeError(f"TorchScript trace of {spec['name']} does not reproduce the model on another batch size")
    tmp = _tmp_beside(path)
    try:
        torch.jit.save(traced, str(tmp), _extra_files={TS_PREPROCESS: json.dumps(pre.to_dict()), "ferkit_model.json": json.dumps(spec)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("wrote TorchScript model %s (%s)", path, spec["name"])
    return path


def export_checkpoint(model_spec: str | Path | ModelRef, path: str | Path, member_weights: list[float] | None = None,
                      half: bool = False) -> Path:
    """Write ``model_spec`` as an inference-only ferkit checkpoint (no training state): a run folder's best
    weights as one file, or an ensemble given as ``"a,b,c"`` as one checkpoint that loads like any model,
    its members' probabilities weighted by ``member_weights`` (default: equally); ``half`` stores float16 weights."""
    ref = ModelRef.resolve(model_spec)
    if member_weights is not None:
        if len(ref.members) != len(member_weights):
            raise ValueError(f"member weights {member_weights} need an ensemble of as many models (a,b,...), got {ref.spec!r}")
        ckpt = ensemble_checkpoint([m.checkpoint for m in ref.members], member_weights)
    else:
        ckpt = ref.checkpoint
    export_weights(ckpt, path, half=half)
    return Path(path)


def export_model(model_spec: str | Path, path: str | Path, fmt: str = "onnx") -> Path:
    """Export to ``fmt`` ("onnx", "torchscript" or "checkpoint")."""
    table = {"onnx": export_onnx, "torchscript": export_torchscript, "checkpoint": export_checkpoint}
    if fmt not in table:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    return table[fmt](model_spec, path)


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, Preprocess]:
    """Load an exported TorchScript file and the Preprocess stored in it."""
    extra = {TS_PREPROCESS: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[TS_PREPROCESS]:
        raise ValueError(f"{path}: TorchScript file without {TS_PREPROCESS}; was it exported by ferkit?")
    return module.eval(), Preprocess.from_dict(json.loads(extra[TS_PREPROCESS]))
