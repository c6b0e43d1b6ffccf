"""`ferkit export` to ONNX and TorchScript: outputs equal PyTorch's on real faces; the ONNX Runtime backend."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from conftest import FER_ROOT, PHOTOS, YUNET

from ferkit.app.cli import main
from ferkit.engine import export as E
from ferkit.engine.checkpoint import DEFAULT_MODEL, load_model
from ferkit.engine.classify import torch_threads
from ferkit.infer.align import crop_faces
from ferkit.infer.detectors import create_detector
from ferkit.infer.recognizer import Recognizer


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # One torch thread: on a busy 2-core CPU two threads fight each other and OpenCV's (several times slower).
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default model exported through the CLI, once for this module."""
    out = tmp_path_factory.mktemp("export")
    paths = {"onnx": out / "model.onnx", "torchscript": out / "model.pt"}
    for fmt, path in paths.items():
        assert main(["export", "--model", "default", "--format", fmt, "--out", str(path)]) == 0
    return paths


@pytest.fixture(scope="module")
def reference():
    """The PyTorch model, and real faces prepared as the Recognizer prepares them: 70 FER2013 PrivateTest
    images (10 per class) and the 13 faces YuNet crops from the group photos."""
    model, pre = load_model("default")
    faces = []
    for cdir in sorted((FER_ROOT / "test").iterdir()):
        for f in sorted(cdir.glob("PrivateTest_*.jpg"))[:10]:
            faces.append(cv2.imread(str(f)))
    detector = create_detector("yunet", yunet_path=YUNET)
    for photo in sorted(PHOTOS.glob("*.jpg")):
        img = cv2.imread(str(photo))
        faces.extend(crop_faces(img, detector.detect(img), pre.crop_margin))
    assert len(faces) == 70 + 13
    x = pre.to_tensor(pre.prepare_images(faces, order="bgr"))  # (83, 1, 48, 48), float, normalised
    with torch.inference_mode():
        logits = model(x).numpy()
    return model, pre, x, logits


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_cli_writes_both_formats_and_refuses_to_overwrite(exported, capsys):
    umask = os.umask(0)
    os.umask(umask)
    for path in exported.values():
        assert path.is_file() and path.stat().st_size > 1_000_000
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's private 0600
    # No paths of the machine that exported it (torch's exporter records the Python stack of every node).
    assert str(Path(E.__file__).parents[3]).encode() not in exported["onnx"].read_bytes()
    assert main(["export", "--format", "onnx", "--out", str(exported["onnx"])]) == 1
    assert "already exists; use --force" in capsys.readouterr().err
    assert main(["export", "--model", str(exported["onnx"].parent / "no_run"), "--out", str(exported["onnx"].parent / "x.onnx")]) == 1
    assert "no_run: no such checkpoint file or run folder" in capsys.readouterr().err


def test_onnx_equals_pytorch_on_real_faces(exported, reference):
    _, pre, x, logits = reference
    clf = E.OnnxClassifier(exported["onnx"], threads=1)
    assert clf.preprocess == pre and clf.label_names == pre.label_names
    got = clf(x.numpy())
    assert got.shape == logits.shape
    assert np.abs(got - logits).max() < 1e-4
    # probabilities at the model's temperature, carried in the file's metadata
    assert clf.preprocess.temperature == pre.temperature and pre.temperature != 1.0
    assert np.abs(clf.probs(x) - _softmax(logits / pre.temperature)).max() < 1e-4
    assert (got.argmax(1) == logits.argmax(1)).all()
    # Dynamic batch axis: one face at a time gives the same numbers.
    assert np.abs(clf(x[:1].numpy()) - logits[:1]).max() < 1e-4
    # Two threads split the work, not the numbers.
    two = E.OnnxClassifier(exported["onnx"], threads=2)
    assert np.abs(two(x[:2].numpy()) - logits[:2]).max() < 1e-4
    assert np.abs(two(x.numpy()) - logits).max() < 1e-4


def test_onnx_file_carries_the_preprocessing_for_other_runtimes(exported, reference):
    _, pre, _, _ = reference
    proto = onnx.load(str(exported["onnx"]))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[E.META_PREPROCESS]) == pre.to_dict()
    assert json.loads(meta[E.META_MODEL])["name"] == "resnet18"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named (dynamic) batch dimension


