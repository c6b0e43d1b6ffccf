"""ferkit against the `fer` package (PyPI ``fer``, Justin Shenk), side by side in one run.

    python benchmarks/vs_peers.py --fer-python FER_VENV/bin/python --out /tmp/vs_peers.json
    python benchmarks/vs_peers.py --fer-python FER_VENV/bin/python --limit 300 --frames 50 --latency-calls 200 \
        --rounds 2 --lever-frames 10 --video-rounds 1 --video-lever-frames 30            # a quick check

Each section's results are written to ``--out`` (JSON and Markdown) as soon as it finishes, so a run that
fails later keeps them. The modules beside this script hold its parts: ``peers_fer.py`` (the fer worker,
the crops), ``peers_frames.py`` (frames with known faces, the clip), ``peers_report.py`` (summary, Markdown).

fer runs in its own virtual environment (TensorFlow; see benchmarks/README.md), in a subprocess
(``benchmarks/_fer_worker.py``) that this script drives over JSON lines. Both sides get the same
inputs and are timed by the same function (``time_calls`` in _fer_worker.py: warm-up calls, then
every call timed alone), in alternating rounds, because this machine is shared and its load drifts.
Threads: by default each library keeps its own defaults (ferkit's ``Recognizer()``, fer's ``FER()``:
the comparison of defaults); ``--threads N`` gives N to torch / ONNX Runtime / TFLite / TensorFlow /
OpenCV on both sides.

What is measured
----------------
1. Accuracy and macro-F1 on FER2013 PrivateTest: the 3,589 48x48 crops
   ``fer2013/test/<class>/PrivateTest_*.jpg`` (``--limit N``: a seeded random N of them).
   ferkit: the model (default: the shipped one) through ``Recognizer.classify_crops``, which applies
   the checkpoint's own Preprocess. Classes are matched by name; fer's outputs are
   0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral (``FER._get_labels``), which
   are FER2013's own names and order, so the mapping is the identity.
2. Per-face classifier latency, batch 1, the median over many calls after warm-up:
   ``crop`` = a 48x48 crop to probabilities, each library's own resize/normalise included
   (ferkit: ``classify_crops([crop])``; fer: its post-crop steps + ``FER._classify_emotions``);
   ``model`` = the network call alone on a ready input tensor.
   ferkit's compared backend is the first of ``--backends``: by default ``onnx-int8``, the shipped
   model quantized to int8 (fer's TFLite model is quantized too, and ``Recognizer()`` runs it on a
   CPU); every backend's accuracy is measured in step 1, so what int8 costs in accuracy is in the
   same report.
3. Frames/s on the frames users have, one row per kind of frame, detection + crop + classification
   of every face, one frame per call: ferkit's ``Recognizer()`` with its defaults against fer's
   ``FER().detect_emotions(frame)`` (Haar cascade + TFLite). Rows:

   - 640x480, 1280x720 and 1920x1080 BGR frames with one real face, cut from ../shared/data/photos
     around each face a person counts there (``TRUE_FACES`` in tests/test_detectors.py), the face
     0.42 of the frame's height (a person at a webcam; 0.55 or 0.7 where a neighbour's face would
     show), the rest of the window padded black where it leaves the photo; kept only where exactly
     one counted face lies in the frame and YuNet at full size finds exactly it;
   - 1280x720 with 6 faces: 16:9 windows of test_image.jpg holding its six counted faces, at three
     zooms, and their mirror images;
   - 1280x720 with 5-7 faces: frames of the shared clip where YuNet finds 5-7 faces, upscaled 2x.

   Faces present: the counted faces of the photos, and for clip frames the faces YuNet finds at the
   clip's full resolution (score >= 0.6, no minimum size; the reference, not a ground truth). A
   face is found when its centre lies in one of the pipeline's boxes; a box holding no present face
   is counted as extra. So a speed-up can never come from missing faces unseen.
4. The shared clip as a file: ferkit's ``predict_stream(clip, Recognizer())`` with its defaults
   (tracking, smoothing, scene cuts; nothing drawn) against fer's own video analysis
   (``fer.classes.Video(clip).analyze(FER())``, nothing saved or drawn; its ``cv2.waitKey`` call, a GUI
   call that headless OpenCV lacks, is a no-op in the worker), each timed from opening the
   file to the last frame (decoding included), whole passes in alternating rounds; faces found per
   frame against YuNet's at full resolution, as above.
5. Levers: ferkit variants on the same rows and the clip, each changing one default (or bringing
   back the defaults before issue 17), to show what each choice buys and what it costs in faces
   found: ``min_face``, YuNet on OpenCV instead of ONNX Runtime, the torch classifier instead of
   int8, Haar, and thread counts with the machine's other work running.

How fer is given a FER2013 crop (read from fer 25.10.3, fer/fer.py)
-------------------------------------------------------------------
``FER.detect_emotions(img, face_rectangles)`` turns the image grey, pads it by 40 px of the mean of
its bottom two rows, makes each box square, widens it by ``offsets`` = 10 px on every side, crops,
resizes to 64x64 (cv2.resize, bilinear), scales to [-1, 1] and calls ``FER._classify_emotions``
(by default the quantized TFLite mini-Xception, ``use_tflite=True``); scores come back rounded to
2 decimals. Its model (oarriaga/face_classification's FER2013 mini-Xception) was trained on whole
48x48 FER2013 images resized to 64x64 with that same scaling, and a FER2013 image already is a face
crop framed by a face detector. So fer is scored three ways, always on its unrounded scores
(rounding creates ties):

- ``tflite_whole``: the whole crop through fer's own post-crop steps and classifier call: the view
  its model was trained on, and what its pipeline does with a face box that frames the face the way
  FER2013 does.
- ``tflite_pipeline``: literally ``detect_emotions(crop, face_rectangles=[(0, 0, 48, 48)])``. Here the
  fixed 10-px offsets add 21% of flat grey per side to a 48-px box (on a real frame they add real
  context, about 5% of a 200-px face); it shows what that costs, it is not the comparison.
- ``keras_whole``: the original Keras model (``emotion_model.hdf5``, ``FER(use_tflite=False)``) on the
  whole crop.

ferkit's accuracy is compared with the best of the three; latency and frame rates use ``FER()`` as
a user gets it (TFLite). Targets: higher accuracy than fer (issue 3); ferkit's defaults against
fer's, in one run (issue 17): at least 5x fer's frames/s at 640x480 and 1280x720 with one face, at
least 3x with 5-7 faces, at least 100 frames/s at 640x480 on 2 cores, and in every row at least as
many faces found as fer.
"""


