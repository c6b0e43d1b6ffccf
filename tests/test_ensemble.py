"""Ensembles (``--model a,b,c``): probabilities averaged over members that each keep their own input and classes.

The members here are the shipped model and exact re-wirings of it (classes in another order, an RGB input,
an extra class), so every ensemble has a known right answer: the shipped model's own probabilities.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import FER_ROOT, PHOTOS, make_fer_slice

from ferkit.app.cli import main
from ferkit.engine.checkpoint import (
    ensemble_checkpoint,
    ensemble_members,
    load_checkpoint,
    load_model,
    model_digest,
    save_checkpoint,
)


def _faces(n: int = 16) -> np.ndarray:
    """Real FER2013 PrivateTest faces, uint8 (n, 48, 48)."""
    files = sorted((FER_ROOT / "test").glob("*/PrivateTest_*.jpg"))[:: 97][:n]
    return np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])


def _head(sd: dict) -> tuple[str, str]:
    """The names of the classifier head's weight and bias (the one 2-D weight of the network)."""
    w = next(k for k in sd if k.endswith(".weight") and sd[k].ndim == 2)
    return w, w[: -len("weight")] + "bias"


def _probs(spec, faces: np.ndarray) -> np.ndarray:
    """The model's calibrated probabilities (``Preprocess.probs``: what every backend reports; an ensemble's members
    apply their own temperatures inside, its own is 1 until fitted)."""
    model, pre = load_model(spec)
    with torch.no_grad():
        return pre.probs(model(pre.to_tensor(pre.prepare_images(faces)))).numpy()


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Re-wirings of the shipped model that compute the same function: classes reversed; RGB input; 8 classes."""
    out = tmp_path_factory.mktemp("variants")
    base = load_checkpoint("default")
    sd = base["state_dict"]
    head_w, head_b = _head(sd)
    names = list(base["preprocess"]["label_names"])

    rev = dict(base, state_dict=dict(sd), preprocess=dict(base["preprocess"], label_names=names[::-1]))
    rev["state_dict"][head_w], rev["state_dict"][head_b] = sd[head_w].flip(0), sd[head_b].flip(0)
    save_checkpoint(rev, out / "reversed.pt")

    # RGB: the first convolution's weights split equally over three identical channels.
    first = next(k for k in sd if sd[k].ndim == 4)
    rgb = dict(base, state_dict=dict(sd), model=dict(base["model"], in_chans=3),
               preprocess=dict(base["preprocess"], channels=3, mean=[0.5] * 3, std=[0.25] * 3))
    rgb["state_dict"][first] = (sd[first].float() / 3).repeat(1, 3, 1, 1)
    save_checkpoint(rgb, out / "rgb.pt")

    # An 8th class ("contempt") whose logit is very low: over the 7 shared classes it is the same model.
    eight = dict(base, state_dict=dict(sd), model=dict(base["model"], num_classes=8),
                 preprocess=dict(base["preprocess"], label_names=names + ["contempt"]))
    eight["state_dict"][head_w] = torch.cat([sd[head_w], torch.zeros_like(sd[head_w][:1])])
    eight["state_dict"][head_b] = torch.cat([sd[head_b], torch.full_like(sd[head_b][:1], -30.0)])
    save_checkpoint(eight, out / "eight.pt")
    return {"reversed": out / "reversed.pt", "rgb": out / "rgb.pt", "eight": out / "eight.pt"}


def test_members_keep_their_own_classes_and_input(variants):
    faces = _faces()
    ref = _probs("default", faces)
    assert (ref.argmax(1) != ref.argmax(1)[0]).any()  # the faces are not all one class: a real check
    for name in ("reversed", "rgb", "eight"):
        spec = f"default,{variants[name]}"
        model, pre = load_model(spec)
        assert pre.label_names == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
        np.testing.assert_allclose(_probs(spec, faces), ref, atol=2e-5, err_msg=name)
    # The first member sets the ensemble's classes and input: here reversed class order.
    spec = f"{variants['reversed']},default"
    _, pre = load_model(spec)
    assert pre.label_names[0] == "neutral"
    np.testing.assert_allclose(_probs(spec, faces), ref[:, ::-1], atol=2e-5)


def test_ensemble_mixes_different_members_and_weights(variants):
    faces = _faces()
    ref = _probs("default", faces)
    flat = np.full_like(ref, 1 / ref.shape[1])
    ckpt = load_checkpoint("default")
    # A second member that knows nothing: a zero head gives zero logits, so uniform probabilities.
    blank = dict(ckpt, state_dict=dict(ckpt["state_dict"]))
    for k in _head(blank["state_dict"]):
        blank["state_dict"][k] = torch.zeros_like(blank["state_dict"][k])
    for weights, want in ((None, (ref + flat) / 2), ([3.0, 1.0], 0.75 * ref + 0.25 * flat)):
        model, pre = load_model_from(ensemble_checkpoint([ckpt, blank], weights))
        with torch.no_grad():
            got = pre.probs(model(pre.to_tensor(faces))).numpy()
        np.testing.assert_allclose(got, want, atol=2e-5)


def load_model_from(ckpt):
    from ferkit.engine.checkpoint import build_from_checkpoint

    model, pre = build_from_checkpoint(ckpt)
    return model.eval(), pre


@pytest.mark.unit  # no data from ../shared
def test_bad_ensembles_say_why(variants, tmp_path):
    assert ensemble_members("default") is None and ensemble_members("a,b") == ["a", "b"]
    with pytest.raises(ValueError, match="two or more models joined by commas"):
        ensemble_members("default,,b")
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_checkpoint(f"default,{tmp_path / 'missing.pt'}")
    with pytest.raises(ValueError, match="is itself an ensemble"):
        ensemble_checkpoint([load_checkpoint("default"), load_checkpoint(f"default,{variants['rgb']}")])
    # The eight-class member first: the shipped model has no 'contempt'.
    with pytest.raises(ValueError, match=r"has no class \['contempt'\]"):
        load_checkpoint(f"{variants['eight']},default")
    # Digests follow the members and their order.
    a, b = model_digest(f"default,{variants['rgb']}"), model_digest(f"{variants['rgb']},default")
    assert a != b and len(a) == 64


def test_ensemble_exports_to_one_onnx_file_and_one_checkpoint_and_scores_in_eval(variants, tmp_path, capsys):
    from ferkit.engine.export import OnnxClassifier

    spec = f"default,{variants['rgb']},{variants['eight']}"
    onnx_file, pt_file = tmp_path / "ensemble.onnx", tmp_path / "ensemble.pt"
    assert main(["export", "--model", spec, "--format", "onnx", "--out", str(onnx_file)]) == 0
    assert main(["export", "--model", spec, "--format", "checkpoint", "--out", str(pt_file)]) == 0
    faces = _faces()
    ref = _probs("default", faces)
    clf = OnnxClassifier(onnx_file)
    assert clf.model_spec["name"] == "ensemble" and len(clf.model_spec["kwargs"]["members"]) == 3
    np.testing.assert_allclose(clf.probs(faces), ref, atol=1e-4)
    np.testing.assert_allclose(_probs(pt_file, faces), ref, atol=2e-5)
    members = load_checkpoint(pt_file)["model"]["kwargs"]["members"]
    assert [m["source"] for m in members] == ["weights/default.pt", f"{variants['rgb'].parent.name}/rgb.pt",
                                              f"{variants['eight'].parent.name}/eight.pt"]  # no machine paths

    # Weighted: the weights travel in the file (their effect is checked in test_ensemble_mixes_...).
    weighted = tmp_path / "weighted.pt"
    assert main(["export", "--model", f"default,{variants['rgb']}", "--member-weights", "0.75,0.25",
                 "--format", "checkpoint", "--out", str(weighted)]) == 0
    assert load_checkpoint(weighted)["model"]["kwargs"]["weights"] == [0.75, 0.25]
    np.testing.assert_allclose(_probs(weighted, faces), ref, atol=2e-5)  # both members compute the same function
    assert main(["export", "--model", "default", "--member-weights", "1", "--format", "checkpoint",
                 "--out", str(tmp_path / "one.pt")]) == 1
    assert "need an ensemble" in capsys.readouterr().err

    data = make_fer_slice(tmp_path / "slice", 6)
    scores = {}
    for model in ("default", spec, str(pt_file), str(onnx_file)):
        out = tmp_path / f"eval{len(scores)}"
        assert main(["eval", "--model", model, "--data", str(data), "--split", "test", "--out", str(out)]) == 0
        scores[model] = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    accs = {m: s["accuracy"] for m, s in scores.items()}
    assert len(set(accs.values())) == 1, accs  # the same function, however it is stored
    assert scores[spec]["architecture"] == "ensemble" and scores[spec]["classes_left_out"] == []


def test_a_model_with_a_class_the_data_lacks_is_scored_on_the_shared_classes(variants, tmp_path, capsys):
    data = make_fer_slice(tmp_path / "slice", 6)
    got = {}
    for model in ("default", str(variants["eight"])):
        out = tmp_path / f"eval_{len(got)}"
        assert main(["eval", "--model", model, "--data", str(data), "--split", "test", "--out", str(out)]) == 0
        got[model] = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    eight = got[str(variants["eight"])]
    assert eight["classes_left_out"] == ["contempt"]
    assert eight["accuracy"] == got["default"]["accuracy"] and eight["n"] == got["default"]["n"]


def test_recognizer_runs_an_ensemble_as_one_model(variants):
    from ferkit.infer.recognizer import Recognizer

    photo = PHOTOS / "two_people.jpg"
    one = Recognizer("default", detector="yunet", backend="torch", device="cpu")(photo)
    ens = Recognizer(f"default,{variants['reversed']}", detector="yunet", device="cpu")  # backend auto
    assert ens.backend == "torch" and ens.label_names == tuple(one[0].probs)
    faces = ens(photo)
    assert [f.box for f in faces] == [f.box for f in one] and len(faces) == 2
    # The members apply their crops' temperature inside; the ensemble has no YuNet temperature of its own until one
    # is fitted on it (ferkit calibrate --photos), where the single model applies its own: compare at one temperature.
    from ferkit.metrics import rescale_probs

    pre = Recognizer("default", detector="yunet", backend="torch", device="cpu").preprocess
    factor = pre.temperature / pre.temperature_for("yunet")
    for a, b in zip(faces, one):
        assert a.label == b.label
        want = rescale_probs(np.array([[b.probs[k] for k in b.probs]]), factor)[0]
        assert np.abs(np.array([a.probs[k] for k in b.probs]) - want).max() < 1e-4
