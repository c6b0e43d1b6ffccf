"""A model, resolved once and run: :class:`ModelRef` (what a ``--model`` argument names) and the two classifiers.

    ref = ModelRef.resolve("default")        # or a .pt file, a run folder, an .onnx file, "a,b,c" (an ensemble)
    ref.kind, ref.path, ref.digest, ref.label_names, ref.preprocess
    model, pre = ref.build("cpu")            # a torch module (an ONNX file runs behind one)
    TorchClassifier(model, pre, torch.device("cpu")).probs(pre.prepare_images(crops))   # (N, K) calibrated

Every command, the Recognizer, evaluation, the server's model hub and Ray take a ``ModelRef`` (or a spec,
resolved here once): the ``.onnx`` suffix test, the shipped names, the run-folder rule and the digest live in
:meth:`ModelRef.resolve` only. A :class:`Classifier` turns prepared uint8 face crops into probabilities:
:class:`TorchClassifier` for checkpoints and ensembles, :class:`OnnxClassifier` for ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ferkit.engine.checkpoint import (
    SHIPPED_MODELS,
    build_from_checkpoint,
    ensemble_checkpoint,
    ensemble_members,
    load_checkpoint,
    resolve_checkpoint_path,
)
from ferkit.engine.preprocess import Preprocess
from ferkit.runtime import ort_session_options, sha256_file

log = logging.getLogger(__name__)

KINDS = ("checkpoint", "onnx", "ensemble")
META_PREPROCESS = "ferkit.preprocess"  # ONNX metadata keys written by ferkit.engine.export
META_MODEL = "ferkit.model"


# ------------------------------------------------------------------ the model a spec names


@dataclass(frozen=True, eq=False)
class ModelRef:
    """A model spec resolved once: which file, what kind, its digest; its checkpoint and preprocessing on demand.

    ``spec`` is the text as given ("default", "runs/a", "m.onnx", "a,b"); ``path`` the file it names (a run
    folder's best.pt, a shipped file; None for an ensemble); ``members`` an ensemble's own refs; ``digest`` the
    file's sha256 (an ensemble's: of its members' digests in order); ``shipped`` the shipped name, if it is one.
    """

    spec: str
    kind: str
    path: Path | None
    digest: str
    members: tuple[ModelRef, ...] = ()
    shipped: str | None = None

    @classmethod
    def resolve(cls, spec: str | Path | ModelRef) -> ModelRef:
        """The ref for ``spec``; a ref is returned as it is. A missing file or run folder raises FileNotFoundError
        naming it and what is accepted."""
        if isinstance(spec, ModelRef):
            return spec
        text = str(spec)
        members = ensemble_members(text)
        if members is not None:
            refs = tuple(cls.resolve(m) for m in members)
            odd = [r.spec for r in refs if r.kind != "checkpoint"]
            if odd:
                raise ValueError(f"{text}: the members of an ensemble are ferkit checkpoints; {', '.join(odd)} "
                                 "is not (an ONNX file runs alone, or export the ensemble with 'ferkit export')")
            digest = hashlib.sha256(",".join(r.digest for r in refs).encode()).hexdigest()
            return cls(text, "ensemble", None, digest, refs)
        if text.lower().endswith(".onnx"):
            path = Path(text)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such ONNX model file")
            return cls(text, "onnx", path, sha256_file(path))
        path = resolve_checkpoint_path(text)
        return cls(text, "checkpoint", path, sha256_file(path), shipped=text if text in SHIPPED_MODELS else None)

    def __str__(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"ModelRef({self.spec!r}, kind={self.kind!r}, digest={self.digest[:12]!r})"

    @cached_property
    def checkpoint(self) -> dict:
        """The checkpoint dict (loaded once, weights-only, on the CPU); an ensemble's is built from its members'."""
        if self.kind == "onnx":
            raise ValueError(f"{self.path}: an ONNX file holds no ferkit checkpoint; give the checkpoint it was "
                             "exported from")
        if self.kind == "ensemble":
            return ensemble_checkpoint([m.checkpoint for m in self.members])
        return load_checkpoint(self.path)

    @cached_property
    def _onnx(self) -> OnnxClassifier:
        """One ONNX Runtime session on the file, for its metadata (preprocess, what it was trained on)."""
        return OnnxClassifier(self.path, threads=1)

    @cached_property
    def preprocess(self) -> Preprocess:
        """Input size, channels, normalisation, labels, crop geometry and temperature of the model."""
        if self.kind == "onnx":
            return self._onnx.preprocess
        return Preprocess.from_dict(self.checkpoint["preprocess"])

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.preprocess.label_names

    @cached_property
    def config(self) -> dict:
        """The training config the model was made with (an ONNX file: the data and splits it records)."""
        if self.kind == "onnx":
            return dict(self._onnx.model_spec.get("trained_on") or {})
        return dict(self.checkpoint.get("config") or {})

    @cached_property
    def record(self) -> dict:
        """What evaluation reports say of the model, checkpoint-shaped (``path``, ``model`` with its ``name``,
        ``config``): the checkpoint itself, or an ONNX file's metadata (its architecture, "(int8)" if quantized)."""
        if self.kind != "onnx":
            return self.checkpoint
        spec = self._onnx.model_spec
        name = spec.get("name", "onnx") + (" (int8)" if spec.get("quantized") else "")
        return {"path": str(self.path), "model": {"name": name}, "config": self.config}

    @property
    def source(self) -> str:
        """Where the weights come from, for messages and reports: the file, or the members' files."""
        return str(self.path) if self.path is not None else ",".join(str(m.path) for m in self.members)

    def build(self, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Preprocess]:
        """``(module in eval mode on device, Preprocess)``; an ONNX file runs on the CPU behind a module."""
        if self.kind == "onnx":
            clf = OnnxClassifier(self.path)
            return clf.as_module(), clf.preprocess
        model, pre = build_from_checkpoint(self.checkpoint)
        return model.to(device).eval(), pre


# ------------------------------------------------------------------ classifiers


@runtime_checkable
class Classifier(Protocol):
    """What the Recognizer classifies faces with: prepared face crops in, expression probabilities out.

    ``preprocess`` is the model's :class:`Preprocess` (input size, channels, labels, crop geometry);
    ``probs`` takes a batch exactly as ``preprocess.prepare_images`` gives it.
    """

    preprocess: Preprocess

    def probs(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(N, S, S)`` or ``(N, S, S, 3)`` -> float32 ``(N, K)`` over ``preprocess.label_names``."""
        ...


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads in the calling thread, then restore the setting (None: as it is)."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class TorchClassifier:
    """A PyTorch model as a :class:`Classifier` (``Preprocess.to_tensor`` normalises, softmax at the end).

    ``threads``: intra-op threads of each forward pass on a CPU, set for the call only (None: torch's own
    setting). The Recognizer passes 1 unless told otherwise: with other processes busy on a 2-core machine,
    torch's default two threads spin-wait for the busy core (the shipped model on a batch of one face 599
    against 12.9 ms, of 64 faces 983 against 531 ms; the shared clip with YuNet on OpenCV 5.8 against
    31.0 frames/s in ``benchmarks/vs_peers.py``).
    """

    def __init__(self, model: torch.nn.Module, preprocess: Preprocess, device: torch.device, threads: int | None = None):
        if device.type == "cpu":
            # channels_last: 5-25% faster convolutions on CPU (measured with the default model), same results.
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()
        self.preprocess = preprocess
        self.device = device
        self.threads = threads if device.type == "cpu" else None

    @classmethod
    def load(cls, model: str | Path | ModelRef, device: torch.device, threads: int | None = None) -> TorchClassifier:
        """``model``: "default", a checkpoint file, a run folder or an ensemble, loaded weights-only onto ``device``."""
        net, pre = ModelRef.resolve(model).build(device)
        return cls(net, pre, device, threads)

    def probs(self, batch: np.ndarray) -> np.ndarray:
        x = self.preprocess.to_tensor(batch, self.device)  # (n, C, S, S), float, normalised
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)  # matches the model's layout (see __init__)
        with torch.inference_mode(), torch_threads(self.threads):
            logits = self.model(x)
        return self.preprocess.probs(logits).cpu().numpy()  # calibrated: softmax(logits / temperature)


class OnnxClassifier:
    """An exported ferkit model run by ONNX Runtime.

    ``OnnxClassifier(path)(x)`` maps a normalised float batch ``(N, C, S, S)``
    (``self.preprocess.to_tensor(...)``) to logits ``(N, K)``; :meth:`probs`
    gives calibrated softmax probabilities (the metadata's temperature), also for uint8 face crops as
    ``preprocess.prepare_images`` gives them, which makes it a :class:`Classifier`. ``threads`` sets ONNX
    Runtime's intra-op threads (None: one per core this process may use, see
    :func:`ferkit.runtime.ort_session_options`). ``spinning=False`` makes idle
    worker threads sleep instead of busy-waiting: in a video loop the face
    detector's OpenCV threads run between classifier calls, and spinning
    workers steal their cores (measured on 2 cores: 2-4x fewer frames/s).
    """

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 spinning: bool = False):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX model file")
        opts = ort_session_options(threads, spinning)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise ValueError(f"{self.path}: not a loadable ONNX model ({exc.__class__.__name__}: {exc})") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_PREPROCESS not in meta:
            raise ValueError(f"{self.path}: ONNX model has no '{META_PREPROCESS}' metadata; export it with `ferkit export`")
        self.preprocess = Preprocess.from_dict(json.loads(meta[META_PREPROCESS]))
        self.model_spec = json.loads(meta.get(META_MODEL, "{}"))
        self.input_name = self.session.get_inputs()[0].name

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.preprocess.label_names

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits ``(N, K)`` float32 for a normalised float batch ``(N, C, S, S)``."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def as_module(self) -> torch.nn.Module:
        """This classifier as a torch module (CPU, inference only), for code written for torch models."""
        return OnnxModule(self)

    def probs(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Softmax probabilities ``(N, K)`` float32.

        ``batch``: uint8 face crops ``(N, S, S[, 3])``, normalised here with ``Preprocess.to_array``
        (the Recognizer's input), or a float batch already normalised ``(N, C, S, S)`` as :meth:`__call__` takes.
        """
        if batch.dtype in (np.uint8, torch.uint8):
            batch = self.preprocess.to_array(np.asarray(batch))  # (N, C, S, S), float32, normalised
        return self.preprocess.probs(self(batch))  # calibrated: softmax(logits / temperature) from the metadata


class OnnxModule(torch.nn.Module):
    """An :class:`OnnxClassifier` behind the ``nn.Module`` call: float tensor ``(N, C, S, S)`` in, logits out.

    Lets :func:`ferkit.engine.evaluate.evaluate` score an exported (e.g. int8) file exactly as it
    scores a checkpoint. CPU only; autocast does not reach ONNX Runtime, which takes float32.
    """

    def __init__(self, classifier: OnnxClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.classifier(x.float()))
