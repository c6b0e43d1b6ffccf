"""The Recognizer on the real photos: typed faces, one batch for many frames, every accepted input type, bad input."""

from __future__ import annotations

import socket
import subprocess
import sys
import tracemalloc

import cv2
import numpy as np
import pytest
import torch
from conftest import PHOTOS, YUNET
from PIL import Image

import ferkit
from ferkit.engine.checkpoint import save_checkpoint
from ferkit.engine.preprocess import Preprocess
from ferkit.infer.align import crop_faces
from ferkit.infer.recognizer import Recognizer, as_bgr
from ferkit.infer.results import Face
from ferkit.labels import FER5
from ferkit.models.registry import create_model

# Faces a person counts in each photo (see TRUE_FACES in test_detectors.py).
FACE_COUNTS = {"test_image.jpg": 6, "obama_and_biden.jpg": 3, "two_people.jpg": 2, "kit_with_rose.jpg": 2}


@pytest.fixture(scope="module")
def rec():
    threads = torch.get_num_threads()
    yield Recognizer("default", detector="yunet", yunet_path=YUNET, threads=1)  # 1 thread: fast on a busy 2-core CPU
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_people() -> np.ndarray:
    return cv2.imread(str(PHOTOS / "two_people.jpg"))


def _same_faces(a: list[Face], b: list[Face], atol: float = 1e-5, what: str = "") -> None:
    assert [f.box for f in a] == [f.box for f in b], what
    assert [f.label for f in a] == [f.label for f in b], what
    for fa, fb in zip(a, b):
        assert np.allclose(list(fa.probs.values()), list(fb.probs.values()), atol=atol), what


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw, ih = max(0, min(ax + aw, bx + bw) - max(ax, bx)), max(0, min(ay + ah, by + bh) - max(ay, by))
    return iw * ih / (aw * ah + bw * bh - iw * ih)


# ------------------------------------------------------------------ results on real photos


def test_every_face_gets_a_typed_result_with_probabilities(rec):
    assert rec.label_names == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    for name, count in FACE_COUNTS.items():
        faces = rec(PHOTOS / name)
        assert len(faces) == count, name
        for f in faces:
            assert isinstance(f, Face)
            assert tuple(f.probs) == rec.label_names
            assert abs(sum(f.probs.values()) - 1.0) < 1e-5
            assert all(0.0 <= p <= 1.0 for p in f.probs.values())
            assert f.label == max(f.probs, key=f.probs.get) and f.confidence == f.probs[f.label]
            assert f.score >= 0.6 and f.landmarks.shape == (5, 2) and f.track_id is None
            d = f.to_dict()  # JSON-ready
            assert d["box"] == list(f.box) and set(d["probs"]) == set(rec.label_names)


def test_several_frames_in_one_batch_equal_frame_by_frame(rec, monkeypatch):
    frames = [cv2.imread(str(PHOTOS / name)) for name in FACE_COUNTS]
    one_by_one = [rec(f) for f in frames]
    sizes = []
    real_classify = rec.classify_crops
    monkeypatch.setattr(rec, "classify_crops", lambda crops: sizes.append(len(crops)) or real_classify(crops))
    together = rec.recognize_frames(frames)
    assert sizes == [13]  # all 13 faces of the 4 photos went to the classifier in one call
    for a, b in zip(together, one_by_one):
        _same_faces(a, b, atol=1e-5)
    # Small batches (chunks of 4 faces) give the same answer.
    monkeypatch.setattr(rec, "batch_size", 4)
    for a, b in zip(rec.recognize_frames(frames), one_by_one):
        _same_faces(a, b, atol=1e-5)


def test_given_detections_skip_the_detector(rec, two_people, monkeypatch):
    dets = rec.detect(two_people)
    expected = rec(two_people)

    def no_detector(image):
        raise AssertionError("the detector must not run when detections are given")

    monkeypatch.setattr(rec.detector, "detect", no_detector)
    (faces,) = rec.recognize_frames([two_people], detections=[dets])
    _same_faces(faces, expected)
    with pytest.raises(ValueError, match="2 detection lists for 1 frames"):
        rec.recognize_frames([two_people], detections=[dets, dets])


# ------------------------------------------------------------------ input types


def test_all_colour_layouts_and_depths_give_the_same_faces(rec, two_people):
    bgr = two_people
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    expected = rec(bgr)
    assert len(expected) == 2
    alpha = np.full(bgr.shape[:2] + (1,), 255, np.uint8)
    variants = {
        "path": (PHOTOS / "two_people.jpg", "bgr"),
        "str path": (str(PHOTOS / "two_people.jpg"), "bgr"),
        "rgb": (rgb, "rgb"),
        "PIL": (Image.fromarray(rgb), "bgr"),  # PIL is always RGB, whatever order says
        "PIL RGBA": (Image.fromarray(rgb).convert("RGBA"), "bgr"),
        "BGRA": (np.concatenate([bgr, alpha], 2), "bgr"),
        "RGBA": (np.concatenate([rgb, alpha], 2), "rgb"),
        "16-bit": (bgr.astype(np.uint16) * 257, "bgr"),  # full 16-bit range, scaled back to the same 8 bits
        "float": (bgr.astype(np.float32) / 255.0, "bgr"),
    }
    for name, (image, order) in variants.items():
        _same_faces(rec(image, order=order), expected, atol=1e-6, what=name)


