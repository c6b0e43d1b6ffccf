"""Galleries score through evaluate's one split-prediction path: an exported .onnx model and FER+ votes give
galleries whose labels, predictions and accuracy are exactly those of ``ferkit eval`` on the same images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import FER_ROOT, make_fer_slice

from ferkit.app.cli import main as cli
from ferkit.data.readers import load_dataset
from ferkit.engine.classify import ModelRef
from ferkit.engine.evaluate import evaluate, predict_split
from ferkit.report.galleries import write_galleries

VOTES = FER_ROOT / "ferplus" / "fer2013new.csv"
JOIN = FER_ROOT / "ferplus" / "jpg_to_ferplus.csv"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A real FER2013 slice: 10 images per class per split (70 PrivateTest images)."""
    return make_fer_slice(tmp_path_factory.mktemp("galleries") / "fer", 10)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_as_eval(gallery_dir: Path, eval_dir: Path, result: dict) -> list[dict]:
    """Every image a gallery shows has the true class, prediction and confidence of eval's predictions.csv;
    the galleries' accuracy is eval's."""
    meta = json.loads((gallery_dir / "galleries.json").read_text())
    assert meta["n"] == result["n"] and meta["accuracy"] == pytest.approx(result["accuracy"])
    evald = {r["source"]: r for r in _rows(eval_dir / "predictions.csv")}
    shown = _rows(gallery_dir / "galleries.csv")
    assert shown
    for r in shown:
        e = evald[r["source"]]
        assert (r["true"], r["predicted"]) == (e["true"], e["pred_none"])
        assert float(r["confidence"]) == pytest.approx(float(e["confidence_none"]), abs=1e-4)
    return shown


def test_galleries_of_an_onnx_model_are_evals(data, tmp_path, capsys):
    onnx = ModelRef.resolve("default").path.with_name("default_int8.onnx")  # the shipped int8 export
    out = tmp_path / "explain"
    assert cli(["explain", "--model", str(onnx), "--data", str(data), "--split", "test", "--n", "3", "--out", str(out)]) == 0
    assert "no saliency.png" in capsys.readouterr().out  # ONNX Runtime gives no gradients
    assert sorted(p.name for p in out.iterdir()) == ["galleries.csv", "galleries.json", "gallery_confused.png",
                                                     "gallery_correct.png", "gallery_wrong.png"]
    result = evaluate(onnx, data=data, split="test", out_dir=tmp_path / "eval")
    assert result["n"] == 70 and result["architecture"].endswith("(int8)")
    _assert_as_eval(out, tmp_path / "eval", result)

    face = next((data / "test" / "happy").glob("PrivateTest_*.jpg"))
    assert cli(["explain", "--model", str(onnx), "--images", str(face), "--out", str(tmp_path / "img")]) == 1
    err = capsys.readouterr().err
    assert "default_int8.onnx: saliency needs gradients" in err and "exported from" in err


def test_galleries_against_ferplus_votes_are_evals(data, tmp_path):
    out = tmp_path / "explain"
    assert cli(["explain", "--model", "default", "--data", str(data), "--split", "test", "--ferplus", str(VOTES),
                "--join-csv", str(JOIN), "--n", "3", "--out", str(out)]) == 0
    result = evaluate("default", data=data, split="test", ferplus=VOTES, join_csv=JOIN, out_dir=tmp_path / "eval")
    shown = _assert_as_eval(out, tmp_path / "eval", result)
    assert json.loads((out / "galleries.json").read_text())["labels_from"] == f"FER+ votes (majority) of {VOTES}"

    # the true classes are the FER+ majority votes, not the FER2013 folder each image sits in
    fp = load_dataset(data, ferplus=VOTES, ferplus_mode="majority", join_csv=JOIN).subset("test")
    votes = {s: fp.label_names[y] for s, y in zip(fp.sources, fp.labels)}
    assert all(r["true"] == votes[r["source"]] for r in shown)
    sp = predict_split("default", data, "test", ferplus=VOTES, join_csv=JOIN, limit=30, seed=1)
    names = sp.pre.label_names
    assert any(names[y] != Path(s).parent.name for s, y in zip(sp.part.sources, sp.part.labels))
    assert sp.subset.startswith("30 of ") and sp.subset.endswith("(stratified sample, seed 1)")
    meta = json.loads(write_galleries(sp, tmp_path / "sample", n=2, pairs=1)["json"].read_text())
    assert (meta["n"], meta["total"], meta["seed"]) == (30, result["n"], 1)
