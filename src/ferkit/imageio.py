"""Image decoding and colour conversion.

Inside ferkit an image is a uint8 numpy array, either grey ``(H, W)`` or RGB
``(H, W, 3)``. OpenCV hands out BGR; :func:`to_model_channels` is the one place
where BGR/RGB/grey conversion happens, so training and deployment agree.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the reason."""


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Scale 16-bit or float images to uint8 (floats are taken to be in [0, 1])."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise TypeError(f"unsupported image dtype {img.dtype}; expected uint8, uint16 or float")


def to_model_channels(img: np.ndarray, channels: int, order: str = "rgb") -> np.ndarray:
    """Convert an image to ``channels`` (1 grey or 3 RGB), returning uint8 ``(H, W)`` or ``(H, W, 3)``.

    ``order`` says how a 3/4-channel input is laid out: "rgb" (ferkit, PIL) or
    "bgr" (OpenCV frames). Alpha is dropped; 16-bit and float inputs are scaled.
    """
    img = to_uint8(np.asarray(img))
    if order not in ("rgb", "bgr"):
        raise ValueError(f"order must be 'rgb' or 'bgr', got {order!r}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim == 3 and img.shape[2] != 3:
        raise ValueError(f"image has {img.shape[2]} channels; expected 1, 3 or 4")
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D or 3-D, got shape {img.shape}")
    if channels == 1:
        if img.ndim == 2:
            return img
        code = cv2.COLOR_RGB2GRAY if order == "rgb" else cv2.COLOR_BGR2GRAY
        return cv2.cvtColor(np.ascontiguousarray(img), code)
    if channels == 3:
        if img.ndim == 2:
            return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        if order == "bgr":
            return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(img)
    raise ValueError(f"channels must be 1 or 3, got {channels}")


def _decode(path: str | Path) -> np.ndarray:
    """Decode a file as stored: grey or BGR(A), 8- or 16-bit. Raises :class:`ImageReadError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    data = np.fromfile(str(path), dtype=np.uint8)  # fromfile+imdecode handles non-ASCII paths
    # ANYDEPTH keeps 16-bit, ANYCOLOR keeps grey as grey; unlike UNCHANGED, both honour EXIF rotation.
    img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None:
        raise ImageReadError(f"{path}: not a readable image (OpenCV could not decode it)")
    return img


def read_image(path: str | Path, channels: int | None = None) -> np.ndarray:
    """Decode an image file to uint8 grey ``(H, W)`` or RGB ``(H, W, 3)``.

    With ``channels=None`` the file's own colour is kept (grey stays grey).
    Raises :class:`ImageReadError` naming the file for missing, empty or
    undecodable files.
    """
    img = _decode(path)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = to_model_channels(img, 3, order="bgr")
    else:
        img = to_uint8(img if img.ndim == 2 else img[:, :, 0])
    if channels is not None:
        img = to_model_channels(img, channels)
    return img


def read_bgr(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 BGR ``(H, W, 3)``, the layout of video frames (detectors and drawing use it).

    Grey files are expanded, alpha is dropped, 16-bit is scaled. Raises :class:`ImageReadError` naming the file.
    """
    img = to_uint8(_decode(path))
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img[:, :, :3])


def is_image_file(path: str | Path) -> bool:
    """True if the name has an image extension (content is checked only when decoded)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Encode a uint8 grey ``(H, W)`` or RGB ``(H, W, 3)`` image to ``path`` (format from the extension)."""
    path = Path(path)
    arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img  # OpenCV encodes BGR
    ok, buf = cv2.imencode(path.suffix, arr)
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode a {img.shape} image as {path.suffix}")
    buf.tofile(str(path))  # tofile handles non-ASCII paths
