"""The shipped default model: what its model card says holds on a real PrivateTest slice."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import FER_ROOT

from ferkit import labels as L
from ferkit.engine.checkpoint import DEFAULT_MODEL, load_checkpoint

CARD = DEFAULT_MODEL.parent / "MODEL_CARD.md"
N_PER_CLASS_MAX = 120  # up to 120 PrivateTest images per class: 652 images in all


def card_figure(name: str) -> float:
    """A percentage from the model card's machine-readable line ``- name: NN.NN%``."""
    m = re.search(rf"^- {re.escape(name)}: ([0-9.]+)%", CARD.read_text(), flags=re.M)
    assert m, f"{CARD} has no line '- {name}: NN.NN%'"
    return float(m.group(1))


def private_test_slice() -> tuple[list[np.ndarray], np.ndarray]:
    """Every k-th PrivateTest image per class (sorted names): a fixed, class-stratified real slice."""
    crops, y = [], []
    for k, name in enumerate(L.FER2013):
        files = sorted((FER_ROOT / "test" / name).glob("PrivateTest_*.jpg"))
        step = max(1, len(files) // N_PER_CLASS_MAX)
        for f in files[::step][:N_PER_CLASS_MAX]:
            crops.append(cv2.imread(str(f), cv2.IMREAD_COLOR))  # BGR, as a camera frame would be
            y.append(k)
    return crops, np.array(y)


@pytest.mark.unit  # no data from ../shared
def test_default_checkpoint_is_small_and_loads_as_data_only():
    assert DEFAULT_MODEL.is_file() and CARD.is_file()
    assert DEFAULT_MODEL.stat().st_size < 8 * 2**20  # a few MB, shipped in the package
    ckpt = load_checkpoint("default")  # torch.load(weights_only=True) inside
    assert tuple(ckpt["preprocess"]["label_names"]) == L.FER2013
    assert "optimizer" not in ckpt  # inference weights only


def test_default_model_accuracy_on_a_private_test_slice_matches_its_card():
    from ferkit.infer.recognizer import Recognizer

    torch.set_num_threads(1)
    rec = Recognizer("default", detector="haar")  # the detector is not used: the crops are faces already
    crops, y = private_test_slice()
    probs = rec.classify_crops(crops)
    pred = probs.argmax(1)
    acc = float((pred == y).mean() * 100)
    # Recall per class, averaged: the slice is class-stratified, so compare the card's macro recall-free
    # figure loosely: the plain accuracy of a class-balanced slice is lower than that of the real class mix.
    balanced_acc = float(np.mean([(pred[y == k] == k).mean() for k in range(len(L.FER2013))]) * 100)
    card_acc = card_figure("PrivateTest accuracy")
    card_bal = card_figure("PrivateTest balanced accuracy")
    # 652 images: one binomial standard error is about 1.9 points; allow 3 of them.
    assert abs(balanced_acc - card_bal) < 6.0, (balanced_acc, card_bal)
    assert acc > 100 / 7 * 3, acc  # far above chance (14.3%) in any case
    assert card_acc >= 60.0


def test_default_model_predicts_with_a_real_photo(tmp_path):
    from conftest import PHOTOS, YUNET

    from ferkit.infer.recognizer import Recognizer

    faces = Recognizer("default", detector="yunet", yunet_path=YUNET)(PHOTOS / "two_people.jpg")
    assert len(faces) == 2
    for f in faces:
        assert f.label in L.FER2013 and abs(sum(f.probs.values()) - 1) < 1e-4
        assert max(f.probs.values()) > 0.3  # a trained model is not flat


@pytest.mark.unit  # no data from ../shared
@pytest.mark.parametrize("name", ["PrivateTest accuracy", "PrivateTest accuracy (ten-crop TTA)", "PrivateTest macro-F1"])
def test_card_states_its_figures(name):
    assert 0 < card_figure(name) <= 100


@pytest.mark.unit  # no data from ../shared
def test_card_names_the_command_and_split():
    text = CARD.read_text()
    assert "ferkit train --recipe default_fer2013" in text
    assert "PublicTest" in text and "PrivateTest" in text
    assert Path(DEFAULT_MODEL).name in text


def test_shipped_int8_model_is_made_from_the_shipped_weights_and_scores_as_its_card_says():
    import json

    import onnx

    from ferkit.infer.detectors import sha256_file
    from ferkit.engine.export import META_MODEL
    from ferkit.infer.recognizer import DEFAULT_INT8, Recognizer

    assert DEFAULT_INT8.is_file() and DEFAULT_INT8.stat().st_size < 4 * 2**20
    meta = {p.key: p.value for p in onnx.load(str(DEFAULT_INT8)).metadata_props}
    quant = json.loads(meta[META_MODEL])["quantized"]
    # Stale-file guard: default.pt retrained without re-exporting default_int8.onnx fails here.
    assert quant["dtype"] == "int8" and quant["source_sha256"] == sha256_file(DEFAULT_MODEL)
    crops, y = private_test_slice()
    int8 = Recognizer("default", detector="haar", backend="onnx-int8", threads=1)
    torch_rec = Recognizer("default", detector="haar", backend="torch")
    p8, p32 = int8.classify_crops(crops), torch_rec.classify_crops(crops)
    assert int8.label_names == torch_rec.label_names == L.FER2013
    assert float((p8.argmax(1) == p32.argmax(1)).mean()) >= 0.95  # the same answer on nearly every face
    pred = p8.argmax(1)
    balanced_acc = float(np.mean([(pred[y == k] == k).mean() for k in range(len(L.FER2013))]) * 100)
    assert abs(balanced_acc - card_figure("PrivateTest balanced accuracy (int8 ONNX)")) < 6.0
    assert abs(card_figure("PrivateTest accuracy (int8 ONNX)") - card_figure("PrivateTest accuracy")) < 1.0
