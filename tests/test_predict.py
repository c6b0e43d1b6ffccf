"""``ferkit predict`` end to end through the real CLI entry point: a photo, a folder, the real clip, a face-less image."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import PHOTOS, VIDEO, YUNET, make_png_bomb

from ferkit.app.cli import main
from ferkit.engine.classify import torch_threads
from ferkit.infer.writers import read_jsonl

YUNET_ARGS = ["--detector", "yunet", "--yunet", str(YUNET), "--device", "cpu"]
RECORD_KEYS = {"source", "frame", "time_s", "track_id", "box", "score", "label", "probs"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):  # a shared 2-core machine: one thread is also the fastest for 48x48 crops
        yield


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _check_record(rec: dict, size: tuple[int, int]) -> None:
    """One results.jsonl row: every key with the right type, probabilities that sum to 1, a box inside the image."""
    assert RECORD_KEYS <= set(rec)
    assert isinstance(rec["source"], str) and isinstance(rec["frame"], int) and isinstance(rec["time_s"], float)
    assert rec["track_id"] is None or isinstance(rec["track_id"], int)
    assert isinstance(rec["box"], list) and len(rec["box"]) == 4 and all(isinstance(v, int) for v in rec["box"])
    assert isinstance(rec["score"], float) and 0 < rec["score"] <= 1
    probs = rec["probs"]
    assert set(probs) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert all(isinstance(p, float) and 0 <= p <= 1 for p in probs.values())
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
    assert rec["label"] == max(probs, key=probs.get)
    x, y, w, h = rec["box"]
    assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= size[0] and y + h <= size[1]


def test_predict_photo_writes_results_and_an_annotated_copy(tmp_path, capsys):
    photo = tmp_path / "in" / "two_people.jpg"
    photo.parent.mkdir()
    shutil.copy(PHOTOS / "two_people.jpg", photo)
    before = _md5(photo)
    out = tmp_path / "out"
    assert main(["predict", str(photo), "--out", str(out), *YUNET_ARGS]) == 0
    printed = capsys.readouterr().out
    assert "2 face(s) in 1 image(s)" in printed and f"wrote {out / 'results.jsonl'}" in printed

    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 2  # the two people of the photo
    for rec in records:
        _check_record(rec, (1126, 661))
        assert rec["source"] == str(photo) and rec["frame"] == 0 and rec["time_s"] == 0.0
        assert rec["track_id"] is None  # still images are not tracked
    annotated = out / "annotated" / "two_people.jpg"
    img, drawn = cv2.imread(str(photo)), cv2.imread(str(annotated))
    assert drawn is not None and drawn.shape == img.shape
    assert np.abs(drawn.astype(int) - img.astype(int)).mean() > 1  # boxes, labels and bars were drawn
    assert _md5(photo) == before  # the input is untouched

    # A second run into the same folder is refused (one line, no traceback) unless --overwrite.
    assert main(["predict", str(photo), "--out", str(out), *YUNET_ARGS]) == 1
    assert "earlier run" in capsys.readouterr().err
    assert main(["predict", str(photo), "--out", str(out), "--overwrite", *YUNET_ARGS]) == 0
    assert len(read_jsonl(out / "results.jsonl")) == 2

    # --min-face: faces smaller than it are not wanted (both are about 200 px), and the summary says so.
    for min_face, found in ((120, 2), (400, 0)):
        assert main(["predict", str(photo), "--out", str(out), "--overwrite", "--min-face", str(min_face), *YUNET_ARGS]) == 0
        assert len(read_jsonl(out / "results.jsonl")) == found, min_face


def test_predict_folder_recursive_keeps_relative_names_and_skips_broken_files(tmp_path, capsys, monkeypatch):
    from ferkit.app import cmd_predict

    root = tmp_path / "photos"
    names = sorted(p.name for p in PHOTOS.glob("*.jpg"))
    for folder, name in zip(("", "sub", "sub/deeper", "sub/deeper"), names):
        dest = root / folder / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTOS / name, dest)
    (root / "sub" / "broken.jpg").write_bytes(b"not an image")
    bomb = make_png_bomb(root / "sub" / "bomb.png")  # ~100 KB declaring 900 MP: skipped without being decoded
    inputs = sorted(p for p in root.rglob("*.jpg") if p.name != "broken.jpg")

    # An output folder inside the source is refused: its annotated images would be the next run's inputs.
    assert main(["predict", str(root), "--out", str(root / "results"), *YUNET_ARGS]) == 1
    err = capsys.readouterr().err
    assert "inside the source folder" in err and "Traceback" not in err and not (root / "results").exists()

    monkeypatch.setattr(cmd_predict, "PROGRESS_EVERY_S", 0.0)  # stderr is no terminal here: a progress line per image
    out = tmp_path / "results"
    assert main(["predict", str(root), "--out", str(out), *YUNET_ARGS]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "broken.jpg" in printed  # reported as skipped
    assert f"skipped {bomb}: 30000x30000 = 900,000,000 pixels, more than the limit of 100,000,000" in printed
    # No \r progress bar in a log; a progress line instead (6 files listed, 2 of them unreadable).
    assert "\r" not in captured.err and "predict: 4/6 images (67%)" in captured.err

    records = read_jsonl(out / "results.jsonl")
    assert {r["source"] for r in records} == {str(p) for p in inputs}  # every photo has faces
    for r in records:
        h, w = cv2.imread(r["source"]).shape[:2]
        _check_record(r, (w, h))
    # One line per image, named relative to the folder: its faces from left to right, and its time.
    for p in inputs:
        faces = sorted((r for r in records if r["source"] == str(p)), key=lambda r: r["box"][0])
        shown = ", ".join(f"{r['label']} {100 * r['probs'][r['label']]:.0f}%" for r in faces)
        line = f"{p.relative_to(root).as_posix()}: {len(faces)} faces ({shown}) "
        assert re.search(rf"^{re.escape(line)}\d+ ms$", printed, re.M), (line, printed)
    written = sorted(p.relative_to(out / "annotated") for p in (out / "annotated").rglob("*.jpg"))
    assert written == sorted(p.relative_to(root) for p in inputs)
    # An earlier run's output kept inside the source folder is not read back as input.
    shutil.copytree(out, root / "earlier")
    assert main(["predict", str(root), "--out", str(tmp_path / "again"), *YUNET_ARGS]) == 0
    assert {r["source"] for r in read_jsonl(tmp_path / "again" / "results.jsonl")} == {str(p) for p in inputs}


def test_predict_without_out_numbers_its_folders_and_pipes_json_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = PHOTOS / "two_people.jpg"
    # On a terminal: lines for people on stdout, outputs in the first free runs/predict/N, never overwritten.
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    for n in (1, 2):
        assert main(["predict", str(photo), *YUNET_ARGS]) == 0
        printed = capsys.readouterr().out
        out = tmp_path / "runs" / "predict" / str(n)
        records = sorted(read_jsonl(out / "results.jsonl"), key=lambda r: r["box"][0])
        shown = ", ".join(f"{r['label']} {100 * r['probs'][r['label']]:.0f}%" for r in records)
        assert re.search(rf"^two_people\.jpg: 2 faces \({re.escape(shown)}\) \d+ ms$", printed, re.M), printed
        assert printed.rstrip().endswith(f"results saved to {Path('runs') / 'predict' / str(n)}")
    assert sorted(p.name for p in (tmp_path / "runs" / "predict").iterdir()) == ["1", "2"]

    # Piped (stdout not a terminal): stdout carries results.jsonl's records, the lines for people go to stderr.
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(photo), *YUNET_ARGS]) == 0
    captured = capsys.readouterr()
    piped = [json.loads(line) for line in captured.out.splitlines()]
    assert piped == read_jsonl(tmp_path / "runs" / "predict" / "3" / "results.jsonl") and len(piped) == 2
    assert "two_people.jpg: 2 faces (" in captured.err and "results saved to runs/predict/3" in captured.err


def test_predict_video_writes_tracks_annotated_video_and_timeline(tmp_path, capsys):
    out = tmp_path / "video_out"
    args = ["predict", str(VIDEO), "--out", str(out), "--max-frames", "60", "--detect-every", "2", *YUNET_ARGS]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "in 60 frame(s)" in printed and "annotated.mp4" in printed and "timeline.png" in printed

    records = read_jsonl(out / "results.jsonl")
    assert records and {r["frame"] for r in records} <= set(range(60))
    for r in records:
        _check_record(r, (640, 360))
        assert isinstance(r["track_id"], int)
        assert r["time_s"] == pytest.approx(r["frame"] / 29.97, abs=2e-3)
    # One summary line per track: frames seen, time span, most frequent label and its share, mean confidence.
    for tid in {r["track_id"] for r in records}:
        mine = [r for r in records if r["track_id"] == tid]
        labels = Counter(r["label"] for r in mine)
        top = labels.most_common(1)[0][1]
        conf = sum(r["probs"][r["label"]] for r in mine) / len(mine)
        m = re.search(rf"^  track {tid}: {len(mine)} frames? \(([\d.]+)-([\d.]+) s\), mostly (\w+) "
                      rf"\({100 * top / len(mine):.0f}%\), mean confidence {conf:.2f}$", printed, re.M)
        assert m and labels[m.group(3)] == top, (tid, printed)
        assert float(m.group(1)) == pytest.approx(min(r["time_s"] for r in mine), abs=0.06)
    # The two people of the first shot keep one id each over frames 0-19.
    first_shot = {r["track_id"] for r in records if r["frame"] < 20}
    assert len({r["track_id"] for r in records if r["frame"] == 0}) == 2 and len(first_shot) <= 3

    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (360, 640, 3)
        n += 1
    assert n == 60 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(29.97, abs=0.01)
    cap.release()

    with open(out / "timeline.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 60 and [int(r["frame"]) for r in rows] == list(range(60))
    for r in rows:
        if int(r["faces"]):
            assert sum(float(r[k]) for k in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")) \
                == pytest.approx(1.0, abs=1e-3)
    png = cv2.imread(str(out / "timeline.png"))
    assert png is not None and png.shape[0] > 100


def test_image_without_faces_gives_no_records_and_no_error(tmp_path, capsys):
    sky = tmp_path / "no_face.png"
    cv2.imwrite(str(sky), cv2.imread(str(PHOTOS / "test_image.jpg"))[:250, :1000])  # sky and roofs of a real photo
    out = tmp_path / "out"
    # --show on a machine without a display: a notice, not a crash.
    assert main(["predict", str(sky), "--out", str(out), "--show", *YUNET_ARGS]) == 0
    captured = capsys.readouterr()
    assert "0 face(s) in 1 image(s)" in captured.out and "--show" in captured.err
    assert (out / "results.jsonl").read_text() == ""
    assert (out / "annotated" / "no_face.jpg").is_file()


@pytest.mark.unit  # no data from ../shared
def test_bad_sources_are_one_line_errors(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 1
    assert "missing.mp4" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "no images found" in capsys.readouterr().err
    assert main(["predict", "96", "--out", str(tmp_path / "o")]) == 1
    assert "no camera at index 96" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written for a source that cannot be read


def test_refused_images_and_models_are_one_line_errors_that_say_why(tmp_path, capsys, monkeypatch):
    photo = PHOTOS / "two_people.jpg"  # 1126x661 = 744,286 pixels
    out = tmp_path / "out"

    def refused(args: list[str], *needles: str) -> None:
        assert main(["predict", *args, "--out", str(out), *YUNET_ARGS]) == 1, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        for needle in needles:
            assert needle in err, (needle, err)
        assert not out.exists()

    # A zoo architecture is not a trained model: say so, and what --model accepts.
    refused([str(photo), "--model", "resnet18"], "'resnet18' names an architecture of the model zoo, which is untrained",
            "ferkit train model=resnet18", "'default'", "checkpoint file", "run folder", ".onnx")
    # One shared pixel limit, checked in the header before decoding: $FERKIT_MAX_PIXELS or --max-pixels lower it.
    monkeypatch.setenv("FERKIT_MAX_PIXELS", "500000")
    refused([str(photo)], f"{photo}: 1126x661 = 744,286 pixels", "limit of 500,000")
    monkeypatch.delenv("FERKIT_MAX_PIXELS")
    refused([str(photo), "--max-pixels", "500000"], "1126x661 = 744,286 pixels", "limit of 500,000")
    # A decompression bomb is refused by the default limit without being decoded (that would take ~3 GB).
    bomb = make_png_bomb(tmp_path / "bomb.png")
    refused([str(bomb)], f"{bomb}: 30000x30000 = 900,000,000 pixels", "limit of 100,000,000")


def test_overlay_scales_with_the_image_and_leaves_the_input_untouched():
    from dataclasses import replace

    from ferkit.infer.recognizer import Recognizer
    from ferkit.infer.render import draw_faces

    big = cv2.imread(str(PHOTOS / "test_image.jpg"))  # 2048x1536
    faces = Recognizer(detector="yunet", yunet_path=YUNET, device="cpu")(big)
    assert len(faces) >= 5
    small = cv2.resize(big, (640, 480), interpolation=cv2.INTER_AREA)
    k = 640 / 2048
    small_faces = [replace(f, box=tuple(round(v * k) for v in f.box)) for f in faces]
    changed = []
    for img, fs in ((big, faces), (small, small_faces)):
        before = img.copy()
        drawn = draw_faces(img, fs)
        assert np.array_equal(img, before) and drawn is not img  # a copy is drawn on
        changed.append(np.any(drawn != img, axis=2).mean())
    # Boxes, tags and bars cover about the same share of the picture at both sizes (fonts scale with the image).
    assert 0.04 < changed[0] < 0.5 and 0.5 < changed[1] / changed[0] < 2.0, changed


def test_readme_main_command_uses_the_shipped_yunet_on_a_fresh_machine(tmp_path):
    """The README's first command in a clean environment: no $FERKIT_YUNET, an empty cache, no flags."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("FERKIT_")}
    env["FERKIT_CACHE"] = str(tmp_path / "empty_cache")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "ferkit.app.cli", "predict", str(PHOTOS / "two_people.jpg"), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["detector"] == "yunet" and summary["faces"] == 2
    assert "Haar" not in proc.stderr  # no fallback notice
    assert not (tmp_path / "empty_cache" / "models").exists()  # nothing downloaded