def test_onnx_without_ferkit_metadata_is_refused(exported, tmp_path):
    proto = onnx.load(str(exported["onnx"]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ValueError, match="bare.onnx.*ferkit export"):
        E.OnnxClassifier(bare)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.onnx: not a loadable ONNX model"):
        E.OnnxClassifier(junk)


def test_torchscript_equals_pytorch_on_real_faces(exported, reference):
    _, pre, x, logits = reference
    module, ts_pre = E.load_torchscript(exported["torchscript"])
    assert ts_pre == pre
    with torch.inference_mode():
        got = module(x).numpy()
        one = module(x[:1]).numpy()
    assert np.abs(got - logits).max() < 1e-4
    assert np.abs(one - logits[:1]).max() < 1e-4


def test_recognizer_onnx_backend_agrees_with_torch(exported, monkeypatch):
    # The onnx backend exports a checkpoint once into the cache; the CLI export above stands in for that
    # (same function), so the test counts exports instead of repeating one.
    calls = []
    monkeypatch.setattr(E, "export_onnx", lambda spec, path: calls.append(spec) or shutil.copyfile(exported["onnx"], path))
    photo = PHOTOS / "test_image.jpg"
    torch_faces = Recognizer("default", detector="yunet", yunet_path=YUNET, backend="torch")(photo)
    onnx_rec = Recognizer("default", detector="yunet", yunet_path=YUNET, backend="onnx", threads=1)
    onnx_faces = onnx_rec(photo)
    assert len(onnx_faces) == len(torch_faces) == 6
    assert [f.label for f in onnx_faces] == [f.label for f in torch_faces]
    for a, b in zip(onnx_faces, torch_faces):
        assert a.box == b.box
        assert np.abs(np.array(list(a.probs.values())) - list(b.probs.values())).max() < 1e-4
    # Cached by checkpoint content: a second ONNX recognizer does not export again.
    Recognizer("default", detector="haar", backend="onnx")
    assert len(calls) == 1
    # An exported file works directly; the backend follows from the file type.
    from_file = Recognizer(exported["onnx"], detector="yunet", yunet_path=YUNET)
    assert from_file.backend == "onnx" and from_file.label_names == onnx_rec.label_names
    assert [f.label for f in from_file(photo)] == [f.label for f in torch_faces]


def test_int8_export_is_calibrated_on_real_faces_and_agrees_with_the_float_model(tmp_path, reference, capsys):
    from ferkit.infer.detectors import sha256_file

    _, pre, x, logits = reference
    out = tmp_path / "int8.onnx"
    args = ["export", "--format", "onnx", "--int8", "--calib", str(FER_ROOT), "--calib-images", "64", "--out", str(out)]
    assert main(args) == 0
    assert "calibrating on 64 images" in capsys.readouterr().out
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: ONNX Runtime fuses these into int8 kernels
    # The image itself is not quantized (its pixel levels would all sit on rounding ties).
    assert [n.op_type for n in proto.graph.node if E.INPUT_NAME in n.input] == ["Conv"]
    meta = {p.key: p.value for p in proto.metadata_props}
    spec = json.loads(meta[E.META_MODEL])
    assert spec["quantized"] == {"dtype": "int8", "method": "minmax", "calibration_images": 64, "weight_bits": 8,
                                 "source_sha256": sha256_file(DEFAULT_MODEL)}
    clf = E.OnnxClassifier(out, threads=1)
    assert clf.preprocess == pre
    got = clf(x.numpy())
    # Not equal to the float model (that is the price of int8), but the same answer on nearly every real face.
    agree = float((got.argmax(1) == logits.argmax(1)).mean())
    assert agree >= 0.9, agree
    # torch's and NumPy's normalisation differ in the last float bit; the int8 model must not care.
    u8 = np.rint((x.numpy()[:, 0] * pre.std[0] + pre.mean[0]) * 255).astype(np.uint8)
    assert (clf(pre.to_array(u8)).argmax(1) == got.argmax(1)).all()
    diff = np.abs(clf.probs(x) - _softmax(logits / pre.temperature)).sum(1) / 2  # total variation distance per face
    assert np.median(diff) < 0.1 and diff.mean() < 0.15, (np.median(diff), diff.mean())  # 64 images: 0.06, 0.09
    assert 0 < np.abs(got - logits).max()
    # The Recognizer runs it like any ONNX file.
    rec = Recognizer(out, detector="yunet", yunet_path=YUNET, threads=1)
    assert rec.backend == "onnx" and len(rec(PHOTOS / "two_people.jpg")) == 2
    # `ferkit eval` scores it as it scores a checkpoint: on all of PrivateTest, close to the float model's card figure.
    from test_default_model import card_figure

    from ferkit.engine.evaluate import evaluate

    res = evaluate(out, data=FER_ROOT, split="PrivateTest")
    assert res["architecture"] == f"{spec['name']} (int8)" and res["n"] == 3589
    # The file says what the model learned from, so eval knows PrivateTest is its held-out split.
    assert {"data", "val_split"} <= spec["trained_on"].keys()
    assert "held-out test split" in res["split_role"]
    assert abs(100 * res["accuracy"] - card_figure("PrivateTest accuracy")) < 2.0, res["accuracy"]


def test_int8_export_refuses_what_it_cannot_do(tmp_path, capsys, caplog, exported):
    assert main(["export", "--format", "torchscript", "--int8", "--out", str(tmp_path / "m.pt")]) == 1
    assert "--int8 works with --format onnx only" in capsys.readouterr().err
    args = ["export", "--int8", "--calib", str(FER_ROOT), "--calib-split", "calibration", "--out", str(tmp_path / "m.onnx")]
    assert main(args) == 1
    assert "unknown split 'calibration'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="calib_images: expected uint8 face crops"):
        E.export_onnx_int8("default", tmp_path / "m.onnx", np.zeros((0, 48, 48), np.uint8))
    with pytest.raises(ValueError, match="unknown calibration method 'mean'"):
        E.export_onnx_int8("default", tmp_path / "m.onnx", np.zeros((2, 48, 48), np.uint8), "mean")
    own = tmp_path / "own.pt"  # a checkpoint of one's own: no int8 file comes with it
    shutil.copyfile(DEFAULT_MODEL, own)
    with pytest.raises(ValueError, match="(?s)backend 'onnx-int8' needs a calibrated int8 file.*ferkit export --model"):
        Recognizer(own, detector="haar", backend="onnx-int8")
    own.unlink()
    with pytest.raises(ValueError, match="needs a calibrated int8 file for ferplus"):  # ships as a checkpoint only
        Recognizer("ferplus", detector="haar", backend="onnx-int8")
    assert not list(tmp_path.iterdir())  # nothing half-written is left behind
    with caplog.at_level(logging.WARNING):  # a float file asked to run as int8 runs, with a word about it
        assert Recognizer(exported["onnx"], detector="haar", backend="onnx-int8").backend == "onnx-int8"
    assert "is not an int8 file" in caplog.text


@pytest.mark.unit  # no data from ../shared
def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown export format 'tflite'; valid: onnx, torchscript"):
        E.export_model("default", "x.tflite", "tflite")
