"""The preprocessing definition that travels inside every checkpoint, and the code that applies it.

Two steps turn any uint8 image into model input, and training, evaluation and
deployment all take both:

1. :meth:`Preprocess.prepare_images`: the model's channels (the one colour
   conversion, :func:`ferkit.imageio.to_model_channels`) and size (the one
   interpolation rule, :func:`ferkit.imageio.resize_image`), giving uint8
   ``(N, S, S[, 3])``. Training and evaluation call it once when they load a
   dataset; deployment on every batch of face crops.
2. :meth:`Preprocess.to_float` and :meth:`Preprocess.normalize` (together
   :meth:`Preprocess.to_tensor`): float, normalised ``(N, C, S, S)``. They take
   only images at the model's size: nothing resizes after step 1, so what a
   model sees in training is what it sees when deployed. Between the two,
   training may augment (``ferkit.data.augment``), and test-time augmentation
   crops and resizes its views.

:meth:`Preprocess.to_array` is step 2 in NumPy, for ONNX Runtime only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ferkit.imageio import resize_image, to_model_channels


@dataclass(frozen=True)
class CropGeometry:
    """How a detector's face box becomes the square crop a model sees (deployment only).

    margin: border added on each side, as a fraction of the box's longer side.
    offset_y: the crop centre moved down by this fraction of the box's longer side (up when negative).
    align: rotate so the eyes are level, when the detector gives landmarks.
    """

    margin: float = 0.1
    offset_y: float = 0.0
    align: bool = True

    def to_dict(self) -> dict:
        return {"margin": self.margin, "offset_y": self.offset_y, "align": self.align}


@dataclass
class Preprocess:
    """How a face image becomes model input.

    input_size: square side in pixels. channels: 1 (grey) or 3 (RGB).
    mean/std: per-channel normalisation of [0, 1] pixels.
    label_names: the model's output classes, in order.
    crop_margin: extra border around a detected face box, as a fraction of its
    size on each side (deployment only; dataset images are already crops), for
    detectors without a calibrated geometry.
    crop_geometry: detector name -> :class:`CropGeometry` dict, the crop chosen by
    measurement for that detector's boxes (``ferkit calibrate --crop-proxy/--crop-photos``).
    temperature: the model's logits are divided by it before the softmax (temperature
    scaling, Guo et al. 2017; fitted by ``ferkit calibrate``): it makes the probabilities
    match how often the model is right, and never changes which class is on top. Every
    backend turns logits into probabilities with :meth:`probs`, so all apply it. A
    detector's entry in ``crop_geometry`` may hold its own, fitted end to end on real
    photos (:meth:`temperature_for`), which the Recognizer applies to that detector's faces.
    """

    input_size: int = 48
    channels: int = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    label_names: tuple[str, ...] = field(default_factory=tuple)
    crop_margin: float = 0.1
    crop_geometry: dict[str, dict] = field(default_factory=dict)
    temperature: float = 1.0

    def __post_init__(self):
        if not (0.05 <= float(self.temperature) <= 20.0):  # also false for NaN
            raise ValueError(f"temperature {self.temperature} out of range [0.05, 20]: not a fitted temperature")

    def probs(self, logits):
        """Calibrated class probabilities from logits ``(N, K)``: ``softmax(logits / temperature)``, float32.

        A torch tensor gives a tensor (on its device), a NumPy array an array: the one place where any backend
        (PyTorch, ONNX Runtime, an ensemble) turns scores into the probabilities it reports."""
        t = float(self.temperature)
        if isinstance(logits, torch.Tensor):
            return torch.softmax(logits.float() / t, dim=-1)
        e = np.asarray(logits, np.float32) / np.float32(t)
        e -= e.max(-1, keepdims=True)
        np.exp(e, out=e)
        e /= e.sum(-1, keepdims=True)
        return e

    def temperature_for(self, detector: str | None) -> float:
        """The temperature for faces found by ``detector`` in whole images: the one fitted end to end for it
        (``crop_geometry[detector]["temperature"]``, ``ferkit calibrate --photos``), else :attr:`temperature`
        (fitted on face crops). Real photos are harder than dataset crops, so a model is often more
        over-confident on them; None: the crops' temperature."""
        g = self.crop_geometry.get(detector) if detector else None
        return float(g["temperature"]) if g and "temperature" in g else float(self.temperature)

    def crop_for(self, detector: str) -> CropGeometry:
        """The crop geometry for faces found by ``detector`` (its calibrated one, else ``crop_margin``, aligned)."""
        g = self.crop_geometry.get(detector)
        if g is None:
            return CropGeometry(margin=self.crop_margin)
        return CropGeometry(margin=float(g["margin"]), offset_y=float(g.get("offset_y", 0.0)), align=bool(g.get("align", True)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"], d["label_names"] = list(self.mean), list(self.std), list(self.label_names)
        d["crop_geometry"] = {k: dict(v) for k, v in self.crop_geometry.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(
            input_size=int(d["input_size"]),
            channels=int(d["channels"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            label_names=tuple(d["label_names"]),
            crop_margin=float(d.get("crop_margin", 0.1)),
            crop_geometry={str(k): dict(v) for k, v in (d.get("crop_geometry") or {}).items()},
            temperature=float(d.get("temperature", 1.0)),
        )

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one prepared image: ``(S, S)`` grey or ``(S, S, 3)`` RGB."""
        return (self.input_size, self.input_size) + ((3,) if self.channels == 3 else ())

    def prepare_images(self, images: list[np.ndarray] | np.ndarray, order: str = "rgb") -> np.ndarray:
        """Bring images of any size and colour to the model's: uint8 ``(N, S, S)`` or ``(N, S, S, 3)``.

        ``order`` is the layout of 3-channel inputs ("rgb", or "bgr" for OpenCV frames). A uint8 array already
        in the model's shape (and, for RGB, in RGB order) is returned as it is, without a copy: a whole
        48-pixel FER2013 costs nothing.
        """
        shape = self.image_shape
        if (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == shape
                and (self.channels == 1 or order == "rgb")):
            return images
        out = np.empty((len(images), *shape), np.uint8)  # filled in place: a dataset is not held twice
        for i, im in enumerate(images):
            out[i] = resize_image(to_model_channels(im, self.channels, order=order), self.input_size)
        return out

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, C, S, S)`` at the model's channels and size -> float in [0, 1], on ``x``'s device.

        Anything else raises ValueError: images are brought to the model's size by :meth:`prepare_images`
        (once, when a dataset is loaded), never resized here.
        """
        self._check_input(tuple(x.shape), x.dtype == torch.uint8, str(x.dtype))
        return x.float().div_(255.0)

    def _check_input(self, shape: tuple[int, ...], is_uint8: bool, dtype: str) -> None:
        want = (self.channels, self.input_size, self.input_size)
        if len(shape) != 4 or tuple(shape[1:]) != want:
            raise ValueError(f"model input of shape {shape}, expected (N, {want[0]}, {want[1]}, {want[2]}): bring "
                             "images to the model's size and channels with Preprocess.prepare_images first")
        if not is_uint8:
            raise ValueError(f"model input of dtype {dtype}, expected uint8 (0-255 pixels)")

    def to_tensor(self, batch: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 ``(N, S, S)`` / ``(N, S, S, C)`` (from :meth:`prepare_images`) -> float ``(N, C, S, S)``,
        normalised, on ``device``."""
        x = torch.as_tensor(batch, device=device)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return self.normalize(self.to_float(x))

    def to_array(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`to_tensor` in NumPy, for ONNX Runtime: uint8 ``(N, H, W[, C])`` -> float32 ``(N, C, H, W)``.

        Same values as ``to_tensor(batch).numpy()`` up to float rounding, without torch's per-call
        overhead (a grey 48x48 face: 5 against 25 microseconds)."""
        x = np.asarray(batch)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        self._check_input(x.shape, x.dtype == np.uint8, str(x.dtype))
        x = np.ascontiguousarray(x, dtype=np.float32)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        x *= 1.0 / (255.0 * std)  # (x / 255 - mean) / std, in place
        x -= np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1) / std
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float ``(N, C, H, W)`` in [0, 1] -> normalised."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std