def test_grey_images_find_the_same_faces(rec, two_people):
    expected = rec(two_people)
    grey = cv2.cvtColor(two_people, cv2.COLOR_BGR2GRAY)
    for image in (grey, grey[:, :, None], Image.fromarray(grey)):
        faces = [f for f in rec(image) if f.score > 0.9]  # the grey copy adds one weak false box (a watch)
        assert len(faces) == 2
        for f in faces:
            assert max(_iou(f.box, e.box) for e in expected) > 0.8


def test_very_large_photo_is_handled_in_bounded_memory(rec):
    img = cv2.imread(str(PHOTOS / "obama_and_biden.jpg"))  # 2000x1428
    sx, sy = 6000 / img.shape[1], 4000 / img.shape[0]
    big = cv2.resize(img, (6000, 4000), interpolation=cv2.INTER_LINEAR)  # 72 MB of pixels
    expected = rec(img)
    tracemalloc.start()
    try:
        faces = rec(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # No full-size copies or float versions of the image (each would be 72-576 MB): detection runs on a 1280-pixel
    # copy (3.3 MB), which YuNet on ONNX Runtime takes as float32 padded to 1280x864 (13 MB).
    assert peak < 0.4 * big.nbytes, f"peak {peak / 1e6:.0f} MB of Python/numpy memory for a {big.nbytes / 1e6:.0f} MB image"
    assert len(faces) == len(expected) == 3
    for f in faces:
        scaled = [(e.box[0] * sx, e.box[1] * sy, e.box[2] * sx, e.box[3] * sy) for e in expected]
        assert max(_iou(f.box, s) for s in scaled) > 0.8


def test_images_without_faces_give_an_empty_list(rec):
    sky = cv2.imread(str(PHOTOS / "test_image.jpg"))[:300]  # sky, hills and roofs above the people's heads
    assert rec(sky) == []
    assert rec(np.full((480, 640, 3), 128, np.uint8)) == []
    assert rec.recognize_frames([sky, np.zeros((10, 10, 3), np.uint8)]) == [[], []]
    assert rec.classify_crops([]).shape == (0, 7)


def test_bad_images_raise_errors_that_say_what_is_wrong(rec, tmp_path):
    broken = tmp_path / "holiday.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    with pytest.raises(ValueError, match="holiday.jpg"):
        rec(broken)
    with pytest.raises(ValueError, match="missing.png.*no such file"):
        rec(tmp_path / "missing.png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg"):
        rec(str(empty))
    cases = {
        "dtype int64 not supported": np.zeros((20, 20, 3), np.int64),
        r"must lie in \[0, 1\]": np.full((20, 20, 3), 200.0, np.float32),
        r"shape \(20, 20, 2\) not understood": np.zeros((20, 20, 2), np.uint8),
        "empty image": np.zeros((0, 20, 3), np.uint8),
        "cannot read an image from a list": [[0, 1], [2, 3]],
    }
    for message, image in cases.items():
        with pytest.raises(ValueError, match=message):
            as_bgr(image)
    with pytest.raises(ValueError, match="order must be"):
        rec(np.zeros((20, 20, 3), np.uint8), order="bgra")


@pytest.mark.unit  # no data from ../shared
def test_as_bgr_conversions():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 200  # red
    assert as_bgr(rgb, order="rgb")[0, 0].tolist() == [0, 0, 200]
    bgr = as_bgr(rgb, order="rgb")
    assert as_bgr(bgr) is bgr  # uint8 BGR passes through without a copy
    assert as_bgr(np.full((2, 2), 7, np.uint16) * 256)[0, 0].tolist() == [7, 7, 7]
    assert as_bgr(np.full((2, 2, 1), 0.5, np.float64))[0, 0].tolist() == [128, 128, 128]
    assert as_bgr(Image.new("P", (4, 3)))[0, 0].tolist() == [0, 0, 0]
    assert as_bgr(Image.new("I;16", (4, 3), 65535)).shape == (3, 4, 3)


# ------------------------------------------------------------------ any checkpoint, no network, public API


def test_any_ferkit_checkpoint_works_with_its_own_preprocessing(tmp_path):
    # An RGB, 64-pixel, 5-class model with a wider face margin: everything the Recognizer does must follow it.
    torch.manual_seed(0)
    model = create_model("resnet11", num_classes=5, in_chans=3, width=8).eval()
    pre = Preprocess(input_size=64, channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), label_names=FER5, crop_margin=0.2)
    ckpt = {"format": "ferkit", "version": 1, "model": {"name": "resnet11", "num_classes": 5, "in_chans": 3, "kwargs": {"width": 8}},
            "state_dict": model.state_dict(), "preprocess": pre.to_dict(), "config": {}}
    save_checkpoint(ckpt, tmp_path / "run" / "best.pt")
    rec = Recognizer(tmp_path / "run", detector="haar")  # a run folder; Haar: no landmarks, so crops are plain slices
    assert rec.preprocess == pre and rec.label_names == FER5
    img = cv2.imread(str(PHOTOS / "kit_with_rose.jpg"))
    faces = rec(img)
    assert len(faces) >= 2  # the two people (Haar adds a weak box in the background)
    for f in faces:
        # The same face prepared by hand: square crop with 20% margin, RGB, 64x64, normalised with the stored mean/std.
        x, y, w, h = f.box
        side = round(max(w, h) * 1.4)
        x0, y0 = round(x + (w - 1) / 2 - (side - 1) / 2), round(y + (h - 1) / 2 - (side - 1) / 2)
        assert x0 >= 0 and y0 >= 0 and x0 + side <= img.shape[1] and y0 + side <= img.shape[0]  # no padding needed
        crop = cv2.cvtColor(img[y0 : y0 + side, x0 : x0 + side], cv2.COLOR_BGR2RGB)
        crop = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        x_in = torch.from_numpy((crop - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            expected = torch.softmax(model(x_in), 1)[0].numpy()
        assert tuple(f.probs) == FER5
        assert np.allclose(list(f.probs.values()), expected, atol=1e-5)


class _BrightnessClassifier:
    """A stub classifier: 'bright' is the mean grey level of the prepared face; it records every batch it gets."""

    def __init__(self):
        self.preprocess = Preprocess(input_size=32, channels=1, mean=(0.5,), std=(0.25,), label_names=("dark", "bright"),
                                     crop_margin=0.1)
        self.batches: list[np.ndarray] = []

    def probs(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch)
        bright = batch.reshape(len(batch), -1).mean(1, dtype=np.float64) / 255
        return np.stack([1 - bright, bright], 1).astype(np.float32)


def test_a_recognizer_classifies_with_the_classifier_it_is_given(monkeypatch, two_people):
    import ferkit.infer.recognizer as R

    def no_loading(*args, **kwargs):
        raise AssertionError("a recognizer given a classifier must load no model")

    monkeypatch.setattr(R, "load_classifier", no_loading)
    monkeypatch.setattr(R.ModelRef, "resolve", no_loading)
    stub = _BrightnessClassifier()
    rec = Recognizer(detector="yunet", yunet_path=YUNET, classifier=stub)
    assert rec.classifier is stub and rec.preprocess is stub.preprocess and rec.label_names == ("dark", "bright")
    faces = rec(PHOTOS / "two_people.jpg")
    assert len(faces) == 2  # the detector still finds both people
    (batch,) = stub.batches  # both faces in one call, prepared as the stub's own Preprocess says
    assert batch.dtype == np.uint8 and batch.shape == (2, 32, 32)
    geo = rec.crop_geometry
    crops = crop_faces(two_people, rec.detect(two_people), geo.margin, geo.offset_y, geo.align)
    assert np.array_equal(batch, stub.preprocess.prepare_images(crops, order="bgr"))
    for face, crop in zip(faces, batch):
        assert tuple(face.probs) == ("dark", "bright")
        assert abs(face.probs["bright"] - crop.mean() / 255) < 1e-6
        assert face.label == ("bright" if crop.mean() > 127.5 else "dark")
    # A classifier whose rows do not match the faces, or an object that is no classifier, is refused by name.
    stub.probs = lambda batch: np.zeros((len(batch), 3), np.float32)
    with pytest.raises(ValueError, match=r"returned shape \(2, 3\) for 2 faces; expected \(2, 2\)"):
        rec(two_people)
    with pytest.raises(TypeError, match="classifier: expected an object with .preprocess and .probs"):
        Recognizer(detector="haar", classifier=object())


def test_default_model_loads_and_predicts_with_no_network(monkeypatch, tmp_path, two_people):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.delenv("FERKIT_YUNET", raising=False)
    rec = Recognizer("default", detector="auto", yunet_path=YUNET, device="cpu")
    assert rec.detector.name == "yunet"
    faces = rec(two_people)
    assert len(faces) == 2 and all(f.label in rec.label_names for f in faces)


@pytest.mark.unit  # no data from ../shared
def test_public_api_is_lazy_and_complete():
    # `import ferkit` must not pull in torch or OpenCV (fast CLI start-up, fast `import ferkit`).
    code = "import sys, ferkit; print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    assert ferkit.Recognizer is Recognizer
    assert "resnet18" in ferkit.list_models()
    assert ferkit.create_model("lenet").num_features == 84
    for name in ("load_dataset", "load_config", "train", "evaluate", "load_model", "Face", "Detection", "FrameResult"):
        assert callable(getattr(ferkit, name)), name
    assert isinstance(ferkit.__version__, str) and ferkit.__version__[0].isdigit()
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ferkit.nope  # noqa: B018


# ------------------------------------------------------------------ backend "auto", min_face, threads


def test_backend_auto_is_int8_for_the_shipped_model_on_cpu_and_explicit_backends_stay(tmp_path, monkeypatch, two_people):
    import ferkit.infer.recognizer as R

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    default = R.ModelRef.resolve("default")
    own = R.ModelRef("run", "checkpoint", tmp_path / "run" / "best.pt", "0" * 64)  # a checkpoint of one's own
    onnx = R.ModelRef("model.onnx", "onnx", tmp_path / "model.onnx", "1" * 64)
    assert R.resolve_backend("auto", default, cpu) == "onnx-int8"
    assert R.resolve_backend("auto", default, cuda) == "torch"
    assert R.resolve_backend("auto", own, cpu) == "torch"
    assert R.resolve_backend("auto", onnx, cpu) == "onnx"
    assert R.resolve_backend("torch", onnx, cpu) == "onnx"  # an ONNX file holds no torch module
    for b in ("torch", "onnx", "onnx-int8"):
        assert R.resolve_backend(b, default, cpu) == b
    monkeypatch.setattr(R, "onnxruntime_available", lambda: False)
    assert R.resolve_backend("auto", default, cpu) == "torch"  # no ONNX Runtime: the torch model
    monkeypatch.undo()

    auto = Recognizer(detector="yunet", yunet_path=YUNET, device="cpu")
    assert auto.backend == "onnx-int8"
    plain = Recognizer(detector="yunet", yunet_path=YUNET, device="cpu", backend="torch")
    assert plain.backend == "torch" and isinstance(plain.classifier, R.TorchClassifier)
    a, b = auto(two_people), plain(two_people)
    assert [f.box for f in a] == [f.box for f in b] and len(a) == 2
    assert [f.label for f in a] == [f.label for f in b]  # int8 and float agree on these two faces
    with pytest.raises(ValueError, match="unknown backend 'tflite'; valid: auto, torch, onnx, onnx-int8"):
        Recognizer(backend="tflite")


def test_min_face_reaches_the_detector(two_people):
    rec = Recognizer(detector="yunet", yunet_path=YUNET, device="cpu", min_face=80)
    assert rec.detector.min_face == 80 and rec.detector.scale_for(720, 1280) == 0.5
    assert len(rec(two_people)) == 2  # both faces are about 205 px
    assert Recognizer(detector="yunet", yunet_path=YUNET, device="cpu", min_face=260)(two_people) == []


def test_flip_tta_averages_each_face_and_its_mirror_image(two_people):
    plain = Recognizer(detector="yunet", yunet_path=YUNET, device="cpu", backend="torch")
    flip = Recognizer(detector="yunet", yunet_path=YUNET, device="cpu", backend="torch", tta="flip")
    assert "tta='flip'" in repr(flip)
    dets = plain.detect(two_people)
    from ferkit.infer.align import crop_faces

    g = plain.crop_geometry
    crops = crop_faces(two_people, dets, g.margin, g.offset_y, g.align)
    mirrored = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
    want = (plain.classify_crops(crops) + plain.classify_crops(mirrored)) / 2
    # classify_crops answers at the crops' temperature; faces YuNet found get YuNet's (the shipped model has its own)
    from ferkit.metrics import rescale_probs

    want = rescale_probs(want, plain.preprocess.temperature_for("yunet") / plain.preprocess.temperature)
    got = np.array([[f.probs[k] for k in plain.label_names] for f in flip(two_people)])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(want, plain.classify_crops(crops), atol=1e-3)  # the mirror image did change something
    with pytest.raises(ValueError, match="unknown tta 'tencrop'; valid: none, flip"):
        Recognizer(tta="tencrop")


def test_torch_runs_one_thread_per_call_by_default_and_leaves_the_process_setting(two_people, monkeypatch):
    rec = Recognizer(detector="yunet", yunet_path=YUNET, device="cpu", backend="torch")
    seen = []
    forward = rec.classifier.model.forward
    monkeypatch.setattr(rec.classifier.model, "forward", lambda x: seen.append(torch.get_num_threads()) or forward(x))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert len(rec(two_people)) == 2
        assert seen == [1] and torch.get_num_threads() == 2  # one thread inside the call, the caller's setting after
    finally:
        torch.set_num_threads(before)
