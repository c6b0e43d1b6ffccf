"""Batch recognition at scale on Ray Data: ``predict_ray(sources, out_dir)``, behind ``pip install -e ".[ray]"``.

    summary = predict_ray(["photos/", "clips/a.mp4"], "out/", workers=4)              # a local Ray, 4 actors
    summary = predict_ray(["/data/faces/"], "out/", address="auto", workers=32, gpus_per_worker=0.25)

How the work is split, so that the results equal a single-process ``ferkit predict`` face for face:

- **Images** (a folder, recursively, or files) are rows of a Ray Dataset; ``map_batches`` runs them on a pool
  of actors, one :class:`~ferkit.infer.recognizer.Recognizer` (one model) per actor, on CPU or GPU
  (``gpus_per_worker``). Each image is independent, so any batching gives the same faces.
- **Videos** are distributed whole: one row per file, handled by one actor with the normal single-process
  :func:`~ferkit.infer.pipeline.predict_stream` (tracking, smoothing, scene cuts, ``detect_every``). Those need
  the frames in order, so splitting a video into frame batches would lose the track ids. Many videos run in
  parallel; one long video runs on one actor.
- Ray does the distribution; this driver is the only writer. Results stream back through Ray and are appended
  to ``out/ray/parts/part-N.jsonl``, and each finished source to ``out/ray/done.txt``. A rerun skips the
  sources in the done-list, so a killed run loses at most its in-flight batches; delete a line of
  ``done.txt`` to redo that source. At the end the parts are merged, in the order of the sources, into
  ``results.jsonl`` (the schema of :meth:`FrameResult.records`) or ``results.parquet``, and ``summary.json``.

Workers read the input files by path: on a cluster they must see the same paths (a shared file system).
Outputs are results only: no annotated images or videos, no timelines (``ferkit predict`` makes those).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import UsageError
from ferkit.imageio import is_image_file
from ferkit.infer.recognizer import RecognizerSettings
from ferkit.infer.sources import STREAM_SCHEMES, list_files

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[ray]"'
RESULTS_JSONL = "results.jsonl"
RESULTS_PARQUET = "results.parquet"
SUMMARY_NAME = "summary.json"
STATE_DIR = "ray"  # out/ray/: done.txt, settings.json, parts/
FORMATS = ("jsonl", "parquet")
VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp"}
VIDEO_CHUNK_FRAMES = 500  # a video's results travel back in pieces of this many frames: bounded memory per row
PARQUET_ROWS = 10_000  # faces per Parquet row group written
# Settings a resumed run must share with the first; workers, threads and device only change the speed.
RESUME_KEYS = ("model_sha256", "detector", "yunet", "min_face", "min_confidence", "backend", "detect_every", "track", "smooth",
               "max_frames")


def import_ray():
    """``ray`` with Ray Data, or a UsageError saying how to install it."""
    try:
        import ray
        import ray.data  # the extra's part this module needs (not always loaded by `import ray`)
    except ImportError as exc:
        raise UsageError(f"the ray engine needs Ray Data, which is not installed ({exc}); install it with  "
                         f"{INSTALL_HINT}  (or pip install \"ray[data]\")") from exc
    return ray


# ------------------------------------------------------------------ sources


def _is_video_name(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


def expand_sources(sources: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> list[tuple[str, str]]:
    """``(kind, path)`` of every input, kind "image" or "video", in order and without repeats.

    A folder gives its images in ``ferkit predict``'s order (recursive, sorted, outputs of earlier runs left
    out), then its video files; a file is an image by its extension, else a video. Cameras and streams are
    refused: each is one live sequence, for ``ferkit predict`` (the local engine).
    """
    excluded = [Path(p) for p in exclude]
    items: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(kind: str, path: str) -> None:
        if path not in seen:
            seen.add(path)
            items.append((kind, path))

    if isinstance(sources, (str, Path)):
        sources = [sources]
    for spec in sources:
        text = str(spec).strip()
        if isinstance(spec, int) or text.isdigit() or text.lower().startswith(STREAM_SCHEMES):
            raise UsageError(f"{spec}: a camera or stream is one live sequence; the ray engine reads image and video "
                             "files (use the local engine for it)")
        path = Path(text).expanduser()
        if path.is_dir():
            # one listing (each real file once, symlink loops reported once), images first as `ferkit predict` reads them
            found = list_files(path, lambda n: is_image_file(n) or _is_video_name(n), excluded)
            images = [p for p in found if is_image_file(p)]
            videos = [p for p in found if not is_image_file(p)]
            if not images and not videos:
                raise ValueError(f"{path}: no images or videos found in this folder or below it")
            for p in images:
                add("image", str(p))
            for p in videos:
                add("video", str(p))
        elif not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder (expected an image, a video or a folder)")
        else:
            add("image" if is_image_file(path) else "video", str(path))
    if not items:
        raise ValueError("no sources given; expected image files, video files or folders")
    return items


# ------------------------------------------------------------------ the actors (one model each)


def _rows(source: str, records: list[dict] | None, chunk: int, frames: int, last: bool, error: str = "") -> dict[str, Any]:
    """One output row: a source's records (JSON), or the ``chunk``-th piece of a video's; ``last`` ends the source."""
    return {"source": source, "chunk": chunk, "frames": frames, "last": last, "error": error,
            "records": json.dumps(records if records is not None else [])}


def _batch(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows as Ray Data's numpy batch format (one array per column)."""
    keys = ("source", "chunk", "frames", "last", "error", "records")
    return {k: np.array([r[k] for r in rows], dtype=object if k in ("source", "error", "records") else None)
            for k in keys}


