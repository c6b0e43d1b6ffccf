"""Calibrated confidence (issue 27): ECE/Brier/NLL in eval, temperature fitting stored in checkpoints and ONNX
metadata, the "uncertain" label, face quality, the cross-dataset table and the file-name label reader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import PHOTOS, SHARED, make_fer_slice

JAFFE = SHARED / "data" / "jaffe-dev"


def ferkit(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferkit.app.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


# ------------------------------------------------------------------ metrics (no data)


@pytest.mark.unit
def test_calibration_metrics_by_hand():
    # 4 answers: conf 0.9 right, 0.9 wrong, 0.6 right, and one face not found (zeros): ECE by hand
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.0, 0.0]])
    y = np.array([0, 1, 1, 0])
    from ferkit.metrics import accuracy_of_most_confident, calibration_metrics, coverage_curve

    m = calibration_metrics(y, p, bins=10)
    # bin 0.9: conf 0.9, acc 0.5 (2 samples); bin 0.6: conf 0.6, acc 1 (1); bin 0: conf 0, acc 0 (1)
    assert m["ece"] == pytest.approx((2 * 0.4 + 1 * 0.4 + 0) / 4)
    assert m["nll_n"] == 3 and m["nll"] == pytest.approx(-(np.log(0.9) + np.log(0.1) + np.log(0.6)) / 3)
    assert m["brier"] == pytest.approx((0.02 + 1.62 + 0.32 + 1.0) / 4)
    assert m["reliability"]["count"][9] == 2 and m["reliability"]["count"][0] == 1
    cov = {r["threshold"]: r for r in coverage_curve(y, p, [0.0, 0.7])}
    assert cov[0.0]["coverage"] == 1.0 and cov[0.0]["accuracy"] == 0.5
    assert cov[0.7]["n"] == 2 and cov[0.7]["accuracy"] == 0.5
    assert accuracy_of_most_confident(y, p, 0.5) == 0.5


@pytest.mark.unit
def test_fit_temperature_recovers_a_known_temperature():
    from ferkit.metrics import calibration_metrics, fit_temperature, rescale_probs

    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 7)) * 3
    truth = np.exp(z / 2.5) / np.exp(z / 2.5).sum(1, keepdims=True)  # the labels follow softmax(z / 2.5)
    y = np.array([rng.choice(7, p=r) for r in truth])
    t = fit_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.1)
    raw = np.exp(z - z.max(1, keepdims=True))
    raw /= raw.sum(1, keepdims=True)
    fixed = rescale_probs(raw, t)
    assert (fixed.argmax(1) == raw.argmax(1)).all()  # the top class never changes
    assert calibration_metrics(y, fixed)["ece"] < 0.3 * calibration_metrics(y, raw)["ece"]


@pytest.mark.unit
def test_preprocess_temperature_roundtrip_and_range():
    from ferkit.engine.preprocess import Preprocess

    pre = Preprocess(label_names=("a", "b"), temperature=2.0, crop_geometry={"yunet": {"margin": 0.0, "temperature": 1.5}})
    again = Preprocess.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again.temperature == 2.0 and again.temperature_for("yunet") == 1.5 and again.temperature_for("haar") == 2.0
    p = again.probs(np.array([[2.0, 0.0]], np.float32))
    assert p[0, 0] == pytest.approx(1 / (1 + np.exp(-1.0)), rel=1e-5)  # softmax(logits / 2)
    with pytest.raises(ValueError, match="temperature"):
        Preprocess(temperature=0.0)


@pytest.mark.unit
def test_uncertain_label_rule():
    from ferkit.infer.results import UNCERTAIN, Face, label_for

    probs = {"happy": 0.45, "sad": 0.35, "neutral": 0.2}
    assert label_for(probs, 0.5) == UNCERTAIN and label_for(probs, 0.4) == "happy"
    face = Face((0, 0, 10, 10), 0.9, UNCERTAIN, probs)
    assert face.confidence == 0.45 and face.expression == "happy"


# ------------------------------------------------------------------ real data


def test_calibrate_lowers_ece_where_the_model_is_over_confident(tmp_path):
    """The FER+ model read against FER2013's labels says ~80 % and is right ~60 % of the time: fitting its
    temperature on a real PublicTest slice lowers ECE there, keeps every answer, and the file carries T."""
    data = make_fer_slice(tmp_path / "fer", 40)
    out = tmp_path / "ferplus_cal.pt"
    r = ferkit("calibrate", "--model", "ferplus", "--data", str(data), "--fit-split", "val", "--out", str(out), "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "temperature" in r.stdout and out.is_file()
    import torch

    ckpt = torch.load(out, weights_only=True)
    t = ckpt["preprocess"]["temperature"]
    assert t > 1.3  # over-confident: softened
    assert ckpt["calibration"]["crops"]["ece_after"] < ckpt["calibration"]["crops"]["ece_before"]
    from ferkit.engine.evaluate import evaluate

    before = evaluate("ferplus", data=data, split="val", device="cpu")
    after = evaluate(str(out), data=data, split="val", device="cpu")
    assert after["calibration"]["ece"] < before["calibration"]["ece"]
    assert after["accuracy"] == before["accuracy"]  # temperature never changes the argmax
    assert after["temperature"] == pytest.approx(t)
    # refuses to overwrite
    again = ferkit("calibrate", "--model", "ferplus", "--data", str(data), "--out", str(out))
    assert again.returncode != 0 and "already exists" in again.stderr


def test_temperature_travels_into_onnx_and_every_backend_applies_it(tmp_path):
    from ferkit.engine.checkpoint import export_weights, load_checkpoint
    from ferkit.engine.export import export_onnx
    from ferkit.infer.recognizer import Recognizer

    ckpt = load_checkpoint("default")
    ckpt["preprocess"] = {**ckpt["preprocess"], "temperature": 3.0}
    export_weights(ckpt, tmp_path / "hot.pt")
    export_onnx(tmp_path / "hot.pt", tmp_path / "hot.onnx")
    photo = cv2.imread(str(PHOTOS / "two_people.jpg"))
    base = Recognizer("default", backend="torch", device="cpu", detector="yunet")
    torch_t = Recognizer(str(tmp_path / "hot.pt"), backend="torch", device="cpu", detector="yunet")
    onnx_t = Recognizer(str(tmp_path / "hot.onnx"), device="cpu", detector="yunet")
    crops = [cv2.resize(photo[20:230, 230:390], (100, 100))]
    p0, p1, p2 = base.classify_crops(crops), torch_t.classify_crops(crops), onnx_t.classify_crops(crops)
    assert onnx_t.preprocess.temperature == 3.0
    np.testing.assert_allclose(p1, p2, atol=2e-3)  # ONNX Runtime applies the metadata's temperature
    assert p1.max() < p0.max() and p1.argmax() == p0.argmax()  # softer, same answer


def test_uncertain_in_cli_output_and_low_quality_on_a_blurred_photo(tmp_path):
    """--min-confidence labels low-confidence faces 'uncertain' (probabilities kept); a heavily blurred copy of a
    real photo is flagged low_quality, the sharp original is not."""
    sharp = cv2.imread(str(PHOTOS / "two_people.jpg"))
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "sharp.jpg"), sharp)
    cv2.imwrite(str(src / "blurred.jpg"), cv2.GaussianBlur(sharp, (0, 0), 6))
    r = ferkit("predict", str(src), "--out", str(tmp_path / "out"), "--min-confidence", "0.99", "--threads", "1")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert recs and all(x["label"] == "uncertain" for x in recs)  # no face of these is 99 % sure
    assert all(abs(sum(x["probs"].values()) - 1) < 1e-3 for x in recs)  # the probabilities are still written
    by = {}
    for x in recs:
        by.setdefault(x["source"].rsplit("/", 1)[-1], []).append(x)
    assert by["sharp.jpg"] and not any(x["low_quality"] for x in by["sharp.jpg"])
    assert by["blurred.jpg"] and all(x["low_quality"] for x in by["blurred.jpg"])
    assert all(x["quality"]["blur"] < 50 for x in by["blurred.jpg"])
    r = ferkit("predict", str(src / "sharp.jpg"), "--out", str(tmp_path / "out0"), "--threads", "1")
    recs0 = [json.loads(line) for line in (tmp_path / "out0" / "results.jsonl").read_text().splitlines()]
    assert "uncertain" not in {x["label"] for x in recs0}  # without the option every face is answered


def test_uncertain_in_the_api(tmp_path):
    from fastapi.testclient import TestClient

    from ferkit.app.serve.app import create_app
    from ferkit.infer.recognizer import RecognizerSettings

    app = create_app(recognizer=RecognizerSettings(min_confidence=0.99, detector="yunet", backend="torch", device="cpu",
                                                threads=1), work_dir=tmp_path)
    with TestClient(app) as client:
        with open(PHOTOS / "two_people.jpg", "rb") as fh:
            r = client.post("/v1/predict", files={"file": ("two_people.jpg", fh, "image/jpeg")})
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert faces and all(f["label"] == "uncertain" and f["quality"] is not None for f in faces)


def test_cross_dataset_table_and_label_pattern(tmp_path):
    """One table over a FER2013 slice (crops) and JAFFE-dev read flat by --label-pattern (end to end)."""
    flat = tmp_path / "jaffe_flat"
    flat.mkdir()
    for f in sorted(JAFFE.glob("val/*/*.tiff"))[::3]:  # a third of JAFFE-dev, every class, labels only in the names
        shutil.copyfile(f, flat / f.name)
    from ferkit.data.readers import load_dataset

    ds = load_dataset(flat, label_pattern=r"^[A-Z]+\.([A-Z]{2})")
    folder_of = {f.name: f.parent.name for f in JAFFE.glob("val/*/*.tiff")}
    assert len(ds) == len(list(flat.iterdir())) and len(set(ds.labels)) == 7
    assert all(ds.label_names[c] == folder_of[s] for c, s in zip(ds.labels, ds.sources))
    with pytest.raises(ValueError, match="does not match"):
        (flat / "notes.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
        load_dataset(flat, label_pattern=r"^[A-Z]+\.([A-Z]{2})", use_cache=False)
    (flat / "notes.png").unlink()

    data = make_fer_slice(tmp_path / "fer", 10)
    out = tmp_path / "eval"
    r = ferkit("eval", "--model", "default", "--data", str(data), "--photos", str(flat), "--label-pattern",
               r"^[A-Z]+\.([A-Z]{2})", "--min-confidence", "0.5", "--out", str(out), "--threads", "1")
    assert r.returncode == 0, r.stderr
    table = json.loads((out / "table.json").read_text())
    rows = {row["dataset"]: row for row in table["rows"]}
    assert set(rows) == {"fer", "jaffe_flat"}
    assert rows["jaffe_flat"]["kind"] == "photos" and rows["jaffe_flat"]["n"] == len(ds)
    assert 0.3 < rows["jaffe_flat"]["accuracy"] < 0.9 and 0 <= rows["jaffe_flat"]["ece"] < 0.5
    assert table["real_face_score"] == pytest.approx(rows["jaffe_flat"]["accuracy"])
    assert "Real-face score" in r.stdout and "answered at P 0.5" in r.stdout
    for sub in ("1-fer", "2-jaffe_flat"):
        assert (out / sub / "reliability.png").stat().st_size > 5000
        m = json.loads((out / sub / "metrics.json").read_text())
        assert {"ece", "brier", "nll", "coverage"} <= set(m["calibration"])
