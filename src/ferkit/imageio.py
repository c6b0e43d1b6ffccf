"""Image decoding, colour conversion and resizing.

Inside ferkit an image is a uint8 numpy array, either grey ``(H, W)`` or RGB
``(H, W, 3)``. OpenCV hands out BGR; :func:`to_model_channels` is the one place
where BGR/RGB/grey conversion happens, and :func:`resize_image` the one
interpolation rule, so dataset readers, training, evaluation and deployment agree.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
# Largest width x height decoded: a 100-megapixel photo is far beyond any camera's face photo, while a
# "decompression bomb" (a few hundred KB of PNG declaring 30000x30000) would need gigabytes.
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "FERKIT_MAX_PIXELS"
# Largest image file read, in bytes (64 MiB): well above any photo (a 100-megapixel JPEG is about 30 MB), and it
# keeps a multi-gigabyte file named like an image (a video, a disk image) from being read whole into memory.
# Checked before reading; such a file is reported and skipped like any unreadable image.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
_max_pixels: int | None = None  # set by pixel_limit() (the CLI's --max-pixels); None: $FERKIT_MAX_PIXELS or the default


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the reason."""


class ImageTooLargeError(ImageReadError):
    """An image, or a video's frames, whose header declares more pixels than the limit (checked before decoding).
    ``size`` is (width, height) where the header gave it (None when only a count is known), ``pixels`` and
    ``limit`` the counts."""

    def __init__(self, message: str, size: tuple[int, int] | None = None, pixels: int = 0, limit: int = 0):
        super().__init__(message)
        self.size, self.pixels, self.limit = size, pixels, limit


def current_max_pixels() -> int:
    """The pixel limit in force: :func:`pixel_limit`'s, else ``$FERKIT_MAX_PIXELS``, else ``DEFAULT_MAX_PIXELS``."""
    if _max_pixels is not None:
        return _max_pixels
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))  # 1e8 and 100000000 both read
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${MAX_PIXELS_ENV}={text!r}: expected a number of pixels >= 1, e.g. 100000000")
    return value