from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from _fer_worker import time_calls  # the one timing protocol, shared with the fer side
from common import DATA, YUNET, loadavg, ms_stats, parse_run_args, system_info, write_report
from peers_fer import FerWorker, fer2013_columns, load_crops, model_only_fn
from peers_frames import clip_reference, cv2_threads, frame_rows, match, stream_pass, video_stats
from peers_report import DEFAULT_NAME, FER_NAME, markdown

from ferkit.infer.detectors import YuNetDetector
from ferkit.infer.recognizer import Recognizer, TorchClassifier
from ferkit.labels import FER2013, mapping
from ferkit.metrics import classification_metrics

# ------------------------------------------------------------------ ferkit pipelines


class Built(dict):
    """name -> ``(recognizer, OpenCV threads while it runs or None)``, each built on first use."""

    def __init__(self, builders: dict[str, Callable[[], tuple[Recognizer, int | None]]]):
        super().__init__()
        self.builders = builders

    def __missing__(self, name: str) -> tuple[Recognizer, int | None]:
        self[name] = self.builders[name]()
        return self[name]


def variants(args: argparse.Namespace) -> dict[str, Callable[[], tuple[Recognizer, int | None]]]:
    """ferkit pipelines by name -> a builder giving ``(recognizer, OpenCV threads while it runs or None)``.

    The first is ``Recognizer()`` as a user gets it; each other changes one thing (section 5)."""
    th = args.threads or None
    y = args.yunet

    def rec(**kw) -> tuple[Recognizer, None]:
        return Recognizer(args.model, device="cpu", yunet_path=y, threads=th, **kw), None

    def before(threads: int | None) -> tuple[Recognizer, int | None]:
        # The defaults before issue 17: the torch classifier with torch's own thread count, YuNet on OpenCV;
        # `--threads 1` then set torch and OpenCV to one thread.
        clf = TorchClassifier.load(args.model, torch.device("cpu"), threads=threads or th)
        return Recognizer(args.model, device="cpu", classifier=clf, backend="torch",
                          detector=YuNetDetector(y, runtime="opencv", threads=threads or th)), threads

    return {
        DEFAULT_NAME: lambda: rec(),
        "min_face=48": lambda: rec(min_face=48),
        "min_face=80": lambda: rec(min_face=80),
        "YuNet on OpenCV": lambda: rec(detector=YuNetDetector(y, runtime="opencv", threads=th)),
        "torch classifier": lambda: rec(backend="torch"),
        "Haar detector": lambda: rec(detector="haar"),
        "threads=1": lambda: (Recognizer(args.model, device="cpu", yunet_path=y, threads=1), 1),
        "threads=2": lambda: (Recognizer(args.model, device="cpu", yunet_path=y, threads=2), 2),
        "before issue 17 (torch, YuNet on OpenCV)": lambda: before(None),
        "before issue 17, --threads 1": lambda: before(1),
    }


