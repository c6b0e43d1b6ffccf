"""What a model sees: saliency and Grad-CAM maps on real faces, image grids and prediction galleries."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import FER_ROOT, make_fer_slice

from ferkit.app.cli import main as cli
from ferkit.engine.checkpoint import load_model
from ferkit.engine.config import load_config
from ferkit.engine.evaluate import predict_split
from ferkit.engine.trainer import train
from ferkit.imageio import read_image
from ferkit.models.registry import create_model
from ferkit.report.galleries import confused_pairs, write_galleries
from ferkit.report.saliency import explain_images, find_cam_layer, grad_cam, save_explanation_grid, vanilla_saliency


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A LeNet trained for 3 epochs on a real 20-per-class FER2013 slice: (run folder, data)."""
    root = tmp_path_factory.mktemp("explain")
    data = make_fer_slice(root / "fer", 20)
    cfg = load_config(None, [f"data={data}", "model=lenet", "epochs=3", "batch_size=32", "threads=1", "tta=none",
                             "augment=none", "optimizer=adam", "lr=0.003"])
    train(cfg, root / "run")
    return root / "run", data


def _faces(n: int = 4) -> list[np.ndarray]:
    files = sorted((FER_ROOT / "test" / "happy").glob("PrivateTest_*.jpg"))[:n // 2] + \
        sorted((FER_ROOT / "test" / "surprise").glob("PrivateTest_*.jpg"))[:n - n // 2]
    return [read_image(f) for f in files]


def _check_maps(maps: np.ndarray, n: int, size: int) -> None:
    assert maps.shape == (n, size, size)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    for m in maps:
        assert m.std() > 1e-3 and m.max() == pytest.approx(1.0), "a map is constant"


def test_trained_model_maps_have_input_size_and_structure(trained):
    run, _ = trained
    model, pre = load_model(run)
    faces = _faces(4)
    ex = explain_images(model, pre, faces, labels=[3, 3, 5, 5])
    assert len(ex) == 4
    _check_maps(np.stack([e.saliency for e in ex]), 4, 48)
    _check_maps(np.stack([e.gradcam for e in ex]), 4, 48)
    for e in ex:
        assert e.image.shape == (48, 48) and e.image.dtype == np.uint8
        assert e.pred == int(np.argmax(e.probs)) and e.probs.sum() == pytest.approx(1, abs=1e-4)
        assert e.title.startswith(f"true {pre.label_names[e.true]} | pred ")
    # different images get different maps; a different target class gives a different Grad-CAM
    assert not np.allclose(ex[0].saliency, ex[2].saliency)
    x = pre.to_tensor(pre.prepare_images(faces[:1]))
    cams = [grad_cam(model, x, target=[c])[0] for c in range(len(pre.label_names))]
    assert max(np.abs(cams[0] - c).max() for c in cams[1:]) > 0.05


@pytest.mark.parametrize("name, kwargs, layer, size, chans", [
    ("lenet", {}, "features", 48, 1),
    ("deep_emotion", {}, "features", 48, 1),
    ("vgg9", {}, "stages", 48, 1),
    ("resnet11", {"width": 8}, "stages", 48, 1),
    ("resnext18", {"width": 16, "groups": 4, "base_width": 16}, "stages", 48, 1),
    ("tv_resnet18", {}, "body.layer4", 224, 3),
])
def test_grad_cam_finds_the_last_conv_maps_of_every_family(name, kwargs, layer, size, chans):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=chans, **kwargs).eval()
    imgs = [cv2.resize(f, (size, size)) if chans == 1 else cv2.cvtColor(cv2.resize(f, (size, size)), cv2.COLOR_GRAY2RGB)
            for f in _faces(2)]
    x = torch.from_numpy(np.stack(imgs)).float().div(255)
    x = (x.unsqueeze(1) if chans == 1 else x.permute(0, 3, 1, 2)).sub(0.5).div(0.25)
    assert find_cam_layer(model, x) == layer
    _check_maps(grad_cam(model, x), 2, size)
    _check_maps(vanilla_saliency(model, x), 2, size)


def test_grid_png_shows_every_image(trained, tmp_path):
    model, pre = load_model(trained[0])
    ex = explain_images(model, pre, _faces(5), labels=[3, 3, 5, 5, 5], names=["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    path = save_explanation_grid(ex, tmp_path / "grid.png", title="five faces")
    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] > img.shape[0] > 400  # 3 rows of two triples
    with pytest.raises(ValueError, match="no images to explain"):
        explain_images(model, pre, [])
    with pytest.raises(ValueError, match=r"target classes \[9\] outside 0..6"):
        grad_cam(model, pre.to_tensor(pre.prepare_images(_faces(1))), target=[9])


def test_galleries_pick_most_confident_right_and_wrong(trained, tmp_path):
    run, data = trained
    sp = predict_split(run, data, "PrivateTest")
    labels, pred = sp.part.labels, sp.probs["none"].argmax(1)
    assert len(labels) == 140 and sp.probs["none"].shape == (140, 7)
    paths = write_galleries(sp, tmp_path, n=3, pairs=2)
    for kind in ("correct", "wrong", "confused"):
        assert cv2.imread(str(paths[kind])) is not None
    with open(paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    by = {}
    for r in rows:
        by.setdefault((r["gallery"], r["row"]), []).append(r)
        assert (r["true"] == r["predicted"]) == (r["gallery"] == "correct")
        assert (FER_ROOT / r["source"]).is_file() or (data / r["source"]).is_file()
    for (gallery, row), items in by.items():
        conf = [float(r["confidence"]) for r in items]
        assert conf == sorted(conf, reverse=True) and len(items) <= 3
        if gallery != "confused":
            assert {r["true"] for r in items} == {row}
    pairs = confused_pairs(labels, pred, 7, k=2)
    wrong = labels != pred
    top = max(np.bincount(labels[wrong] * 7 + pred[wrong]))
    assert pairs[0][2] == top  # the most frequent mistake comes first
    names = sp.pre.label_names
    assert {row for g, row in by if g == "confused"} == {f"{names[t]} → {names[p]} ({c})" for t, p, c in pairs}


def test_explain_cli_split_and_image_files(trained, tmp_path, capsys):
    run, data = trained
    out = tmp_path / "ex"
    assert cli(["explain", "--model", str(run), "--data", str(data), "--split", "test", "--n", "4", "--out", str(out)]) == 0
    for name in ("saliency.png", "gallery_correct.png", "gallery_wrong.png", "gallery_confused.png", "galleries.csv"):
        assert (out / name).is_file(), name
    grid = cv2.imread(str(out / "saliency.png"))
    assert grid is not None and grid.std() > 10

    files = sorted((FER_ROOT / "test" / "angry").glob("PrivateTest_*.jpg"))[:2]
    out2 = tmp_path / "files"
    assert cli(["explain", "--model", str(run), "--images", *map(str, files), "--out", str(out2)]) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["saliency.png"]  # image files only: no galleries

    capsys.readouterr()
    assert cli(["explain", "--model", str(run), "--images", str(tmp_path / "missing.jpg"), "--out", str(out2)]) == 1
    assert "missing.jpg: no such file" in capsys.readouterr().err


def test_explain_names_the_sample_it_drew_and_warns_of_classes_never_predicted(trained, tmp_path, caplog):
    """--limit scores a sample: the galleries say which one (and its accuracy), so no report mixes it up with the split."""
    import json

    from ferkit.metrics import classification_metrics, never_predicted

    run, data = trained
    out = tmp_path / "ex"
    with caplog.at_level(logging.WARNING):
        assert cli(["explain", "--model", str(run), "--data", str(data), "--split", "all", "--limit", "100", "--n", "2",
                    "--out", str(out)]) == 0
    meta = json.loads((out / "galleries.json").read_text())
    # 20 per class per split: 140 Training + 140 PublicTest + 140 PrivateTest images
    assert meta["subset"] == "100 of 420 images of every split (Training + PublicTest + PrivateTest) (stratified sample, seed 0)"
    assert (meta["n"], meta["total"], meta["seed"], meta["split"]) == (100, 420, 0, "all")
    sp = predict_split(run, data, "all", limit=100, seed=0)
    labels, probs = sp.part.labels, sp.probs["none"]
    assert meta["accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    missing = never_predicted(classification_metrics(labels, probs, sp.pre.label_names))
    assert meta["never_predicted"] == missing
    assert missing and f"the model never predicts {', '.join(missing)}" in caplog.text  # a 3-epoch LeNet collapses
    with open(out / "galleries.csv", newline="") as fh:
        assert {r["source"] for r in csv.DictReader(fh)} <= set(sp.part.sources.tolist())  # drawn from that sample