@contextlib.contextmanager
def pixel_limit(limit: int | None) -> Iterator[None]:
    """Decode with this pixel limit inside the block (None: keep the one in force). Process-wide, so the
    decoding threads of the dataset readers see it too."""
    global _max_pixels
    if limit is not None and limit < 1:
        raise ValueError(f"the pixel limit must be >= 1, got {limit}")
    old = _max_pixels
    _max_pixels = limit if limit is not None else old
    try:
        yield
    finally:
        _max_pixels = old


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the image size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _png_jpeg_size(buf: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk or a JPEG's frame header; None for other formats or a damaged
    header. Hand-parsed because datasets are mostly small JPEGs and PNGs: 1 us a file, Pillow's open 35 us."""
    if buf[:8] == b"\x89PNG\r\n\x1a\n" and buf[12:16] == b"IHDR" and len(buf) >= 24:
        width, height = struct.unpack(">II", buf[16:24])
        return width, height
    if buf[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", buf[i + 5 : i + 9])  # after length (2 bytes) and precision (1)
            return width, height
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(buf[i + 2 : i + 4], "big")
    return None


def _declared_size(data: np.ndarray) -> tuple[int, int] | int | None:
    """(width, height) from an encoded image's header, without decoding a pixel; a pixel count when Pillow
    stops at its own bomb guard first; None when neither the fast path nor Pillow reads the header (OpenCV
    then decides)."""
    buf = data.tobytes()
    size = _png_jpeg_size(buf)
    if size is not None:
        return size
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(io.BytesIO(buf)) as im:  # lazy: parses the header only
                return im.size
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit: its message holds the count
        found = re.search(r"\((\d+) pixels\)", str(exc))
        return int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
    except Exception:  # noqa: BLE001 - unknown or damaged header: OpenCV's decode reports it, naming the file
        return None


def check_pixels(path: str | Path, size: tuple[int, int] | int | None, limit: int | None = None,
                 what: str = "a very large image") -> None:
    """Raise :class:`ImageTooLargeError` naming ``path`` when ``size`` ((width, height) or a pixel count, None:
    unknown) is over ``limit`` (None: :func:`current_max_pixels`); ``what`` says in the message what else it
    may be ("very large video frames"). The one pixel-limit rule of images and of every frame source."""
    if size is None:
        return
    limit = current_max_pixels() if limit is None else limit
    pixels = size if isinstance(size, int) else size[0] * size[1]
    if pixels > limit:
        shown = f"{pixels:,} pixels" if isinstance(size, int) else f"{size[0]}x{size[1]} = {pixels:,} pixels"
        raise ImageTooLargeError(f"{path}: {shown}, more than the limit of {limit:,} (a decompression bomb, or "
                                 f"{what}: raise the limit with ${MAX_PIXELS_ENV} or --max-pixels)",
                                 None if isinstance(size, int) else (int(size[0]), int(size[1])), pixels, limit)


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


def resize_image(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an image ``(H, W)`` / ``(H, W, C)`` to ``size`` (a square side, or ``(height, width)``).

    The one interpolation rule of ferkit: OpenCV's INTER_AREA when the image shrinks along either side (it
    averages the source pixels, so nothing aliases), INTER_LINEAR when it only grows. OpenCV because deployment
    resizes one face crop at a time: about 50 us a crop against 150 us for torch. An image already at ``size``
    is returned as it is.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if img.shape[:2] == (h, w):
        return img
    if h < 1 or w < 1:
        raise ValueError(f"resize_image: size must be positive, got {size}")
    interp = cv2.INTER_AREA if img.shape[0] > h or img.shape[1] > w else cv2.INTER_LINEAR
    out = cv2.resize(img, (w, h), interpolation=interp)  # OpenCV takes (width, height)
    return out[:, :, None] if img.ndim == 3 and out.ndim == 2 else out  # OpenCV drops a single channel


def _read_bytes(path: Path) -> bytes:
    """The bytes of an image file, at most :data:`MAX_IMAGE_BYTES`. Raises :class:`ImageReadError` naming the
    file for a missing, non-regular (a folder, a pipe: reading one could block forever), unreadable, empty or
    oversized file, so one bad file is reported and skipped instead of ending a folder or dataset run."""
    try:
        st = path.stat()
    except FileNotFoundError:
        broken = " (a symbolic link to a missing file)" if path.is_symlink() else ""
        raise ImageReadError(f"{path}: no such file{broken}") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(f"{path}: not a regular file (a folder, a pipe or a device); expected an image file")
    if st.st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    too_big = (f"{path}: {{}} bytes, more than the {MAX_IMAGE_BYTES:,} an image file may have (a video, a disk image "
               "or another file named like an image?)")
    if st.st_size > MAX_IMAGE_BYTES:
        raise ImageReadError(too_big.format(f"{st.st_size:,}"))
    try:
        with open(path, "rb") as fh:  # Python's open, unlike cv2.imread, handles non-ASCII paths everywhere
            buf = fh.read(MAX_IMAGE_BYTES + 1)  # + 1: a file that grew since stat() is still caught
    except OSError as exc:  # e.g. PermissionError: a file without read permission
        raise ImageReadError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    if len(buf) > MAX_IMAGE_BYTES:
        raise ImageReadError(too_big.format(f"over {MAX_IMAGE_BYTES:,}"))
    return buf


def _decode(path: str | Path, limit: int | None = None) -> np.ndarray:
    """Decode a file as stored: grey or BGR(A), 8- or 16-bit. Raises :class:`ImageReadError` naming the file,
    :class:`ImageTooLargeError` before decoding when its header declares more than ``limit`` pixels
    (None: :func:`current_max_pixels`)."""
    path = Path(path)
    data = np.frombuffer(_read_bytes(path), dtype=np.uint8)
    limit = current_max_pixels() if limit is None else limit
    check_pixels(path, _declared_size(data), limit)
    try:
        # ANYDEPTH keeps 16-bit, ANYCOLOR keeps grey as grey; unlike UNCHANGED, both honour EXIF rotation.
        img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:  # OpenCV raises, rather than returning None, for some damaged files
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ImageReadError(f"{path}: not a readable image (OpenCV: {reason})") from None
    if img is None:
        raise ImageReadError(f"{path}: not a readable image (OpenCV could not decode it)")
    check_pixels(path, (img.shape[1], img.shape[0]), limit)  # a format Pillow does not read, or a header that lied
    return img


def read_image(path: str | Path, channels: int | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file to uint8 grey ``(H, W)`` or RGB ``(H, W, 3)``.

    With ``channels=None`` the file's own colour is kept (grey stays grey).
    Raises :class:`ImageReadError` naming the file for missing, empty or
    undecodable files, and (before decoding) for files larger than ``max_pixels``
    (None: the limit in force, see :func:`current_max_pixels`).
    """
    img = _decode(path, max_pixels)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = to_model_channels(img, 3, order="bgr")
    else:
        img = to_uint8(img if img.ndim == 2 else img[:, :, 0])
    if channels is not None:
        img = to_model_channels(img, channels)
    return img


def read_bgr(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file to uint8 BGR ``(H, W, 3)``, the layout of video frames (detectors and drawing use it).

    Grey files are expanded, alpha is dropped, 16-bit is scaled. Raises :class:`ImageReadError` naming the file
    (as :func:`read_image`, with the same pixel limit).
    """
    img = to_uint8(_decode(path, max_pixels))
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


def sniff_image_format(head: bytes) -> str | None:
    """The name of the still-image format ``head`` starts with (JPEG, PNG, ...), or None."""
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
        return "HEIF/AVIF"
    return None
