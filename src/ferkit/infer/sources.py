"""Frame sources: one ``open_source(spec)`` for an image, a folder, a video file, a webcam or a stream.

A source yields :class:`Frame` objects one at a time (a generator), so a
two-hour video or a folder of thousands of photos is processed in constant
memory. Images are BGR uint8 ``(H, W, 3)`` as OpenCV hands them out.

    src = open_source("clip.mp4")          # or "photos/", "photo.jpg", 0, "0", "rtsp://..."
    print(src.kind, src.fps, src.frame_count, src.size)
    for frame in src:
        frame.image, frame.index, frame.time_s, frame.source
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferkit.errors import UsageError
from ferkit.imageio import (IMAGE_EXTENSIONS, ImageReadError, check_pixels, current_max_pixels, is_image_file, read_bgr,
                            sniff_image_format)

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
# Consecutive failed reads after which a live source counts as ended (a camera or a network stream
# drops single frames now and then; those are logged and skipped).
LIVE_READ_RETRIES = 30
# Files that mark a folder as the output of `ferkit predict` (see ferkit.infer.pipeline).
PREDICT_OUTPUT_MARKERS = ("results.jsonl", "summary.json")


@dataclass
class Frame:
    """One frame of a source."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    index: int  # frame index in a video / live source; 0 for a still image
    time_s: float  # seconds from the start of the source; 0.0 for a still image
    source: str  # file path, "webcam:0" or the stream URL
    path: Path | None = None  # the image or video file, None for live sources
    name: str = ""  # name relative to the source root (folder sources), used for output file names


class Source:
    """Base of all sources: iterate for frames; ``fps``, ``frame_count`` and ``size`` where known."""

    kind: str = "source"
    name: str = ""
    fps: float | None = None  # frames per second (videos and cameras)
    frame_count: int | None = None  # frames (videos: as the container states it) or images (folders)
    size: tuple[int, int] | None = None  # (width, height) where all frames share one size
    path: Path | None = None

    @property
    def is_video(self) -> bool:
        """True for sources whose frames form a sequence in time (video files, webcams, streams)."""
        return self.kind in ("video", "webcam", "stream")

    @property
    def is_live(self) -> bool:
        return self.kind in ("webcam", "stream")

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release a held device; iterating again reopens file sources."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fps={self.fps}, frame_count={self.frame_count}, size={self.size})"


class ImageSource(Source):
    """A single image file: one frame."""

    kind = "image"

    def __init__(self, path: Path):
        self.path = path
        self.name = str(path)
        self.frame_count = 1
        # Decode once up front so that a broken file fails here, naming it, before any output is written.
        self._image = read_bgr(path)
        self.size = (self._image.shape[1], self._image.shape[0])

    def __iter__(self) -> Iterator[Frame]:
        img = self._image if self._image is not None else read_bgr(self.path)
        self._image = None  # hand it out once; re-iteration decodes again
        yield Frame(img, 0, 0.0, str(self.path), self.path, self.path.name)