FRAME_LEVERS = ("min_face=48", "min_face=80", "YuNet on OpenCV", "torch classifier", "Haar detector", "threads=1",
                "threads=2", "before issue 17, --threads 1")
VIDEO_LEVERS = FRAME_LEVERS + ("before issue 17 (torch, YuNet on OpenCV)",)  # its torch threads spin: too slow for every row



def time_rows(args, rows, fer, builders) -> tuple[dict, dict]:
    """Sections 3 and 5 on the frames: ``(per-row ferkit default vs fer, per-row lever variants)``."""
    per_round = max(1, args.frames // args.rounds)
    lever_round = max(1, args.lever_frames // args.rounds)
    names = [DEFAULT_NAME] + (list(FRAME_LEVERS) if args.lever_frames else [])
    ms = {row: {k: [] for k in names + [FER_NAME]} for row in rows}
    found = {row: {} for row in rows}
    for rnd in range(args.rounds):
        for row, frames in rows.items():
            images = [f["image"] for f in frames]
            for k in names:
                rec, cv_threads = builders[k]
                with cv2_threads(cv_threads):
                    if rnd == 0:
                        found[row][k] = [match([d.box for d in rec.detect(im)], f["present"]) for im, f in zip(images, frames)]
                    if k == DEFAULT_NAME:
                        ms[row][k] += time_calls(rec, images, args.warmup, per_round)
                    else:  # fewer frames: the levers are for comparing with each other and the default
                        ms[row][k] += time_calls(rec, images, max(2, args.warmup // 4), lever_round)
            r = fer.ask("e2e", frames=[f["path"] for f in frames], warmup=args.warmup, runs=per_round)
            ms[row][FER_NAME] += r["ms"]
            found[row][FER_NAME] = [match(b, f["present"]) for b, f in zip(r["boxes"], frames)]
        print(f"  round {rnd + 1}/{args.rounds} done", flush=True)
    table, levers = {}, {}
    for row, frames in rows.items():
        stats = {}
        for k, v in ms[row].items():
            st = ms_stats(v)
            stats[k] = {"fps": 1e3 / st["mean_ms"], **st, "found": sum(f for f, _ in found[row][k]),
                        "present": sum(len(f["present"]) for f in frames), "extra": sum(e for _, e in found[row][k])}
        table[row] = {"frames": len(frames), "ferkit": stats[DEFAULT_NAME], "fer": stats[FER_NAME],
                      "sources": [f["source"] for f in frames]}
        levers[row] = {k: stats[k] for k in names}
    return table, levers


def time_video(args, fer, builders, video: Path, ref_boxes: list, work: Path) -> tuple[dict, dict]:
    """Section 4 (whole passes, alternating) and the clip's levers (the first ``--video-lever-frames`` frames)."""
    secs = {DEFAULT_NAME: [], FER_NAME: []}
    boxes: dict[str, list] = {}
    lever_n = args.video_lever_frames
    lever_names = [DEFAULT_NAME, *VIDEO_LEVERS] if lever_n else []
    lever_secs: dict[str, list[float]] = {k: [] for k in lever_names}
    lever_boxes: dict[str, list] = {}
    default_rec, _ = builders[DEFAULT_NAME]
    for rnd in range(args.video_rounds):
        s, boxes[DEFAULT_NAME] = stream_pass(default_rec, video, None)
        secs[DEFAULT_NAME].append(s)
        r = fer.ask("video", path=str(video), outdir=str(work / "fer_video"))
        secs[FER_NAME].append(r["seconds"])
        boxes[FER_NAME] = r["boxes"]
        for k in lever_names:  # the default again on the same first frames, for the lever table
            rec, cv_threads = builders[k]
            with cv2_threads(cv_threads):
                s, lever_boxes[k] = stream_pass(rec, video, lever_n)
            lever_secs[k].append(s)
        print(f"  clip round {rnd + 1}/{args.video_rounds} done", flush=True)
    video_res = {k: video_stats(secs[k], boxes[k], ref_boxes) for k in secs}
    video_res["reference"] = "YuNet at the clip's full resolution, score >= 0.6, no minimum size"
    levers = {k: video_stats(v, lever_boxes[k], ref_boxes) for k, v in lever_secs.items()}
    return video_res, levers



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fer-python", required=True, help="python of the fer virtual environment (benchmarks/README.md)")
    ap.add_argument("--model", default="default", help="ferkit model: 'default', a checkpoint or a run folder")
    ap.add_argument("--backends", default="onnx-int8,onnx,torch",
                    help="ferkit backends for accuracy and latency, comma list (the first one is compared; onnx-int8 "
                         "is the shipped int8 file, so it needs --model default)")
    ap.add_argument("--data", default=str(DATA / "fer2013"), help="FER2013 Kaggle-layout folder")
    ap.add_argument("--photos", default=str(DATA / "photos"), help="photos the frames are cut from")
    ap.add_argument("--video", default=str(DATA / "video" / "short_hamilton_clip.mp4"), help="the clip")
    ap.add_argument("--yunet", default=str(YUNET), help="YuNet weights")
    ap.add_argument("--limit", type=int, default=0, help="score only a seeded random N PrivateTest crops (0: all 3,589)")
    ap.add_argument("--latency-calls", type=int, default=1000, help="timed batch-1 calls per classifier, over all rounds")
    ap.add_argument("--frames", type=int, default=200, help="timed frames per row for ferkit and for fer, over all rounds")
    ap.add_argument("--lever-frames", type=int, default=50, help="timed frames per row for each lever variant (0: none)")
    ap.add_argument("--video-rounds", type=int, default=2, help="alternating whole passes over the clip per side")
    ap.add_argument("--video-lever-frames", type=int, default=100,
                    help="frames of the clip per pass for each lever variant, one pass per round (0: none)")
    ap.add_argument("--sections", default="accuracy,latency,frames,clip",
                    help="which sections to run, comma list of accuracy, latency, frames (3 and 5), clip (4 and 5)")
    args = parse_run_args(ap, rounds=5, threads=0)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - {"accuracy", "latency", "frames", "clip"}
    if unknown:
        raise SystemExit(f"--sections: unknown {sorted(unknown)}; valid: accuracy, latency, frames, clip")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    th = args.threads or None
    if th:
        torch.set_num_threads(th)
        cv2.setNumThreads(th)
    work = Path(tempfile.mkdtemp(prefix="ferkit-vs-peers-"))
    res: dict = {"args": vars(args), "system": system_info(args.threads), "load_before": loadavg()}

    def done(section: str) -> None:
        """Write what has been measured so far: a later failure keeps it."""
        res["load_after"] = loadavg()
        print(f"{section} done", flush=True)
        if args.out:
            write_report(args.out, res, markdown(res))

    # -------- inputs
    crops, y, crop_paths = load_crops(Path(args.data), args.limit or None)
    res["n_crops"] = int(len(y))
    crops_bgr = [cv2.cvtColor(c, cv2.COLOR_GRAY2BGR) for c in crops]
    np.savez(work / "crops.npz", crops=crops)
    lat_crops = crops[:64]  # latency cycles over 64 different faces
    np.savez(work / "lat_crops.npz", crops=lat_crops)
    video = Path(args.video)
    rows, ref_boxes = {}, []
    if sections & {"frames", "clip"}:
        clip, ref_boxes = clip_reference(video, YuNetDetector(args.yunet, min_face=0, max_side=None))
        rows = frame_rows(args, work, clip, ref_boxes) if "frames" in sections else {}
        del clip
    print(f"{len(crops)} PrivateTest crops; frames: " + "; ".join(f"{k} {len(v)}" for k, v in rows.items())
          + f"; the clip: {len(ref_boxes)} frames, {sum(map(len, ref_boxes))} faces; scratch in {work}", flush=True)

    # -------- the two sides
    fer = FerWorker(args.fer_python, work / "fer_worker.log")
    section = "start"
    try:
        fer_info = res["fer"] = fer.ask("init", threads=args.threads)
        recs = {b: Recognizer(args.model, detector="haar", device="cpu", backend=b, threads=th) for b in backends}
        builders = Built(variants(args))
        res["ferkit_default"] = repr(builders[DEFAULT_NAME][0])
        if "accuracy" in sections:
            section = "1. accuracy"
            res["accuracy"] = accuracy(args, recs, fer, fer_info, crops_bgr, y, crop_paths, work)
            done(section)
        if "latency" in sections:
            section = "2. latency"
            res["latency"] = latency(args, recs, fer, crops_bgr[: len(lat_crops)], work)
            res["latency_compared"] = f"ferkit ({backends[0]})"
            done(section)
        if "frames" in sections:
            section = "3 + 5. frames/s per kind of frame"
            res["rows"], row_levers = time_rows(args, rows, fer, builders)
            res["levers"] = {"rows": row_levers}
            done(section)
        if "clip" in sections:
            section = "4 + 5. the clip as a file"
            video_res, video_levers = time_video(args, fer, builders, video, ref_boxes, work)
            res["video"] = {"ferkit": video_res.pop(DEFAULT_NAME), "fer": video_res.pop(FER_NAME), **video_res}
            res.setdefault("levers", {"rows": {}})["video"] = video_levers
            done(section)
    except Exception:
        res["failed"] = section
        if args.out:
            write_report(args.out, res, markdown(res))
        print(f"failed during {section}; what was measured before is kept"
              + (f" in {args.out}" if args.out else "") + f"; scratch and the fer worker's log in {work}", file=sys.stderr)
        raise
    finally:
        fer.close()
    res["load_after"] = loadavg()
    report = markdown(res)
    print("\n" + report)
    if args.out:
        write_report(args.out, res, report)
    shutil.rmtree(work, ignore_errors=True)  # kept after a failure: it holds the fer worker's log
    return 0


def accuracy(args, recs: dict, fer: FerWorker, fer_info: dict, crops_bgr: list, y: np.ndarray, crop_paths: list,
             work: Path) -> dict:
    """Section 1: every ferkit backend and every fer variant on the same PrivateTest crops."""
    print("accuracy ...", flush=True)
    models, crops_per_s = {}, {}
    for b, rec in recs.items():
        t0 = time.perf_counter()
        p = rec.classify_crops(crops_bgr)
        crops_per_s[f"ferkit ({b}), batches of {rec.batch_size}"] = len(crops_bgr) / (time.perf_counter() - t0)
        models[f"ferkit ({b})"] = classification_metrics(y, fer2013_columns(p, rec.label_names, f"ferkit {args.model}"), FER2013)
    rep = fer.ask("classify", crops=str(work / "crops.npz"), out=str(work / "fer_probs"))
    for name, f in rep["files"].items():
        models[f"fer {name}"] = classification_metrics(y, fer2013_columns(np.load(f), fer_info["labels"], "fer"), FER2013)
        crops_per_s[f"fer {name}"] = len(crops_bgr) / rep["seconds"][name]  # TFLite runs face by face inside fer
    print("  crops/s over the whole set: " + "; ".join(f"{k} {v:.0f}" for k, v in crops_per_s.items()), flush=True)
    fer_variants = {k: v for k, v in models.items() if k.startswith("fer ")}
    if not fer_variants:
        raise RuntimeError(f"every fer accuracy variant failed: {rep['errors']}")
    main_rec = next(iter(recs.values()))
    return {
        "n": int(len(y)),
        "data": str(Path(args.data) / "test" / "<class>" / "PrivateTest_*.jpg"),
        "compared": {"ferkit": f"ferkit ({next(iter(recs))})",
                     "fer": max(fer_variants, key=lambda k: fer_variants[k]["accuracy"])},
        "fer_label_mapping": {n: FER2013[i] for n, i in zip(fer_info["labels"], mapping(fer_info["labels"], FER2013))},
        "ferkit_label_mapping": {n: FER2013[i] for n, i in zip(main_rec.label_names, mapping(main_rec.label_names, FER2013))},
        "fer_errors": rep["errors"],
        "models": models,
        "crop_files": crop_paths if args.limit else "all",
        "crops_per_s (accuracy pass, first call, not a latency)": crops_per_s,
    }


def latency(args, recs: dict, fer: FerWorker, lat_bgr: list, work: Path) -> dict:
    """Section 2: per-face latency, batch 1, in alternating rounds."""
    print("latency ...", flush=True)
    per_round = max(1, args.latency_calls // args.rounds)
    lat = {f"ferkit ({b})": {"crop": [], "model": []} for b in recs} | {"fer (TFLite)": {"crop": [], "model": []}}
    for _ in range(args.rounds):
        for b, rec in recs.items():
            lat[f"ferkit ({b})"]["crop"] += time_calls(lambda c, rec=rec: rec.classify_crops([c]), lat_bgr, args.warmup,
                                                       per_round)
            fn, x = model_only_fn(rec, lat_bgr[0])
            lat[f"ferkit ({b})"]["model"] += time_calls(fn, [x], args.warmup, per_round)
        r = fer.ask("latency", crops=str(work / "lat_crops.npz"), warmup=args.warmup, runs=per_round)
        lat["fer (TFLite)"]["crop"] += r["crop_ms"]
        lat["fer (TFLite)"]["model"] += r["model_ms"]
    return {k: {kind: ms_stats(v[kind]) for kind in v} for k, v in lat.items()}


if __name__ == "__main__":
    sys.exit(main())
