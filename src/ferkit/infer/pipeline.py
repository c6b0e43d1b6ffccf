"""Recognition over a whole source: ``predict_stream`` (a generator of FrameResult) and ``run_predict`` (writes outputs).

    rec = Recognizer()
    for result in predict_stream("clip.mp4", rec, detect_every=3):
        result.frame, result.time_s, [(f.track_id, f.label) for f in result.faces]

    summary = run_predict("clip.mp4", "out/", rec)   # results.jsonl, annotated.mp4, timeline.csv/png, summary.json
    run_predict("photos/", "out/", RecognizerSettings(model="ferplus"), sinks=[my_sink])   # built from settings

Frames are read one at a time and classified in small groups (the faces of
all frames of a group go through the model in one batch), so memory stays
constant however long the video. For videos and cameras a :class:`Tracker`
gives each face a stable ``track_id`` and smooths its probabilities; with
``detect_every=N`` the detector runs on every N-th frame only and the boxes
in between are carried forward by optical flow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ferkit.infer.recognizer import Recognizer, RecognizerSettings
from ferkit.infer.results import Detection, FrameResult
from ferkit.infer.sinks import (  # noqa: F401 (the output names, public here too)
    FALLBACK_FPS,
    IMAGES_DIR,
    TIMELINE_CSV,
    TIMELINE_PNG,
    VIDEO_NAME,
    AnnotationSink,
    JsonlSink,
    Sink,
    TimelineSink,
    display_available,
)
from ferkit.infer.sources import Frame, Source, open_source
from ferkit.infer.tracking import SceneCutDetector, Tracker, shift_boxes

log = logging.getLogger(__name__)

RESULTS_NAME = "results.jsonl"
SUMMARY_NAME = "summary.json"


def _batches(frames: Iterator[Frame], size: int, limit: int | None) -> Iterator[list[Frame]]:
    group: list[Frame] = []
    for n, frame in enumerate(frames):
        if limit is not None and n >= limit:
            break
        group.append(frame)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


def predict_stream(
    source: str | int | Path | Source,
    recognizer: Any,
    detect_every: int = 1,
    track: bool = True,
    smooth: float | None = 0.6,
    max_frames: int | None = None,
    batch_frames: int = 4,
    flow: bool = True,
    iou_threshold: float = 0.3,
    max_age: int | None = None,
    keep_images: bool = True,
    scene_cuts: bool = True,
) -> Iterator[FrameResult]:
    """Recognise every face of every frame of ``source``, yielding one :class:`FrameResult` per frame.

    recognizer: a :class:`ferkit.infer.recognizer.Recognizer` (``detect``, ``recognize_frames``).
    detect_every: run the face detector on every N-th frame of a video; in between the last
        boxes are moved by optical flow (``flow``) or kept, and the faces there are classified.
    track / smooth: stable track ids and EMA smoothing (weight of the past, None = off) for
        videos and cameras; still images are always independent (track_id None).
    max_age: frames a lost track is kept (default: half a second of frames, at least 5).
    keep_images: attach the BGR frame to each result (for drawing); False when results are collected in a list.
    scene_cuts: for videos, end every track at a shot change and run the detector there afresh.
    """
    if detect_every < 1:
        raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    src = source if isinstance(source, Source) else open_source(source)
    sequence = src.is_video
    tracker = None
    if sequence and track:
        age = max_age if max_age is not None else max(5, round(0.5 * (src.fps or FALLBACK_FPS)))
        tracker = Tracker(iou_threshold=iou_threshold, max_age=age, smoothing=smooth,
                          min_confidence=getattr(recognizer, "min_confidence", 0.0))
    # A camera is shown live: classify each frame as it arrives instead of waiting for a group.
    group_size = 1 if src.is_live else max(1, batch_frames)
    prev_image, prev_dets, since_detect = None, [], 0
    is_cut = SceneCutDetector() if sequence and scene_cuts else None

    for group in _batches(iter(src), group_size, max_frames):
        try:
            detections: list[list[Detection]] = []
            cuts = [bool(is_cut(frame.image)) if is_cut is not None else False for frame in group]
            for frame, cut in zip(group, cuts):
                if not sequence or prev_image is None or cut or since_detect + 1 >= detect_every:
                    dets = recognizer.detect(frame.image)
                    since_detect = 0
                else:
                    # Between detections: carry the last boxes to this frame.
                    dets = shift_boxes(prev_image, frame.image, prev_dets) if flow else list(prev_dets)
                    since_detect += 1
                if sequence:
                    prev_image, prev_dets = frame.image, dets
                detections.append(dets)
            faces_per_frame = recognizer.recognize_frames([f.image for f in group], detections=detections)
        except Exception as exc:  # noqa: BLE001 - a live stream skips a bad frame; files fail loudly
            if not src.is_live:
                raise
            log.warning("%s: skipped frame %d (%s: %s)", src.name, group[0].index, type(exc).__name__, exc)
            continue
        for frame, faces, cut in zip(group, faces_per_frame, cuts):
            if tracker is not None:
                if cut:
                    tracker.cut()
                faces = tracker.update(faces)
            yield FrameResult(frame.source, frame.index, frame.time_s, faces, frame.image if keep_images else None,
                              name=frame.name, path=frame.path)


# ------------------------------------------------------------------ run with outputs


def _check_out_dir(out: Path, src: Source, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; give --out a folder")
    if src.path is not None and out.resolve() == src.path.resolve():
        raise ValueError(f"{out}: the output folder is the source itself; choose another --out")
    if src.kind == "folder" and src.path is not None and src.path.resolve() in out.resolve().parents:
        # As the data tools do: annotated copies inside an image folder are read as inputs by the next run,
        # and become training images when the folder is a dataset (DS/happy/pred/*.jpg labelled happy).
        raise ValueError(f"{out}: the output folder is inside the source folder {src.path}; its annotated images "
                         "would become inputs of the next run (training images, if it is a dataset). "
                         "Choose an --out outside it")
    earlier = [n for n in (RESULTS_NAME, SUMMARY_NAME) if (out / n).exists()]
    if earlier and not overwrite:
        raise FileExistsError(f"{out}: already holds the results of an earlier run ({', '.join(earlier)}); "
                              "choose another --out or pass --overwrite")
    if src.path is not None and src.path.is_file():
        for name in (RESULTS_NAME, SUMMARY_NAME, VIDEO_NAME, TIMELINE_CSV, TIMELINE_PNG):
            p = out / name
            if p.exists() and p.resolve() == src.path.resolve():
                raise FileExistsError(f"{p}: is the input file; refusing to overwrite it, choose another --out")


_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM for the block: one frame's outputs are written whole, and the signal's own handler
    (KeyboardInterrupt, or the CLI's for SIGTERM) runs right after it. Python runs signal handlers in the main
    thread only, so elsewhere (the server's video jobs) there is nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in _HELD_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if got:
            handler = old[got[0]]
            if callable(handler):
                handler(got[0], None)
            raise KeyboardInterrupt


def open_for_output(source: str | int | Path | Source, out: Path, overwrite: bool = False) -> Source:
    """The source, opened with the output folder left out of it, and the output folder checked against it
    (not the source, not inside a source folder, no earlier run's results unless ``overwrite``): the one place
    a prediction run decides both. A :class:`Source` given open is checked, not reopened."""
    src = source if isinstance(source, Source) else open_source(source, exclude=[out])
    try:
        _check_out_dir(out, src, overwrite)
    except BaseException:
        src.close()
        raise
    return src


def run_predict(
    source: str | int | Path | Source,
    out_dir: str | Path,
    recognizer: Recognizer | RecognizerSettings | None = None,
    *,
    detect_every: int = 1,
    track: bool = True,
    smooth: float | None = 0.6,
    max_frames: int | None = None,
    annotate: bool = True,
    bars: bool = True,
    show: bool = False,
    overwrite: bool = False,
    sinks: Sequence[Sink] = (),
) -> dict:
    """Recognise ``source`` and write into ``out_dir``; return a summary dict (also saved as summary.json).

    Writes ``results.jsonl`` (one object per face per frame), annotated images
    (``annotated/<relative name>.jpg``) or an annotated video (``annotated.mp4``,
    the source's fps and size), and for videos ``timeline.csv`` + ``timeline.png``
    (mean probability per emotion over time): one :mod:`~ferkit.infer.sinks` sink each. Refuses a folder that
    holds an earlier run's results unless ``overwrite``, and one inside a source folder; input files are never
    overwritten. ``recognizer``: a ready Recognizer, or the :class:`RecognizerSettings` to build one from (None:
    the defaults), built after the source opened. ``sinks``: more outputs (the CLI's lines and progress, the
    server's job log), written after the files for each frame. Ctrl-C (a KeyboardInterrupt; the CLI turns SIGTERM
    into one too) stops cleanly: the outputs up to the last frame are finished (a playable video, the timeline
    and its plot) and summary.json says ``interrupted``. A camera or stream, which only stops that way, then
    returns the summary; a file or folder, left unfinished, raises the KeyboardInterrupt again.
    """
    out = Path(out_dir)
    src = open_for_output(source, out, overwrite)
    try:
        if not isinstance(recognizer, Recognizer):
            recognizer = Recognizer.from_settings(recognizer or RecognizerSettings())
        out.mkdir(parents=True, exist_ok=True)
        annotation = AnnotationSink(out if annotate else None, bars=bars, show=show)
        outputs: list[Sink] = [JsonlSink(out / RESULTS_NAME)]
        if src.is_video:
            outputs.append(TimelineSink(out, recognizer.label_names))
        outputs.append(annotation)
    except BaseException:
        src.close()
        raise
    every = [*outputs, *sinks]
    for sink in every:
        sink.start(src)
    frames = faces = 0
    interrupted: KeyboardInterrupt | None = None
    files: dict[str, str] = {}
    t0 = time.perf_counter()
    try:
        # Still images one at a time, so each one's time (the CLI's line per image) is its own; grouping them
        # gained nothing measurable (16 photos: 1.7-1.8 s either way on 2 cores).
        for result in predict_stream(src, recognizer, detect_every=detect_every, track=track, smooth=smooth,
                                     max_frames=max_frames, batch_frames=4 if src.is_video else 1):
            with _signals_held():  # a frame is in every output or in none: Ctrl-C / SIGTERM land after it
                frames += 1
                faces += len(result.faces)
                go_on = [sink.write(result) is not False for sink in outputs]  # every output, even when one stops
            go_on += [sink.write(result) is not False for sink in sinks]
            if not all(go_on):
                break
    except KeyboardInterrupt as exc:
        interrupted = exc
        log.info("interrupted: finishing the outputs")
    finally:
        try:
            for sink in every:
                files.update(sink.close() or {})
        finally:
            src.close()
    seconds = time.perf_counter() - t0
    summary = {
        "source": src.name,
        "kind": src.kind,
        "frames": frames,
        "faces": faces,
        "annotated_images": annotation.annotated_images,
        "skipped": [{"file": str(f), "reason": r} for f, r in getattr(src, "skipped", [])],
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds > 0 else None,
        "detector": getattr(getattr(recognizer, "detector", None), "name", None),
        "model": str(getattr(recognizer, "model_name", "")),
        "detect_every": detect_every,
        "track": bool(track and src.is_video),
        "smooth": smooth if track and src.is_video else None,
        "interrupted": interrupted is not None,
        "files": files,
    }
    files["summary"] = str(out / SUMMARY_NAME)
    with open(out / SUMMARY_NAME, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    if interrupted is not None and not src.is_live:
        raise interrupted  # the outputs are complete up to here; the caller still learns the run was cut short
    return summary
