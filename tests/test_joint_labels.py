"""Both label sets at once (issue 24): FER2013's label mixed with the FER+ votes, the logit-adjusted loss, every
epoch kept, and a fine-tune keeping its starting model's calibrated face crop."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import FER_ROOT, make_fer_slice

VOTES = FER_ROOT / "ferplus" / "fer2013new.csv"
JOIN = FER_ROOT / "ferplus" / "jpg_to_ferplus.csv"


def test_mixed_targets_are_the_label_and_the_votes_by_hand(tmp_path):
    from ferkit.data.readers import load_dataset
    from ferkit.labels import FER2013

    data = make_fer_slice(tmp_path / "fer", 6)
    plain = load_dataset(data)
    mixed = load_dataset(data, ferplus=str(VOTES), join_csv=str(JOIN), ferplus_mix=0.25)
    assert list(mixed.sources) == list(plain.sources) and (mixed.labels == plain.labels).all()  # nothing dropped
    assert mixed.label_names == FER2013 and mixed.soft.shape == (len(plain), 7)
    np.testing.assert_allclose(mixed.soft.sum(1), 1.0, atol=1e-6)
    # one image by hand: its FER+ row, single votes dropped, contempt left out, renormalised
    rows = list(csv.reader(open(VOTES)))
    join = {r["jpg_path"]: int(r["fer2013_rows"].split(";")[-1]) for r in csv.DictReader(open(JOIN)) if r["fer2013_rows"]}
    cols = {"neutral": 2, "happy": 3, "surprise": 4, "sad": 5, "angry": 6, "disgust": 7, "fear": 8}
    checked = 0
    for i, src in enumerate(mixed.sources):
        if src not in join:
            continue
        votes = [float(x) for x in rows[1 + join[src]][2:12]]
        votes = [v if v > 1 else 0.0 for v in votes]
        if max(range(10), key=lambda j: votes[j]) >= 8:  # unknown / not a face on top: the one-hot alone
            continue
        dist = np.array([votes[cols[n] - 2] for n in FER2013])
        if dist.sum() == 0:
            continue
        want = 0.75 * np.eye(7)[plain.labels[i]] + 0.25 * dist / dist.sum()
        np.testing.assert_allclose(mixed.soft[i], want, atol=1e-6)
        checked += 1
    assert checked > 20


@pytest.mark.unit
def test_logit_adjusted_loss_is_cross_entropy_of_shifted_logits():
    from ferkit.engine.builders import LogitAdjustedLoss

    prior = np.array([0.7, 0.2, 0.1])
    loss = LogitAdjustedLoss(torch.nn.CrossEntropyLoss(), prior, 0.5, torch.device("cpu"))
    logits, y = torch.tensor([[1.0, 0.5, -1.0], [0.0, 2.0, 0.3]]), torch.tensor([2, 0])
    want = torch.nn.functional.cross_entropy(logits + 0.5 * torch.log(torch.tensor(prior, dtype=torch.float32)), y)
    assert loss(logits, y).item() == pytest.approx(want.item())


@pytest.mark.unit
def test_config_checks_the_mix():
    from ferkit.engine.config import load_config

    with pytest.raises(ValueError, match="ferplus_mix needs ferplus"):
        load_config(None, ["ferplus_mix=0.5"])
    with pytest.raises(ValueError, match="ferplus_mix must be in"):
        load_config(None, ["ferplus_mix=1.0", "ferplus=x.csv"])
    with pytest.raises(ValueError, match="logit_adjust must be"):
        load_config(None, ["logit_adjust=-1"])
    for epochs in (1, 2, 3):  # one-cycle with a handful of steps no longer divides by zero
        load_config("joint_labels", [f"epochs={epochs}"])


def test_joint_labels_recipe_trains_keeps_every_epoch_and_the_default_crop(tmp_path):
    from ferkit.app.cli import main as cli
    from ferkit.engine.checkpoint import load_checkpoint

    data = make_fer_slice(tmp_path / "fer", 25)
    out = tmp_path / "run"
    assert cli(["train", "--recipe", "joint_labels", f"data={data}", f"ferplus={VOTES}", f"join_csv={JOIN}", "epochs=2",
                "batch_size=32", "threads=1", "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "epochs").iterdir()) == ["epoch_001.pt", "epoch_002.pt"]
    ck = load_checkpoint(out / "epochs" / "epoch_002.pt")
    start = load_checkpoint("default")["preprocess"]
    assert ck["config"]["ferplus_mix"] == 0.5 and ck["preprocess"]["label_names"] == start["label_names"]
    # the fine-tune keeps the shipped model's calibrated crops, not its temperatures
    for det, g in start["crop_geometry"].items():
        assert ck["preprocess"]["crop_geometry"][det] == {k: v for k, v in g.items() if k != "temperature"}
    assert ck["preprocess"]["temperature"] == 1.0
