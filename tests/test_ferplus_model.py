"""The shipped FER+ model (``--model ferplus``): 8 classes, and what its model card says holds on a real slice."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import FER_ROOT, PHOTOS, YUNET

from ferkit import labels as L
from ferkit.engine.checkpoint import SHIPPED_MODELS, load_checkpoint

CARD = SHIPPED_MODELS["ferplus"].with_name("FERPLUS_MODEL_CARD.md")
VOTES = FER_ROOT / "ferplus" / "fer2013new.csv"
JOIN = FER_ROOT / "ferplus" / "jpg_to_ferplus.csv"


def card_figure(name: str) -> float:
    m = re.search(rf"^- {re.escape(name)}: ([0-9.]+)%", CARD.read_text(), flags=re.M)
    assert m, f"{CARD} has no line '- {name}: NN.NN%'"
    return float(m.group(1))


@pytest.fixture(scope="module")
def majority_test():
    """FER+ PrivateTest (FER2013Test) with majority labels, the protocol of Barsoum et al.: 3,152 images."""
    from ferkit.data.readers import load_dataset

    return load_dataset(FER_ROOT, ferplus=VOTES, ferplus_mode="majority", join_csv=JOIN).subset("test")


@pytest.mark.unit  # no data from ../shared
def test_ferplus_checkpoint_has_eight_classes_and_loads_as_data_only():
    ckpt = load_checkpoint("ferplus")
    assert tuple(ckpt["preprocess"]["label_names"]) == L.FERPLUS and "contempt" in L.FERPLUS
    assert "optimizer" not in ckpt and SHIPPED_MODELS["ferplus"].stat().st_size < 8 * 2**20
    assert ckpt["config"]["ferplus"] and CARD.is_file()


def test_ferplus_accuracy_on_a_majority_label_slice_matches_its_card(majority_test):
    from ferkit.infer.recognizer import Recognizer

    assert len(majority_test) == 3152
    rec = Recognizer("ferplus", detector="haar", backend="torch", threads=1)
    names = rec.label_names
    # A class-stratified slice: every 5th image of each class, up to 80 (contempt: 4 of 16), 397 images in all.
    idx = np.concatenate([np.flatnonzero(majority_test.labels == k)[::5][:80] for k in range(len(L.FERPLUS))])
    probs = rec.classify_crops(list(majority_test.images[idx]))
    y = majority_test.labels[idx]
    assert tuple(majority_test.label_names) == names
    pred = probs.argmax(1)
    present = [k for k in range(len(names)) if (y == k).any()]
    balanced = float(np.mean([(pred[y == k] == k).mean() for k in present]) * 100)
    card = card_figure("FER+ PrivateTest balanced accuracy (majority labels)")
    assert abs(balanced - card) < 8.0, (balanced, card)  # 397 images: a few binomial standard errors
    assert card_figure("FER+ PrivateTest accuracy (majority labels)") > 80.0


def test_ferplus_model_recognises_a_real_photo_through_the_cli(tmp_path, capsys):
    from ferkit.app.cli import main
    from ferkit.infer.writers import read_jsonl

    out = tmp_path / "out"
    assert main(["predict", str(PHOTOS / "two_people.jpg"), "--model", "ferplus", "--out", str(out),
                 "--detector", "yunet", "--yunet", str(YUNET)]) == 0
    capsys.readouterr()
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 2
    for rec in records:
        assert set(rec["probs"]) == set(L.FERPLUS) and rec["label"] == max(rec["probs"], key=rec["probs"].get)