class _Worker:
    """Holds one Recognizer for the life of a Ray actor (the model is loaded once per actor, not per batch)."""

    def __init__(self, settings: dict[str, Any]):
        import cv2

        from ferkit.infer.recognizer import Recognizer

        cv2.setNumThreads(settings["recognizer"].threads)  # one actor per core: OpenCV's and torch's own pools would fight
        self.settings = settings
        self.recognizer = Recognizer.from_settings(settings["recognizer"])


class ImageWorker(_Worker):
    """A batch of image paths in, one row per image out (its faces as results.jsonl records)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ferkit.imageio import read_bgr
        from ferkit.infer.results import FrameResult

        rows: list[dict[str, Any]] = []
        images, names = [], []
        for source, path in zip(batch["source"], batch["path"]):
            try:
                images.append(read_bgr(path, max_pixels=self.settings["max_pixels"]))  # (H, W, 3) uint8 BGR
                names.append(str(source))
            except (ValueError, OSError) as exc:  # unreadable or too large: reported, and retried by a rerun
                rows.append(_rows(str(source), None, 0, 0, True, f"{type(exc).__name__}: {exc}"))
        rec = self.recognizer
        # Detect per image, then classify the faces of the whole batch in one forward pass (as predict_stream does
        # for a group of video frames): fewer, larger forward passes, the same faces.
        faces = rec.recognize_frames(images, detections=[rec.detect(img) for img in images]) if images else []
        for name, found in zip(names, faces):
            rows.append(_rows(name, FrameResult(name, 0, 0.0, found).records(), 0, 1, True))
        return _batch(rows)


class VideoWorker(_Worker):
    """One video path per call, run whole by ``predict_stream`` (tracking needs the frames in order); its
    results come back in pieces of VIDEO_CHUNK_FRAMES frames, the last one marked ``last``."""

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        from ferkit.infer.pipeline import predict_stream
        from ferkit.infer.sources import VideoSource

        s = self.settings
        for source, path in zip(batch["source"], batch["path"]):
            source = str(source)
            records: list[dict] = []
            frames = 0
            try:
                # the run's pixel limit guards video frames as it guards images, checked from the header
                video = VideoSource(Path(str(path)), max_pixels=s["max_pixels"])
                for result in predict_stream(video, self.recognizer, detect_every=s["detect_every"], track=s["track"],
                                             smooth=s["smooth"], max_frames=s["max_frames"], batch_frames=4,
                                             keep_images=False):
                    result.source = source  # the name the user gave, as `ferkit predict` writes it
                    records.extend(result.records())
                    frames += 1
                    if frames % VIDEO_CHUNK_FRAMES == 0:
                        yield _batch([_rows(source, records, frames // VIDEO_CHUNK_FRAMES - 1, VIDEO_CHUNK_FRAMES, False)])
                        records = []
            except (ValueError, OSError) as exc:  # not a video, truncated: reported, and retried by a rerun
                yield _batch([_rows(source, None, 0, 0, False, f"{type(exc).__name__}: {exc}")])
                continue
            yield _batch([_rows(source, records, frames // VIDEO_CHUNK_FRAMES, frames % VIDEO_CHUNK_FRAMES, True)])


# ------------------------------------------------------------------ the run's state: done-list and parts


class RunState:
    """``out/ray/``: ``settings.json``, ``done.txt`` (one finished source a line) and ``parts/part-N.jsonl``
    (one line per source or per piece of a video: source, chunk, frames, last, records). The done-list is
    written after the part line, so a source in it always has all its results in a part."""

    def __init__(self, out: Path):
        self.root = out / STATE_DIR
        self.parts_dir = self.root / "parts"
        self.done_path = self.root / "done.txt"
        self.settings_path = self.root / "settings.json"
        self._index: dict[str, tuple[Path, list[int]]] | None = None  # read from the parts once per change

    def exists(self) -> bool:
        return self.settings_path.is_file()

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse to resume with settings that change the results: the merge would mix two models or two trackers.
        Workers, threads and device may change between runs."""
        old = json.loads(self.settings_path.read_text(encoding="utf-8"))
        diff = [f"{k}: {old.get(k)!r} -> {settings[k]!r}" for k in RESUME_KEYS if old.get(k) != settings[k]]
        if diff:
            raise UsageError(f"{self.root.parent}: holds a ray run made with other settings ({'; '.join(diff)}); "
                             "resume with the same settings, or pass --overwrite (overwrite=True) to start afresh")

    def start(self, settings: dict[str, Any]) -> None:
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        record = {k: v for k, v in settings.items() if k != "recognizer"}  # its fields are listed one by one
        self.settings_path.write_text(json.dumps(record, indent=2), encoding="utf-8")

    def done(self) -> set[str]:
        """Sources in the done-list whose results are complete in a part (a deleted part means: redo)."""
        if not self.done_path.is_file():
            return set()
        listed = {line for line in self.done_path.read_text(encoding="utf-8").splitlines() if line}
        return listed & self.index().keys()

    def part_files(self) -> list[Path]:
        return sorted(self.parts_dir.glob("part-*.jsonl")) if self.parts_dir.is_dir() else []

    def index(self) -> dict[str, tuple[Path, list[int]]]:
        """Source -> (part file, byte offsets of its lines) of its latest complete result."""
        if self._index is not None:
            return self._index
        found: dict[str, tuple[Path, list[int]]] = {}
        for part in self.part_files():
            lines: dict[str, list[int]] = {}
            complete: set[str] = set()
            offset = 0
            with open(part, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # the torn last line of a killed run
                    entry = json.loads(line)
                    if entry["chunk"] == 0:  # a source's first piece: a task Ray retried starts its lines again
                        lines[entry["source"]] = []
                    lines[entry["source"]].append(offset)
                    if entry["last"]:
                        complete.add(entry["source"])
                    offset += len(line)
            for source in complete:  # a later part (a redo) wins
                found[source] = (part, lines[source])
        self._index = found
        return found

    def new_part(self) -> Path:
        self._index = None  # the parts change from here on
        n = max((int(p.stem.split("-")[1]) for p in self.part_files()), default=0) + 1
        return self.parts_dir / f"part-{n:05d}.jsonl"

    def iter_entries(self, sources: list[str], done: set[str]) -> Iterator[dict]:
        """Each done source's part lines, in the order of ``sources`` (the merge; one line in memory at a time)."""
        index = self.index()
        with contextlib.ExitStack() as stack:
            handles: dict[Path, Any] = {}
            for source in sources:
                if source not in done:
                    continue
                part, offsets = index[source]
                if part not in handles:
                    handles[part] = stack.enter_context(open(part, "rb"))
                for off in offsets:
                    handles[part].seek(off)
                    yield json.loads(handles[part].readline())


def _write_jsonl(entries: Iterator[dict], path: Path) -> tuple[int, int]:
    """results.jsonl, written whole then renamed into place; (frames, faces)."""
    frames = faces = 0
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        for entry in entries:
            frames += entry["frames"]
            for rec in entry["records"]:
                fh.write(json.dumps(rec) + "\n")
                faces += 1
    os.replace(tmp, path)
    return frames, faces


def _parquet_schema(label_names: list[str]):
    import pyarrow as pa

    return pa.schema([("source", pa.string()), ("frame", pa.int64()), ("time_s", pa.float64()), ("track_id", pa.int64()),
                      ("box", pa.list_(pa.int64())), ("score", pa.float64()), ("label", pa.string()),
                      ("probs", pa.struct([(n, pa.float64()) for n in label_names])),
                      ("landmarks", pa.list_(pa.list_(pa.float64())))])


def _write_parquet(entries: Iterator[dict], path: Path) -> tuple[int, int]:
    """results.parquet: one row per face, the columns of results.jsonl (probs a struct of one field per label)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames = faces = 0
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    writer, rows = None, []

    def flush() -> None:
        nonlocal writer
        if writer is None:
            writer = pq.ParquetWriter(tmp, _parquet_schema(list(rows[0]["probs"])))
        writer.write_table(pa.Table.from_pylist(rows, schema=writer.schema))
        rows.clear()

    try:
        for entry in entries:
            frames += entry["frames"]
            for rec in entry["records"]:
                rows.append(rec)
                faces += 1
                if len(rows) >= PARQUET_ROWS:
                    flush()
        if rows:
            flush()
        if writer is None:  # no face anywhere: an empty file with the default label set's columns
            from ferkit.labels import FER2013

            writer = pq.ParquetWriter(tmp, _parquet_schema(list(FER2013)))
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, path)
    return frames, faces


# ------------------------------------------------------------------ the run


def _settings(recognizer: RecognizerSettings, detect_every, track, smooth, max_frames, max_pixels) -> dict[str, Any]:
    """What the workers need (``recognizer``: the settings with absolute paths, as the actors may run elsewhere than
    this folder), and what a resumed run must share with the first (the model by content: its digest)."""
    from ferkit.engine.classify import ModelRef

    ref = ModelRef.resolve(recognizer.model)  # once: its digest, and its files' absolute paths for the actors
    portable = recognizer.replace(model=ref).portable()
    return {"recognizer": portable, "model": portable.model, "model_sha256": ref.digest,
            "detector": portable.detector, "yunet": portable.yunet_path, "min_face": portable.min_face,
            "min_confidence": portable.min_confidence, "backend": portable.backend, "device": portable.device,
            "threads": portable.threads, "detect_every": detect_every, "track": track,
            "smooth": smooth if track else None, "max_frames": max_frames, "max_pixels": max_pixels}


def predict_ray(
    sources: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    *,
    address: str | None = None,
    workers: int = 2,
    recognizer: RecognizerSettings | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    batch_size: int = 16,
    detect_every: int = 1,
    track: bool = True,
    smooth: float | None = 0.6,
    max_frames: int | None = None,
    max_pixels: int | None = None,
    format: str = "jsonl",
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Recognise every face in ``sources`` (image files, video files, folders) on a Ray cluster; return the summary.

    ``address``: the Ray cluster ("auto", "ray://head:10001", ...); None uses the Ray already started in this
    process, else starts a local one (and shuts it down at the end). ``workers``: actors, one model each, with
    ``cpus_per_worker`` CPUs (and as many model threads) and ``gpus_per_worker`` GPUs (a fraction shares one).
    ``recognizer``: the settings each actor builds its Recognizer from (None: the defaults); their threads are
    ``cpus_per_worker``, and their device "auto" means "cuda" with GPUs, else "cpu". ``batch_size``: images per actor call. ``max_frames``: per
    video. ``format``: "jsonl" (results.jsonl) or "parquet" (results.parquet). A rerun into the same
    ``out_dir`` skips the sources already done (resume); ``overwrite`` starts afresh. ``on_progress(done,
    total)`` is called as sources finish. The other options are those of :func:`~ferkit.infer.pipeline.run_predict`.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; valid: {', '.join(FORMATS)}")
    for name, value in (("workers", workers), ("batch_size", batch_size), ("detect_every", detect_every)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise ValueError(f"expected cpus_per_worker > 0 and gpus_per_worker >= 0, got {cpus_per_worker} and {gpus_per_worker}")
    ray = import_ray()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; give out_dir a folder")
    items = expand_sources(sources, exclude=[out])
    rec = recognizer or RecognizerSettings()
    device = rec.device if rec.device != "auto" else ("cuda" if gpus_per_worker > 0 else "cpu")
    settings = _settings(rec.replace(device=device, threads=max(1, int(cpus_per_worker))), detect_every, track, smooth,
                         max_frames, max_pixels)

    state = RunState(out)
    if overwrite:
        shutil.rmtree(state.root, ignore_errors=True)
    elif state.exists():
        state.check_settings(settings)
    elif any((out / n).exists() for n in (RESULTS_JSONL, RESULTS_PARQUET, SUMMARY_NAME)):
        raise FileExistsError(f"{out}: already holds the results of an earlier run that is not a ray run to resume; "
                              "choose another output folder or pass --overwrite (overwrite=True)")
    state.start(settings)
    done_before = state.done()
    pending = [(k, p) for k, p in items if p not in done_before]
    log.info("%d source(s): %d done before, %d to do", len(items), len(items) - len(pending), len(pending))

    t0 = time.perf_counter()
    errors: dict[str, str] = {}
    frames_now = 0
    if pending:
        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        elif address is not None:
            log.info("Ray is already running in this process: using it, not %s", address)
        try:
            frames_now = _run_pending(ray, pending, state, settings, workers, batch_size, cpus_per_worker,
                                      gpus_per_worker, errors, on_progress, len(items) - len(pending), len(items))
        finally:
            if started:
                ray.shutdown()
    seconds = time.perf_counter() - t0

    done = state.done()
    order = [p for _, p in items]
    result_path = out / (RESULTS_JSONL if format == "jsonl" else RESULTS_PARQUET)
    write = _write_jsonl if format == "jsonl" else _write_parquet
    frames, faces = write(state.iter_entries(order, done), result_path)
    summary = {
        "engine": "ray",
        "sources": len(items),
        "images": sum(k == "image" for k, _ in items),
        "videos": sum(k == "video" for k, _ in items),
        "done_before": len(items) - len(pending),
        "processed": sum(p in done for _, p in pending),
        "frames": frames,
        "faces": faces,
        "skipped": [{"file": p, "reason": why} for p, why in errors.items()],
        "seconds": round(seconds, 3),
        "fps": round(frames_now / seconds, 2) if frames_now and seconds > 0 else None,
        "workers": workers,
        "address": address,
        **{k: settings[k] for k in ("model", "detector", "backend", "device", "detect_every", "track", "smooth")},
        "files": {"results": str(result_path), "summary": str(out / SUMMARY_NAME), "done_list": str(state.done_path),
                  "parts": str(state.parts_dir)},
    }
    with open(out / SUMMARY_NAME, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    return summary


class _Sink:
    """Where the driver puts what comes back from Ray: the part file, then the done-list, then the progress."""

    def __init__(self, part, done_list, errors: dict[str, str], on_progress, done: int, total: int):
        self.part, self.done_list, self.errors, self.on_progress = part, done_list, errors, on_progress
        self.done, self.total, self.frames = done, total, 0

    def take(self, batch: dict[str, np.ndarray]) -> None:
        finished = []
        for source, chunk, n, last, error, records in zip(batch["source"], batch["chunk"], batch["frames"],
                                                          batch["last"], batch["error"], batch["records"]):
            source = str(source)
            if error:
                self.errors[source] = str(error)
                log.warning("skipped %s (%s)", source, error)
                continue
            # The records arrive as JSON text: written as they are, not parsed and dumped again.
            self.part.write(f'{{"source": {json.dumps(source)}, "chunk": {int(chunk)}, "frames": {int(n)}, '
                            f'"last": {"true" if last else "false"}, "records": {records}}}\n')
            self.frames += int(n)
            if last:
                finished.append(source)
        self.part.flush()  # results first, then the done-list: a source listed done always has its results
        for source in finished:
            self.done_list.write(source + "\n")
        self.done_list.flush()
        self.done += len(finished)
        if self.on_progress is not None and finished:
            self.on_progress(self.done, self.total)


def _run_pending(ray, pending, state: RunState, settings, workers, batch_size, cpus, gpus, errors, on_progress,
                 done: int, total: int) -> int:
    """Run the pending sources on Ray, appending results to a new part and the done-list as they arrive; frames done."""
    ctx = ray.data.DataContext.get_current()
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False  # the caller reports progress (on_progress)
    part = state.new_part()
    try:
        with open(part, "a", encoding="utf-8") as fh, open(state.done_path, "a", encoding="utf-8") as done_fh:
            sink = _Sink(fh, done_fh, errors, on_progress, done, total)
            # Images in batches; videos one per call (whole, for tracking). Two pools, one after the other.
            for kind, worker, size in (("image", ImageWorker, batch_size), ("video", VideoWorker, 1)):
                # Absolute paths for reading: an actor does not run in the folder of this process.
                rows = [{"source": p, "path": str(Path(p).resolve())} for k, p in pending if k == kind]
                if not rows:
                    continue
                ds = ray.data.from_items(rows).map_batches(
                    worker, fn_constructor_kwargs={"settings": settings}, batch_size=size, num_cpus=cpus,
                    num_gpus=gpus or None, compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
                )
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):  # as the actors finish
                    sink.take(batch)
    finally:
        ctx.enable_progress_bars = bars
    return sink.frames
