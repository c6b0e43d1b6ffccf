"""Where :func:`~ferkit.infer.pipeline.run_predict` puts each frame's result: one :class:`Sink` per output.

    sinks = [JsonlSink(out / "results.jsonl"), TimelineSink(out, labels), AnnotationSink(out)]
    run_predict("clip.mp4", out, recognizer, sinks=[my_sink])   # the output sinks are made by run_predict

A sink is told the source once (:meth:`Sink.start`), gets every :class:`~ferkit.infer.results.FrameResult`
in order (:meth:`Sink.write`; returning False stops the run, as closing the live window does), and is closed
once at the end, also after Ctrl-C or an error (:meth:`Sink.close`, which returns the files it wrote by key,
for the run's summary). The CLI's progress and per-image lines, the server's video-job log and Ray's parts
are sinks too; none of them sees a frame that the others do not.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

import cv2

from ferkit.infer.render import draw_faces
from ferkit.infer.results import FrameResult
from ferkit.infer.sources import Source
from ferkit.infer.writers import AnnotatedImageWriter, JsonlWriter, TimelineWriter, VideoWriter, plot_timeline

log = logging.getLogger(__name__)

VIDEO_NAME = "annotated.mp4"
IMAGES_DIR = "annotated"
TIMELINE_CSV = "timeline.csv"
TIMELINE_PNG = "timeline.png"
FALLBACK_FPS = 30.0  # for a camera or stream that does not state its frame rate


class Sink:
    """One output of a prediction run. Subclasses override :meth:`write`, and :meth:`start`/:meth:`close` as needed."""

    def start(self, source: Source) -> None:
        """Called once, with the opened source, before the first frame."""

    def write(self, result: FrameResult) -> bool | None:
        """One frame's result; return False to stop the run after this frame."""
        raise NotImplementedError

    def close(self) -> dict[str, str]:
        """Called once at the end (also after an interruption or an error); the files written, by key."""
        return {}


class JsonlSink(Sink):
    """``results.jsonl`` (one JSON object per face per frame), or JSON lines on a text stream such as stdout."""

    def __init__(self, target: str | Path | TextIO, key: str = "results"):
        self.key = key
        self.stream = target if hasattr(target, "write") else None
        self.writer = None if self.stream is not None else JsonlWriter(target)

    def write(self, result: FrameResult) -> None:
        if self.writer is not None:
            self.writer.write(result)
            return
        for line in result.json_lines():
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> dict[str, str]:
        if self.writer is None:
            return {}
        self.writer.close()
        return {self.key: str(self.writer.path)}


class TimelineSink(Sink):
    """A video's emotion over time: ``timeline.csv`` as it goes, ``timeline.png`` at the end."""

    def __init__(self, out: str | Path, label_names: tuple[str, ...]):
        self.out = Path(out)
        self.writer = TimelineWriter(self.out / TIMELINE_CSV, label_names)
        self.title = ""

    def start(self, source: Source) -> None:
        self.title = f"{source.name}: emotion over time"

    def write(self, result: FrameResult) -> None:
        self.writer.write(result)

    def close(self) -> dict[str, str]:
        self.writer.close()
        files = {"timeline_csv": str(self.writer.path)}
        if self.writer.rows:
            files["timeline_png"] = str(plot_timeline(self.writer.path, self.out / TIMELINE_PNG, title=self.title))
        return files


def display_available() -> tuple[bool, str]:
    """Whether cv2.imshow can open a window here, and why not."""
    gui = ""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() == "NONE":
        return False, "this OpenCV build has no GUI support (opencv-python-headless); install opencv-python for --show"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    return True, ""


class LiveWindow:
    """A cv2.imshow window; ``show`` returns False once the user pressed q or Esc (or the window failed)."""

    def __init__(self, title: str = "ferkit"):
        self.title = title
        self.ok = True

    def show(self, image_bgr) -> bool:
        if not self.ok:
            return True
        try:
            cv2.imshow(self.title, image_bgr)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as exc:
            log.warning("live window failed (%s); continuing without it", exc.msg.strip() if hasattr(exc, "msg") else exc)
            self.ok = False
            return True
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self.ok:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass


class AnnotationSink(Sink):
    """Each frame drawn once (boxes, labels, bars), then written (``annotated/<relative name>.jpg`` for images,
    ``annotated.mp4`` for videos, with the source's fps, size and audio) and/or shown in a live window."""

    def __init__(self, out: str | Path | None, bars: bool = True, show: bool = False):
        self.out = Path(out) if out is not None else None
        self.bars, self.show = bars, show
        self.src: Source | None = None
        self.images: AnnotatedImageWriter | None = None
        self.video: VideoWriter | None = None
        self.window: LiveWindow | None = None

    @property
    def annotated_images(self) -> int:
        return len(self.images.written) if self.images is not None else 0

    def start(self, source: Source) -> None:
        self.src = source
        if self.out is not None and not source.is_video:
            self.images = AnnotatedImageWriter(self.out / IMAGES_DIR)
        if self.show:
            ok, why = display_available()
            if ok:
                self.window = LiveWindow(f"ferkit: {source.name}")
            else:
                log.warning("--show: no live window, %s; writing the outputs only", why)

    def write(self, result: FrameResult) -> bool | None:
        if self.out is None and self.window is None:
            return None
        drawn = draw_faces(result.image, result.faces, bars=self.bars)
        if self.out is not None and self.src.is_video:
            if self.video is None:
                h, w = drawn.shape[:2]
                self.video = VideoWriter(self.out / VIDEO_NAME, self.src.fps or FALLBACK_FPS, (w, h), audio_from=self.src.path)
            self.video.write(drawn)
        elif self.images is not None:
            self.images.write(drawn, result.name or Path(result.source).name, source=result.path)
        if self.window is not None and not self.window.show(drawn):
            log.info("live window closed by the user")
            return False
        return None

    def close(self) -> dict[str, str]:
        files = {}
        if self.video is not None:
            self.video.close()
            files["video"] = str(self.video.path)
        if self.images is not None:
            files["annotated"] = str(self.images.root)
        if self.window is not None:
            self.window.close()
        return files
