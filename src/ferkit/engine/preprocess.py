"""The preprocessing definition that travels inside every checkpoint.

Training, evaluation and deployment all turn uint8 images into model input
through :meth:`Preprocess.to_tensor`, so they cannot disagree on size, colour
or normalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
import torch

from ferkit.imageio import to_model_channels


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
    measurement for that detector's boxes (``benchmarks/robustness.py --calibrate``).
    """

    input_size: int = 48
    channels: int = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    label_names: tuple[str, ...] = field(default_factory=tuple)
    crop_margin: float = 0.1
    crop_geometry: dict[str, dict] = field(default_factory=dict)

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
        )

    def prepare_images(self, images: list[np.ndarray] | np.ndarray, order: str = "rgb") -> np.ndarray:
        """Convert face crops of any size/colour to uint8 ``(N, S, S)`` or ``(N, S, S, 3)`` at input_size."""
        s = self.input_size
        out = []
        for im in images:
            im = to_model_channels(im, self.channels, order=order)
            if im.shape[:2] != (s, s):
                interp = cv2.INTER_AREA if im.shape[0] > s else cv2.INTER_LINEAR
                im = cv2.resize(im, (s, s), interpolation=interp)
            out.append(im)
        return np.stack(out) if out else np.zeros((0, s, s) + ((3,) if self.channels == 3 else ()), np.uint8)

    def to_tensor(self, batch: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 ``(N, H, W)`` / ``(N, H, W, C)`` -> float ``(N, C, H, W)``, normalised, on ``device``."""
        x = torch.as_tensor(batch, device=device)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return self.normalize(x.float().div_(255.0))

    def to_array(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`to_tensor` in NumPy, for ONNX Runtime: uint8 ``(N, H, W[, C])`` -> float32 ``(N, C, H, W)``.

        Same values as ``to_tensor(batch).numpy()`` up to float rounding, without torch's per-call
        overhead (a grey 48x48 face: 5 against 25 microseconds)."""
        x = np.asarray(batch)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
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
