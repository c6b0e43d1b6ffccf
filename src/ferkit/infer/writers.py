"""Writers for recognition results: results.jsonl, annotated images and videos, emotion timelines.

All of them stream: a row or a frame is written as it comes, so a long video
needs constant memory. Each writer is a context manager.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import warnings
from fractions import Fraction
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from ferkit.infer.results import FrameResult

log = logging.getLogger(__name__)


def _same_file(a: Path, b: Path | None) -> bool:
    if b is None:
        return False
    try:
        return a.resolve() == Path(b).resolve() or (a.exists() and Path(b).exists() and a.samefile(b))
    except OSError:
        return False


class _TextFileWriter:
    """A writer over one text file handle ``self._fh``: close() and use as a context manager."""

    _fh: TextIO

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlWriter(_TextFileWriter):
    """``results.jsonl``: one JSON object per face per frame (see :meth:`FrameResult.records`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8")
        self.rows = 0

    def write(self, result: FrameResult) -> None:
        for line in result.json_lines():
            self._fh.write(line + "\n")
            self.rows += 1


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a results.jsonl back (one dict per face)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# Browsers play H.264 in MP4 (yuv420p, moov atom first), not OpenCV's MPEG-4 Part 2 ("mp4v"): the annotated
# video is encoded with PyAV (FFmpeg with libx264, shipped in its wheels), OpenCV only as a fallback.
H264_OPTIONS = {"preset": "veryfast", "crf": "23"}  # a few times faster than x264's default, at the same quality
# Audio codecs an MP4 holds and browsers play: copied as they are; any other (PCM, Vorbis, AC-3...) becomes AAC.
_MP4_AUDIO = frozenset({"aac", "mp3", "opus", "flac"})


def _even(n: int) -> int:
    return n + n % 2


def _h264_unavailable() -> str | None:
    """None when PyAV can encode H.264 here, else why not."""
    try:
        import av
    except ImportError:
        return "PyAV is not installed (pip install av)"
    try:
        av.codec.Codec("libx264", "w")
    except Exception as exc:  # noqa: BLE001 - any failure means: no encoder; the reason goes into the warning
        return f"PyAV's FFmpeg has no H.264 encoder ({exc})"
    return None


class _AudioTrack:
    """The audio track of a source file, muxed into an output container alongside the video as it is written.

    Packets are copied when MP4 and browsers take their codec, else decoded and encoded as AAC. Time 0 of the
    output is the source's first video frame, so sound and picture stay in step; packets that start before it
    or after the video's end are left out. Read as the video is written: constant memory for any length.
    """

    def __init__(self, source: Path, out, video_start_s: float):
        import av

        self._in = av.open(str(source))
        try:
            self._src = self._in.streams.audio[0]
            self.codec = self._src.codec_context.name
            self.copied = self.codec in _MP4_AUDIO
            if self.copied:
                add = getattr(out, "add_stream_from_template", None)  # PyAV >= 14; before: add_stream(template=)
                self._out = add(self._src) if add is not None else out.add_stream(template=self._src)
            else:
                self._out = out.add_stream("aac", rate=self._src.codec_context.sample_rate)
                # FFmpeg's AAC encoder refuses an unnamed layout ("1 channels", from PCM in MKV/AVI): name it.
                layout = self._src.codec_context.layout
                unnamed = layout.name.endswith("channels")
                self._out.layout = ("mono" if layout.nb_channels == 1 else "stereo") if unnamed else layout.name
                self._out.format = "fltp"  # the only sample format FFmpeg's AAC encoder takes; PyAV converts to it
            self._tb = self._src.time_base
            self._shift = round(video_start_s / self._tb)  # in the source's audio time base
            self._packets = self._in.demux(self._src)
        except BaseException:
            self._in.close()
            raise
        self._container = out
        self._pending = None  # a packet read but not yet due
        self._done = False

    def write_until(self, t_s: float) -> None:
        """Mux the source's audio up to ``t_s`` seconds of output time."""
        while not self._done:
            pkt = self._pending if self._pending is not None else next(self._packets, None)
            self._pending = None
            if pkt is None or pkt.pts is None and pkt.dts is None:
                if pkt is None:
                    self._done = True
                continue  # the demuxer's flush packet
            pts = (pkt.pts if pkt.pts is not None else pkt.dts) - self._shift
            if pts * self._tb >= t_s:
                self._pending = pkt
                return
            if pts < 0:
                continue  # sound from before the first video frame
            if self.copied:
                pkt.pts = pts
                if pkt.dts is not None:
                    pkt.dts -= self._shift
                pkt.stream = self._out
                self._container.mux(pkt)
            else:
                for frame in pkt.decode():
                    frame.pts -= self._shift
                    self._container.mux(self._out.encode(frame))

    def close(self, end_s: float) -> None:
        try:
            self.write_until(end_s)
            if not self.copied:
                self._container.mux(self._out.encode(None))
        finally:
            self._in.close()


class VideoWriter:
    """An MP4 video written frame by frame: H.264 that browsers play, with the source's sound when given.

    ``size`` is (width, height); frames of another size are resized to it. The
    video is H.264 (yuv420p, index at the front: ``+faststart``) through PyAV;
    H.264 needs even sides, so an odd width or height gets one more column or row
    (a copy of the last). ``audio_from``: a file whose first audio track is put
    beside the video (copied, or as AAC), in step with its first video frame.
    ``fourcc`` (e.g. "mp4v", "MJPG") asks for OpenCV's cv2.VideoWriter with that
    codec instead, which is also the fallback, with one warning, when H.264
    cannot be written here; neither carries sound. Raises RuntimeError when no
    video can be created at ``path``.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], fourcc: str | None = None,
                 audio_from: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not fps or fps <= 0:
            raise ValueError(f"{self.path}: fps must be positive, got {fps}")
        self.fps, self.size = float(fps), (int(size[0]), int(size[1]))
        self.frames = 0
        self.audio: str | None = None  # the audio codec written, None for a silent video
        self._av = self._cv = self._stream = self._audio = None
        if fourcc is None:
            why = _h264_unavailable()
            if why is None:
                self._open_h264(Path(audio_from) if audio_from else None)
                return
            log.warning("%s: %s; writing MPEG-4 Part 2 (mp4v) with OpenCV instead, without sound: the file may not "
                        "play in web browsers (VLC and ffplay play it)", self.path, why)
            fourcc = "mp4v"
        self.codec = fourcc
        self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size)
        if not self._cv.isOpened():
            raise RuntimeError(f"{self.path}: OpenCV cannot write a {fourcc} video here (codec or folder not writable)")

    def _open_h264(self, audio_from: Path | None) -> None:
        import av

        self.codec = "h264"
        # 29.97 fps is 30000/1001 in the file's time base, not a float approximation.
        rate = Fraction(self.fps).limit_denominator(1001)
        try:
            self._av = av.open(str(self.path), "w", format="mp4", container_options={"movflags": "+faststart"})
            self._stream = self._av.add_stream("libx264", rate=rate, options=dict(H264_OPTIONS))
            self._stream.width, self._stream.height = _even(self.size[0]), _even(self.size[1])
            self._stream.pix_fmt = "yuv420p"  # 4:2:0: what browsers decode (x264 would keep 4:4:4 from BGR)
            if audio_from is not None:
                self._audio = self._open_audio(audio_from)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            container, self._av = self._av, None
            if container is not None:
                with contextlib.suppress(Exception):  # the error that matters is exc
                    container.close()
            raise RuntimeError(f"{self.path}: cannot write an H.264 MP4 here ({exc})") from exc

    def _open_audio(self, source: Path) -> _AudioTrack | None:
        import av

        try:
            with av.open(str(source)) as probe:
                if not probe.streams.audio:
                    return None
                video = probe.streams.video[0] if probe.streams.video else None
                start = float(video.start_time * video.time_base) if video is not None and video.start_time else 0.0
            track = _AudioTrack(source, self._av, start)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            # The annotated pictures matter more than the sound: a track that cannot be carried over is left out.
            log.warning("%s: cannot take over the sound of %s (%s); the video is written without sound",
                        self.path, source, exc)
            return None
        self.audio = track.codec if track.copied else "aac"
        return track

    def write(self, image_bgr: np.ndarray) -> None:
        if (image_bgr.shape[1], image_bgr.shape[0]) != self.size:
            image_bgr = cv2.resize(image_bgr, self.size, interpolation=cv2.INTER_AREA)
        if image_bgr.ndim == 2:
            image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
        if self._cv is not None:
            self._cv.write(np.ascontiguousarray(image_bgr))
            self.frames += 1
            return
        import av

        pad_w, pad_h = self._stream.width - self.size[0], self._stream.height - self.size[1]
        if pad_w or pad_h:
            image_bgr = cv2.copyMakeBorder(image_bgr, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image_bgr), format="bgr24")  # (H, W, 3) uint8 BGR
        frame.pts = self.frames  # in 1/fps units: frame i shows at i / fps
        self._av.mux(self._stream.encode(frame))
        self.frames += 1
        if self._audio is not None:
            self._audio.write_until(self.frames / self.fps)

    def close(self) -> None:
        if self._cv is not None:
            self._cv.release()
            self._cv = None
        if self._av is None:
            return
        container, self._av = self._av, None
        try:
            if self._stream is not None and self.frames:
                container.mux(self._stream.encode(None))  # the frames x264 still holds
            if self._audio is not None:
                self._audio.close(self.frames / self.fps)
            if not self.frames:
                container.start_encoding()  # a valid, empty MP4 rather than no file at all
        finally:
            container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
            return
        with contextlib.suppress(Exception):  # the error raised inside the with block is the one to report
            self.close()


class AnnotatedImageWriter:
    """Annotated copies of images as ``root/<relative name>.jpg`` (the input's suffix replaced by .jpg).

    Two inputs that map to the same name in one run are both kept (``name_2.jpg``, ...),
    and an output is never written over an input file.
    """

    def __init__(self, root: str | Path, quality: int = 92):
        self.root = Path(root)
        self.quality = quality
        self._used: set[str] = set()
        self.written: list[Path] = []

    def path_for(self, name: str, source: Path | None = None) -> Path:
        rel = Path(name).with_suffix(".jpg")
        candidate, k = rel, 1
        while candidate.as_posix() in self._used or _same_file(self.root / candidate, source):
            k += 1
            candidate = rel.with_name(f"{rel.stem}_{k}{rel.suffix}")
        self._used.add(candidate.as_posix())
        return self.root / candidate

    def write(self, image_bgr: np.ndarray, name: str, source: Path | None = None) -> Path:
        path = self.path_for(name, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError(f"{path}: OpenCV could not encode the annotated image")
        buf.tofile(str(path))
        self.written.append(path)
        return path


class TimelineWriter(_TextFileWriter):
    """Emotion over time for a video: ``timeline.csv`` (one row per frame) and ``timeline.png``.

    A row holds ``frame, time_s, faces`` and the mean probability of each emotion
    over the frame's faces (empty when the frame has no face). With
    ``per_track=True`` the CSV holds one row per tracked face instead
    (``frame, time_s, track_id, <emotions>``) and the plot shows the mean.
    """

    def __init__(self, csv_path: str | Path, label_names: tuple[str, ...] | list[str], per_track: bool = False):
        self.path = Path(csv_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.label_names = list(label_names)
        self.per_track = per_track
        self._fh = open(self.path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._fh)
        key = ["track_id"] if per_track else ["faces"]
        self._csv.writerow(["frame", "time_s", *key, *self.label_names])
        self.rows = 0

    def write(self, result: FrameResult) -> None:
        if self.per_track:
            for f in result.faces:
                self._csv.writerow([result.frame, f"{result.time_s:.4f}", f.track_id,
                                    *(f"{f.probs.get(k, 0.0):.5f}" for k in self.label_names)])
                self.rows += 1
            return
        if result.faces:
            mean = np.mean([[f.probs.get(k, 0.0) for k in self.label_names] for f in result.faces], axis=0)
            values = [f"{v:.5f}" for v in mean]
        else:
            values = [""] * len(self.label_names)
        self._csv.writerow([result.frame, f"{result.time_s:.4f}", len(result.faces), *values])
        self.rows += 1


def plot_timeline(csv_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Plot a timeline CSV written by :class:`TimelineWriter`: mean probability per emotion over time."""
    from ferkit.infer.render import emotion_colour
    from ferkit.plots.figures import plot_timeline as draw

    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    per_track = header[2] == "track_id"
    names = header[3:]
    # Mean over the faces of each frame; NaN where a frame has no face leaves a gap in the lines.
    frames: dict[int, tuple[float, list[np.ndarray]]] = {}
    for r in rows:
        vals = np.array([float(v) if v else np.nan for v in r[3:]])
        t, lst = frames.setdefault(int(r[0]), (float(r[1]), []))
        lst.append(vals)
    times = np.array([frames[k][0] for k in sorted(frames)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # frames without faces: a NaN on purpose
        probs = np.array([np.nanmean(frames[k][1], axis=0) for k in sorted(frames)]).reshape(len(times), len(names))

    colours = [tuple(v / 255 for v in reversed(emotion_colour(name))) for name in names]  # BGR -> RGB in [0, 1]
    ylabel = "mean probability" + (" over tracks" if per_track else " over faces")
    return draw(times, probs, names, colours, png_path, title=title, ylabel=ylabel)