class FolderSource(Source):
    """Every image under a folder, recursively, in sorted order; unreadable files are logged and skipped."""

    kind = "folder"

    def __init__(self, root: Path, exclude: list[Path] | None = None):
        self.path = root
        self.name = str(root)
        self.files = _list_images(root, exclude or [])
        if not self.files:
            raise ValueError(f"{root}: no images found in this folder or below it "
                             f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.frame_count = len(self.files)
        self.skipped: list[tuple[Path, str]] = []  # (file, reason) of unreadable images, filled while iterating

    def __iter__(self) -> Iterator[Frame]:
        for f in self.files:
            try:
                img = read_bgr(f)
            except ImageReadError as exc:
                log.warning("skipped %s", exc)
                self.skipped.append((f, str(exc)))
                continue
            yield Frame(img, 0, 0.0, str(f), f, f.relative_to(self.path).as_posix())


def _is_ferkit_output(d: Path) -> bool:
    """A folder written by ``ferkit predict`` (its annotated images are not new inputs)."""
    return all((d / n).is_file() for n in PREDICT_OUTPUT_MARKERS)


def _identity(path: Path | os.DirEntry) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of what ``path`` names, symbolic links followed; None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def list_files(root: Path, accept: Callable[[str], bool], exclude: Iterable[Path] = ()) -> list[Path]:
    """Every file under ``root`` whose name ``accept`` takes, recursively, sorted by its path below ``root``.

    The one folder listing of ``ferkit predict`` and the ray engine. Hidden files and folders, ``exclude``d
    folders (e.g. the output folder) and outputs of earlier ``ferkit predict`` runs are left out. Symbolic links
    are followed, but each real folder is listed once and each real file (by device and inode) once, under its
    real name where it has one (a plain file in a plain folder before a name reached through a link); a link back
    to a folder that holds it (a loop) is not followed and is reported by a warning naming the link.
    """
    excluded = {Path(p).resolve() for p in exclude}
    seen_dirs: set[tuple[int, int]] = set()
    # (rank, order found, path, identity): rank 0 a plain file in plain folders, 1 reached through a folder link,
    # 2 a link to a file; of the names of one real file the lowest (rank, order) is kept
    found: list[tuple[int, int, Path, tuple[int, int] | None]] = []
    # (link, the identities of the folders on its path): followed after every plain folder, so real names win
    links: list[tuple[Path, tuple[tuple[int, int], ...]]] = []

    def enter(d: Path) -> tuple[int, int] | None:
        """The folder's identity if it is to be listed now; None if it is left out or listed already."""
        key = _identity(d)
        if key is None or key in seen_dirs or d.resolve() in excluded:
            return None
        if _is_ferkit_output(d):
            log.info("%s: left out, it holds the outputs of an earlier `ferkit predict`", d)
            return None
        seen_dirs.add(key)
        return key

    def walk(top: Path, ancestors: tuple[tuple[int, int], ...], via_link: bool) -> None:
        stack = [(top, ancestors)]
        while stack:
            d, path_ids = stack.pop()
            try:
                with os.scandir(d) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                log.warning("%s: cannot list this folder (%s); skipped", d, exc.strerror or exc)
                continue
            subdirs = []
            for e in entries:
                if e.name.startswith("."):
                    continue
                p = d / e.name
                try:
                    is_dir = e.is_dir()  # follows a symbolic link
                except OSError:
                    is_dir = False
                if is_dir:
                    if e.is_symlink():
                        links.append((p, path_ids))
                    elif (key := enter(p)) is not None:
                        subdirs.append((p, (*path_ids, key)))
                elif accept(e.name):
                    rank = 2 if e.is_symlink() else int(via_link)
                    found.append((rank, len(found), p, _identity(e)))  # identity None: a broken link, reported when read
            stack.extend(reversed(subdirs))

    root_id = _identity(root)
    if root_id is None:
        return []
    seen_dirs.add(root_id)
    walk(root, (root_id,), False)
    while links:
        link, path_ids = links.pop(0)
        key = _identity(link)
        if key in path_ids:
            log.warning("%s: a symbolic link to %s, a folder that holds it (a loop); not followed", link,
                        os.path.realpath(link))
        elif key in seen_dirs:
            log.info("%s: a symbolic link to %s, listed already; not followed", link, os.path.realpath(link))
        elif (key := enter(link)) is not None:
            walk(link, (*path_ids, key), True)
    files, seen_files = [], set()
    for _, _, p, key in sorted(found, key=lambda f: f[:2]):
        if key is None or key not in seen_files:
            seen_files.add(key)
            files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _list_images(root: Path, exclude: list[Path]) -> list[Path]:
    return list_files(root, lambda n: is_image_file(n) and not n.startswith("."), exclude)


FRAMES_TOO_LARGE = "very large video frames"  # what an over-limit frame size may be, in the pixel-limit message


def declared_video_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the largest video stream of a file, as its header states it; nothing is decoded.

    FFmpeg's stream probe (behind cv2.VideoCapture and a plain ``av.open``) decodes a first frame of most codecs
    to complete the stream's parameters: 370 MB for a 12000x12000 H.264 frame. Here frame decoding is switched
    off (``skip_frame=all``), so the size comes from the container and the codec headers alone (a GIF's logical
    screen, an MP4's sample description, an H.264 stream's SPS). None when PyAV reads no video stream (OpenCV
    then decides, and its size is checked before the first frame is read).
    """
    import av

    try:
        with av.open(str(path), options={"skip_frame": "all"}) as container:
            sizes = [(s.codec_context.width, s.codec_context.height) for s in container.streams.video]
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None
    sizes = [(w, h) for w, h in sizes if w > 0 and h > 0]
    return max(sizes, key=lambda wh: wh[0] * wh[1]) if sizes else None


class _CaptureSource(Source):
    """Shared reading loop of video files, webcams and streams (cv2.VideoCapture)."""

    max_pixels: int | None = None  # the pixel limit of each frame, fixed when the source is opened

    def _describe(self, cap: cv2.VideoCapture) -> None:
        """fps and size from the capture's probe; a size over :attr:`max_pixels` is refused before any frame is read."""
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w > 0 and h > 0 else None
        check_pixels(self.name, self.size, self.max_pixels, FRAMES_TOO_LARGE)


class VideoSource(_CaptureSource):
    """A video file (or an animated GIF). Timestamps come from the container (CAP_PROP_POS_MSEC), else index / fps.

    Frames over ``max_pixels`` (None: :func:`~ferkit.imageio.current_max_pixels`, the limit of still images) are
    refused from the file's header, before a frame is decoded, with :class:`~ferkit.imageio.ImageTooLargeError`.
    """

    kind = "video"

    def __init__(self, path: Path, max_pixels: int | None = None, label: str | None = None):
        self.path = path
        self.name = str(path)
        self.label = label or str(path)  # the frames' ``source``: e.g. the server's jobs give the uploaded file's name
        self.max_pixels = current_max_pixels() if max_pixels is None else max_pixels
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: empty file (0 bytes); expected a video")
        check_pixels(path, declared_video_size(path), self.max_pixels, FRAMES_TOO_LARGE)
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise ValueError(f"{path}: cannot be opened as a video (not a video, truncated, or a video with no frames)")
            self._describe(cap)
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.frame_count = n if n > 0 else None
            ok, first = cap.read()
            if not ok or first is None:
                raise ValueError(f"{path}: the video has no frames")
            if self.size is None:  # a capture that stated no size: its first frame tells (OpenCV scales all to it)
                self.size = (first.shape[1], first.shape[0])
                check_pixels(path, self.size, self.max_pixels, FRAMES_TOO_LARGE)
        finally:
            cap.release()

    def __iter__(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise ValueError(f"{self.path}: cannot be opened as a video")
        try:
            index, last_t = 0, -1.0
            while True:
                ok, img = cap.read()
                if not ok or img is None:
                    break
                t = _timestamp(cap, index, self.fps, last_t)
                last_t = t
                yield Frame(img, index, t, self.label, self.path, self.path.name)
                index += 1
        finally:
            cap.release()


def _timestamp(cap: cv2.VideoCapture, index: int, fps: float | None, last: float) -> float:
    """Seconds of the frame just read: the container's timestamp when it increases, else index / fps."""
    ms = cap.get(cv2.CAP_PROP_POS_MSEC)
    t = ms / 1000.0 if ms and ms > 0 else (0.0 if index == 0 else -1.0)
    if t <= last:  # missing or non-monotonic container timestamps (some codecs, some streams)
        t = index / fps if fps else last + 1.0 / 30.0
    return float(t)


class LiveSource(_CaptureSource):
    """A webcam (by index) or a network stream (URL). Holds the device until closed or exhausted."""

    def __init__(self, target: int | str):
        self.target = target
        self.kind = "webcam" if isinstance(target, int) else "stream"
        self.name = f"webcam:{target}" if isinstance(target, int) else str(target)
        self.max_pixels = current_max_pixels()
        with _quiet_opencv():
            cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            if isinstance(target, int):
                raise UsageError(f"no camera at index {target} (OpenCV could not open it; "
                                 "is a camera connected and free, and is this process allowed to use it?)")
            raise UsageError(f"{target}: cannot open the stream (check the URL, the network and the codec)")
        self._cap: cv2.VideoCapture | None = cap
        try:
            self._describe(cap)
        except ImageReadError:
            self.close()
            raise

    def __iter__(self) -> Iterator[Frame]:
        cap = self._cap
        if cap is None:
            raise RuntimeError(f"{self.name}: already read to its end or closed; open the source again")
        t0 = time.monotonic()
        index, failures = 0, 0
        try:
            while True:
                ok, img = cap.read()
                if not ok or img is None:
                    failures += 1
                    if failures >= LIVE_READ_RETRIES:
                        level = logging.INFO if index else logging.WARNING
                        log.log(level, "%s: no frame after %d tries; the source has ended (%d frames read)",
                                self.name, failures, index)
                        break
                    log.debug("%s: dropped a frame", self.name)
                    continue
                failures = 0
                # Wall-clock time: cameras and streams give no reliable container timestamps.
                yield Frame(img, index, time.monotonic() - t0, self.name, None, self.name)
                index += 1
        finally:
            self.close()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


@contextlib.contextmanager
def _quiet_opencv():
    """Silence OpenCV's own warnings while probing a camera (it logs one line per backend it tries)."""
    logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_mod is None:
        yield
        return
    old = logging_mod.getLogLevel()
    logging_mod.setLogLevel(logging_mod.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging_mod.setLogLevel(old)


def open_source(spec: str | int | Path, exclude: list[str | Path] | None = None) -> Source:
    """Open an image file, a folder (recursive), a video file, a webcam index (``0`` or ``"0"``) or a stream URL.

    ``exclude`` lists folders to leave out of a folder source (e.g. the output folder).
    Raises FileNotFoundError for a path that does not exist, ValueError for an
    unreadable image, an empty folder or a video with no frames (and :class:`~ferkit.imageio.ImageTooLargeError`,
    a ValueError, for an image or video frames over the pixel limit), :class:`~ferkit.errors.UsageError`
    (a RuntimeError) for a camera or stream that cannot be opened.
    """
    if isinstance(spec, bool):
        raise TypeError(f"source must be a path, URL or camera index, got {spec!r}")
    if isinstance(spec, (int, np.integer)):
        return LiveSource(int(spec))
    text = str(spec).strip()
    if text.isdigit():
        return LiveSource(int(text))
    if text.lower().startswith(STREAM_SCHEMES):
        return LiveSource(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return FolderSource(path, [Path(p) for p in exclude or []])
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (expected an image, a folder, a video, "
                                "a webcam index or a stream URL)")
    if is_image_file(path):
        return ImageSource(path)
    if path.is_file():  # content decides, not the name: a photo saved as .mp4 is read as the photo it is
        with open(path, "rb") as fh:
            kind = sniff_image_format(fh.read(16))
        if kind is not None and kind != "GIF":  # an (animated) GIF is read frame by frame, as a video
            log.warning("%s: a %s image named %s; reading it as a photo", path, kind, path.suffix or "without a suffix")
            return ImageSource(path)
    return VideoSource(path)
