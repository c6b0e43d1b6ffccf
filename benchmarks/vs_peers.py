"""ferkit against the `fer` package (PyPI ``fer``, Justin Shenk), side by side in one run.

    python benchmarks/vs_peers.py --fer-python FER_VENV/bin/python --out /tmp/vs_peers.json
    python benchmarks/vs_peers.py --fer-python FER_VENV/bin/python --limit 300 --frames 50   # a quick check

fer runs in its own virtual environment (TensorFlow; see benchmarks/README.md), in a subprocess
(``benchmarks/_fer_worker.py``) that this script drives over JSON lines. Both sides get the same
inputs, the same thread count (torch / ONNX Runtime / TFLite / TensorFlow / OpenCV) and are timed by
the same function (``time_calls`` in _fer_worker.py: warm-up calls, then every call timed alone),
in alternating rounds, because this machine is shared and its load drifts.

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
   model quantized to int8 (fer's TFLite model is quantized too); every backend's accuracy is
   measured in step 1, so what int8 costs in accuracy is in the same report.
3. End-to-end frames/s on 640x480 BGR frames with one real face, detection + crop + classification:
   ferkit ``Recognizer(detector="auto")`` given the YuNet weights (so YuNet), and with ``detector="haar"``,
   against ``FER(mtcnn=False).detect_emotions(frame)`` (fer's default: OpenCV's Haar cascade).
   The frames are cut from ../shared/data/photos around each face YuNet finds there (face about
   200 px high, the rest of the 4:3 window padded black where it leaves the photo), kept only when
   YuNet then finds exactly one face in the frame. Each side's faces found per frame are reported,
   since a detector that misses the face also skips the classifier.

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

ferkit's accuracy is compared with the best of the three; latency and end to end use ``FER()`` as
a user gets it (TFLite). Targets (issue 3): higher accuracy than fer, per-face classifier latency no
worse than fer's, and at least 30 frames/s end to end (ferkit with YuNet) on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from _fer_worker import time_calls  # the one timing protocol, shared with the fer side
from ferkit.infer.detectors import create_detector
from ferkit.infer.recognizer import Recognizer
from ferkit.labels import FER2013, canonical, mapping
from ferkit.metrics import classification_metrics

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERKIT_SHARED", REPO.parent / "shared"))
WORKER = Path(__file__).resolve().parent / "_fer_worker.py"
FRAME_W, FRAME_H = 640, 480
FACE_FRACTION = 0.42  # face box height / frame height in the made frames (~200 px: a person at a webcam)


# ------------------------------------------------------------------ the fer subprocess


class FerWorker:
    """``_fer_worker.py`` running in fer's virtual environment; :meth:`ask` sends one request, returns its reply."""

    def __init__(self, python: str, log_path: Path):
        if not Path(python).is_file():
            raise FileNotFoundError(f"{python}: no such Python for the fer environment (see benchmarks/README.md)")
        self.log_path = log_path
        self._log = open(log_path, "w")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=env)

    def ask(self, cmd: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self._log.flush()
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the fer worker exited during {cmd!r}; its log ({self.log_path}) ends with:\n{tail}")
        rep = json.loads(line)
        if not rep.pop("ok"):
            raise RuntimeError(f"fer worker: {rep['error']} (details in {self.log_path})")
        return rep

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
        self._log.close()


# ------------------------------------------------------------------ inputs


def load_crops(fer_root: Path, limit: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """PrivateTest crops ``(N, 48, 48)`` uint8 grey, labels (FER2013 indices) and relative paths."""
    test = fer_root / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{test}: no FER2013 test folder (expected the Kaggle layout test/<class>/PrivateTest_*.jpg)")
    items = []
    for cdir in sorted(p for p in test.iterdir() if p.is_dir()):
        idx = FER2013.index(canonical(cdir.name)) if canonical(cdir.name) in FER2013 else None
        if idx is None:
            raise ValueError(f"{cdir}: class folder {cdir.name!r} is not a FER2013 class {list(FER2013)}")
        items += [(p, idx) for p in sorted(cdir.glob("PrivateTest_*.jpg"))]
    if not items:
        raise FileNotFoundError(f"{test}: no PrivateTest_*.jpg files")
    if limit:
        pick = np.random.default_rng(seed).permutation(len(items))[:limit]
        items = [items[i] for i in sorted(pick)]
    crops = []
    for p, _ in items:
        im = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise ValueError(f"{p}: not a readable image")
        crops.append(im)
    return np.stack(crops), np.array([i for _, i in items]), [str(p.relative_to(fer_root)) for p, _ in items]


def make_frames(photos: Path, yunet: Path, out_dir: Path) -> list[dict]:
    """640x480 BGR frames, each with one real face, cut from the photos; written as PNG into ``out_dir``."""
    det = create_detector("yunet", yunet_path=yunet, max_side=None)
    frames = []
    for photo in sorted(photos.glob("*.jpg")):
        img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{photo}: not a readable image")
        for d in det.detect(img):
            x, y, w, h = d.box
            if h < 70:  # too small to stand for a webcam face once scaled up
                continue
            for frac in (FACE_FRACTION, 0.55, 0.7):  # tighter windows when a neighbour's face shows
                wh = h / frac
                ww = wh * FRAME_W / FRAME_H
                x0, y0 = int(round(x + w / 2 - ww / 2)), int(round(y + h / 2 - wh / 2))
                x1, y1 = x0 + int(round(ww)), y0 + int(round(wh))
                pad = [max(0, -y0), max(0, y1 - img.shape[0]), max(0, -x0), max(0, x1 - img.shape[1])]
                win = img[max(0, y0):min(y1, img.shape[0]), max(0, x0):min(x1, img.shape[1])]
                win = cv2.copyMakeBorder(win, *pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
                interp = cv2.INTER_AREA if win.shape[0] > FRAME_H else cv2.INTER_LINEAR
                frame = cv2.resize(win, (FRAME_W, FRAME_H), interpolation=interp)
                if len(det.detect(frame)) == 1:
                    path = out_dir / f"frame_{len(frames):02d}.png"
                    cv2.imwrite(str(path), frame)
                    frames.append({"path": str(path), "image": frame, "photo": photo.name, "face_box_in_photo": list(d.box),
                                   "face_height_px": round(h * FRAME_H / wh)})
                    break
    if not frames:
        raise RuntimeError(f"{photos}: no frame with exactly one face could be made")
    return frames


# ------------------------------------------------------------------ helpers


def to_fer2013(probs: np.ndarray, names: tuple[str, ...] | list[str], who: str) -> np.ndarray:
    """Reorder probability columns to FER2013's class order, matching names."""
    m = mapping(names, FER2013)
    if sorted(m.tolist()) != list(range(len(FER2013))):
        raise ValueError(f"{who}: classes {list(names)} do not cover FER2013's {list(FER2013)} one to one")
    out = np.zeros((len(probs), len(FER2013)), np.float64)
    out[:, m] = probs
    return out


def ms_stats(samples: list[float]) -> dict:
    s = np.asarray(samples)
    return {"median_ms": float(np.median(s)), "p10_ms": float(np.percentile(s, 10)), "p90_ms": float(np.percentile(s, 90)),
            "mean_ms": float(s.mean()), "calls": int(s.size)}


def model_only_fn(rec: Recognizer, crop_bgr: np.ndarray):
    """``(fn, input)``: the bare network call of ``rec`` (torch module or ONNX Runtime session) on a ready tensor."""
    pre = rec.preprocess
    batch = pre.prepare_images([crop_bgr], order="bgr")
    from ferkit.engine.export import OnnxClassifier

    clf = rec.classifier
    if isinstance(clf, OnnxClassifier):  # session.run on a float32 array
        return clf, pre.to_array(batch)
    x = pre.to_tensor(batch)  # (1, C, S, S), float, normalised
    net = clf.model  # TorchClassifier

    def call(t):
        with torch.inference_mode():
            return net(t)

    return call, x


def system_info(threads: int) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------ report


def markdown(res: dict) -> str:
    s = res["summary"]
    fmt = {"acc": "{:.2%}", "f1": "{:.4f}", "ms": "{:.3f} ms", "fps": "{:.1f}"}
    lines = [
        "# ferkit vs fer", "",
        f"{res['system']['date']}, {res['system']['cpu']}, {res['system']['threads']} threads; "
        f"load average before/after {res['load_before']} / {res['load_after']}; "
        f"{res['accuracy']['n']} PrivateTest crops{' (limited)' if res['args']['limit'] else ''}, "
        f"{len(res['frames'])} frames, ferkit model `{res['args']['model']}`.", "",
        "| measure | ferkit | fer | ratio ferkit / fer | target | met |",
        "|---|---:|---:|---:|---|:---:|",
    ]
    for row in s:
        f = fmt[row["unit"]]
        lines.append(f"| {row['measure']} | {f.format(row['ferkit'])} | {f.format(row['fer'])} | {row['ratio']:.3f} | "
                     f"{row['target']} | {'' if row['target'].startswith('(') else 'yes' if row['met'] else '**no**'} |")
    lines += ["", "## Accuracy on FER2013 PrivateTest", "",
              "| classifier | accuracy | macro-F1 |", "|---|---:|---:|"]
    for name, m in res["accuracy"]["models"].items():
        lines.append(f"| {name} | {m['accuracy']:.2%} | {m['macro_f1']:.4f} |")
    for name, err in res["accuracy"].get("fer_errors", {}).items():
        lines.append(f"| fer {name} | failed: {err} | |")
    lines += ["", "Per-class F1:", "", "| class | " + " | ".join(res["accuracy"]["models"]) + " |",
              "|---" + "|---:" * len(res["accuracy"]["models"]) + "|"]
    for c in FER2013:
        lines.append(f"| {c} | " + " | ".join(f"{m['per_class'][c]['f1']:.3f}" for m in res["accuracy"]["models"].values()) + " |")
    lines += ["", "Label mapping (fer -> FER2013, by name): "
              + ", ".join(f"{k} -> {v}" for k, v in res["accuracy"]["fer_label_mapping"].items()), "",
              "## Per-face classifier latency (batch 1)", "",
              "| classifier | crop -> probs, median | p90 | model only, median | p90 |", "|---|---:|---:|---:|---:|"]
    for name, v in res["latency"].items():
        lines.append(f"| {name} | {v['crop']['median_ms']:.3f} ms | {v['crop']['p90_ms']:.3f} ms | "
                     f"{v['model']['median_ms']:.3f} ms | {v['model']['p90_ms']:.3f} ms |")
    lines += ["", "## End to end, 640x480 frames with one face", "",
              "| pipeline | frames/s | median | p90 | frames where exactly 1 face was found |", "|---|---:|---:|---:|---:|"]
    for name, v in res["e2e"].items():
        lines.append(f"| {name} | {v['fps']:.1f} | {v['median_ms']:.2f} ms | {v['p90_ms']:.2f} ms | "
                     f"{v['frames_with_one_face']}/{len(res['frames'])} |")
    lines += ["", "Frames/s = calls / total time of the timed calls (1 / mean); each call is one frame in, all faces' "
              "expressions out. Details of the protocol: the docstring of benchmarks/vs_peers.py.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ main


# ------------------------------------------------------------------ shared with latency_budget.py


def parse_run_args(ap: argparse.ArgumentParser, rounds: int) -> argparse.Namespace:
    """Add the timing and output options both benchmarks take, parse, and check ``--out`` / ``--fer-python``."""
    ap.add_argument("--rounds", type=int, default=rounds, help="alternating ferkit/fer timing rounds")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls before each timed round")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every library on both sides")
    ap.add_argument("--out", help="write results here as JSON, and the same name with .md as a Markdown report")
    args = ap.parse_args()
    if args.out and not args.out.endswith(".json"):
        raise SystemExit(f"--out {args.out}: expected a file name ending in .json")
    if args.fer_python and not Path(args.fer_python).is_file():
        raise SystemExit(f"--fer-python {args.fer_python}: no such file (set up fer's environment: benchmarks/README.md)")
    return args


def write_report(out: str, res: dict, report: str) -> None:
    """``res`` as JSON to ``out`` and ``report`` (Markdown) beside it, same name with .md."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    path.with_suffix(".md").write_text(report)
    print(f"wrote {path} and {path.with_suffix('.md')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fer-python", required=True, help="python of the fer virtual environment (benchmarks/README.md)")
    ap.add_argument("--model", default="default", help="ferkit model: 'default', a checkpoint or a run folder")
    ap.add_argument("--backends", default="onnx-int8,onnx,torch",
                    help="ferkit backends to measure, comma list (the first one is compared; onnx-int8 is the shipped "
                         "int8 file, so it needs --model default)")
    ap.add_argument("--data", default=str(SHARED / "data" / "fer2013"), help="FER2013 Kaggle-layout folder")
    ap.add_argument("--photos", default=str(SHARED / "data" / "photos"), help="photos the 640x480 frames are cut from")
    ap.add_argument("--yunet", default=str(SHARED / "models" / "face_detection_yunet_2023mar.onnx"), help="YuNet weights")
    ap.add_argument("--limit", type=int, default=0, help="score only a seeded random N PrivateTest crops (0: all 3,589)")
    ap.add_argument("--latency-calls", type=int, default=1000, help="timed batch-1 calls per classifier, over all rounds")
    ap.add_argument("--frames", type=int, default=300, help="timed end-to-end frames per pipeline, over all rounds")
    args = parse_run_args(ap, rounds=5)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ferkit-vs-peers-"))
    load_before = loadavg()

    # -------- inputs
    crops, y, crop_paths = load_crops(Path(args.data), args.limit or None)
    crops_bgr = [cv2.cvtColor(c, cv2.COLOR_GRAY2BGR) for c in crops]
    np.savez(work / "crops.npz", crops=crops)
    lat_crops = crops[:64]  # latency cycles over 64 different faces
    np.savez(work / "lat_crops.npz", crops=lat_crops)
    frames = make_frames(Path(args.photos), Path(args.yunet), work)
    print(f"{len(crops)} PrivateTest crops, {len(frames)} frames of 640x480 with one face; scratch in {work}", flush=True)

    # -------- the two sides
    fer = FerWorker(args.fer_python, work / "fer_worker.log")
    try:
        fer_info = fer.ask("init", threads=args.threads)
        recs: dict[str, Recognizer] = {}
        for b in backends:
            for det in ("auto", "haar"):
                recs[f"ferkit[{b},{det}]"] = Recognizer(args.model, detector=det, device="cpu", backend=b,
                                                        yunet_path=args.yunet, threads=args.threads)
        main_rec = recs[f"ferkit[{backends[0]},auto]"]
        det_name = main_rec.detector.name
        if det_name != "yunet":
            print(f"warning: detector 'auto' chose {det_name}, not YuNet; check --yunet", file=sys.stderr)

        # -------- 1. accuracy
        print("accuracy ...", flush=True)
        models, crops_per_s = {}, {}
        for b in backends:
            rec = recs[f"ferkit[{b},auto]"]
            t0 = time.perf_counter()
            p = rec.classify_crops(crops_bgr)
            crops_per_s[f"ferkit ({b}), batches of {rec.batch_size}"] = len(crops) / (time.perf_counter() - t0)
            models[f"ferkit ({b})"] = classification_metrics(y, to_fer2013(p, rec.label_names, f"ferkit {args.model}"), FER2013)
        rep = fer.ask("classify", crops=str(work / "crops.npz"), out=str(work / "fer_probs"))
        for name, f in rep["files"].items():
            models[f"fer {name}"] = classification_metrics(y, to_fer2013(np.load(f), fer_info["labels"], "fer"), FER2013)
            crops_per_s[f"fer {name}"] = len(crops) / rep["seconds"][name]  # TFLite runs face by face inside fer
        print("  crops/s over the whole set: " + "; ".join(f"{k} {v:.0f}" for k, v in crops_per_s.items()), flush=True)
        fer_variants = {k: v for k, v in models.items() if k.startswith("fer ")}
        if not fer_variants:
            raise RuntimeError(f"every fer accuracy variant failed: {rep['errors']}")
        fer_best = max(fer_variants, key=lambda k: fer_variants[k]["accuracy"])
        ferkit_main = f"ferkit ({backends[0]})"

        # -------- 2. latency, alternating rounds
        print("latency ...", flush=True)
        per_round = max(1, args.latency_calls // args.rounds)
        lat = {f"ferkit ({b})": {"crop": [], "model": []} for b in backends} | {"fer (TFLite)": {"crop": [], "model": []}}
        lat_bgr = crops_bgr[: len(lat_crops)]
        for _ in range(args.rounds):
            for b in backends:
                rec = recs[f"ferkit[{b},auto]"]
                lat[f"ferkit ({b})"]["crop"] += time_calls(lambda c: rec.classify_crops([c]), lat_bgr, args.warmup, per_round)
                fn, x = model_only_fn(rec, lat_bgr[0])
                lat[f"ferkit ({b})"]["model"] += time_calls(fn, [x], args.warmup, per_round)
            r = fer.ask("latency", crops=str(work / "lat_crops.npz"), warmup=args.warmup, runs=per_round)
            lat["fer (TFLite)"]["crop"] += r["crop_ms"]
            lat["fer (TFLite)"]["model"] += r["model_ms"]
        latency = {k: {kind: ms_stats(v[kind]) for kind in v} for k, v in lat.items()}

        # -------- 3. end to end, alternating rounds
        print("end to end ...", flush=True)
        per_round = max(1, args.frames // args.rounds)
        images = [f["image"] for f in frames]
        e2e_ms: dict[str, list[float]] = {k: [] for k in recs} | {"fer FER(mtcnn=False)": []}
        found: dict[str, list[int]] = {k: [len(rec(im)) for im in images] for k, rec in recs.items()}
        for _ in range(args.rounds):
            for k, rec in recs.items():
                e2e_ms[k] += time_calls(rec, images, args.warmup, per_round)
            r = fer.ask("e2e", frames=[f["path"] for f in frames], warmup=args.warmup, runs=per_round)
            e2e_ms["fer FER(mtcnn=False)"] += r["ms"]
            found["fer FER(mtcnn=False)"] = [len(b) for b in r["boxes"]]
        e2e = {}
        for k, v in e2e_ms.items():
            st = ms_stats(v)
            e2e[k] = {"fps": 1e3 / st["mean_ms"], **st, "faces_found": found[k],
                      "frames_with_one_face": sum(n == 1 for n in found[k])}
        for k, rec in recs.items():
            e2e[k]["detector"] = rec.detector.name
    finally:
        fer.close()

    # -------- summary
    fk_e2e = f"ferkit[{backends[0]},auto]"
    acc_f, acc_p = models[ferkit_main]["accuracy"], models[fer_best]["accuracy"]
    f1_f, f1_p = models[ferkit_main]["macro_f1"], models[fer_best]["macro_f1"]
    lat_f, lat_p = latency[ferkit_main]["crop"]["median_ms"], latency["fer (TFLite)"]["crop"]["median_ms"]
    mod_f, mod_p = latency[ferkit_main]["model"]["median_ms"], latency["fer (TFLite)"]["model"]["median_ms"]
    fps_f, fps_p = e2e[fk_e2e]["fps"], e2e["fer FER(mtcnn=False)"]["fps"]
    summary = [
        {"measure": f"PrivateTest accuracy (fer: {fer_best[4:]})", "unit": "acc", "ferkit": acc_f, "fer": acc_p,
         "ratio": acc_f / acc_p, "target": "ferkit > fer", "met": acc_f > acc_p},
        {"measure": "PrivateTest macro-F1", "unit": "f1", "ferkit": f1_f, "fer": f1_p, "ratio": f1_f / f1_p,
         "target": "(reported)", "met": f1_f > f1_p},
        {"measure": f"per-face latency, crop -> probs, median (ferkit {backends[0]})", "unit": "ms", "ferkit": lat_f,
         "fer": lat_p, "ratio": lat_f / lat_p, "target": "ratio <= 1", "met": lat_f <= lat_p},
        {"measure": "per-face latency, model only, median", "unit": "ms", "ferkit": mod_f, "fer": mod_p,
         "ratio": mod_f / mod_p, "target": "(reported)", "met": mod_f <= mod_p},
        {"measure": f"end to end frames/s ({fk_e2e} vs FER(mtcnn=False))", "unit": "fps", "ferkit": fps_f, "fer": fps_p,
         "ratio": fps_f / fps_p, "target": "ferkit >= 30", "met": fps_f >= 30.0},
    ]
    res = {
        "args": vars(args),
        "system": system_info(args.threads),
        "fer": fer_info,
        "load_before": load_before,
        "load_after": loadavg(),
        "summary": summary,
        "accuracy": {
            "n": int(len(y)),
            "data": str(Path(args.data) / "test" / "<class>" / "PrivateTest_*.jpg"),
            "compared": {"ferkit": ferkit_main, "fer": fer_best},
            "fer_label_mapping": {n: FER2013[i] for n, i in zip(fer_info["labels"], mapping(fer_info["labels"], FER2013))},
            "ferkit_label_mapping": {n: FER2013[i] for n, i in zip(main_rec.label_names, mapping(main_rec.label_names, FER2013))},
            "fer_errors": rep["errors"],
            "models": models,
            "crop_files": crop_paths if args.limit else "all",
            "crops_per_s (accuracy pass, first call, not a latency)": crops_per_s,
        },
        "latency": latency,
        "e2e": e2e,
        "frames": [{k: v for k, v in f.items() if k not in ("image", "path")} for f in frames],
    }

    # -------- print
    w = max(len(r["measure"]) for r in summary)
    fmt = {"acc": "{:9.2%}", "f1": "{:9.4f}", "ms": "{:6.3f} ms", "fps": "{:9.1f}"}
    print(f"\n{'measure':<{w}}  {'ferkit':>9}  {'fer':>9}  {'ratio':>6}  target")
    for r in summary:
        f = fmt[r["unit"]]
        print(f"{r['measure']:<{w}}  {f.format(r['ferkit'])}  {f.format(r['fer'])}  {r['ratio']:6.3f}  "
              f"{r['target']}{'' if r['target'].startswith('(') else ('  MET' if r['met'] else '  NOT MET')}")
    print("\naccuracy / macro-F1: " + "; ".join(f"{k} {m['accuracy']:.2%} / {m['macro_f1']:.4f}" for k, m in models.items()))
    print("latency (crop -> probs / model only, median ms): "
          + "; ".join(f"{k} {v['crop']['median_ms']:.3f} / {v['model']['median_ms']:.3f}" for k, v in latency.items()))
    print("end to end frames/s (frames with exactly one face found): "
          + "; ".join(f"{k} {v['fps']:.1f} ({v['frames_with_one_face']}/{len(frames)})" for k, v in e2e.items()))
    print(f"load average before/after: {load_before} / {res['load_after']}")
    if args.out:
        write_report(args.out, res, markdown(res))
    shutil.rmtree(work, ignore_errors=True)  # kept after a failure: it holds the fer worker's log
    return 0


if __name__ == "__main__":
    sys.exit(main())
