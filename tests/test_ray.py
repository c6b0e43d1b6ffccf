"""The ray engine (``ferkit predict --engine ray``, ``ferkit.predict_ray``) on a local 2-CPU Ray: over a real folder
of photos and FER2013 crops and the real clip, its results equal the single-process ``ferkit predict`` face for face,
and a rerun resumes (no work when all is done; only the sources taken off the done-list otherwise)."""

from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import pytest
from conftest import FER_ROOT, PHOTOS, VIDEO, YUNET

import ferkit
from ferkit.app.cli import main
from ferkit.errors import UsageError
from ferkit.infer import distributed
from ferkit.infer.writers import read_jsonl

YUNET_ARGS = ["--detector", "yunet", "--yunet", str(YUNET), "--device", "cpu", "--threads", "1"]
VIDEO_FRAMES = 120  # three shots of the clip (cuts at frames 20 and 82), a dozen tracks: enough, and half the time
PROB_TOL = 2e-5  # probabilities are rounded to 5 decimals; batching faces differently moves the 6th


def _fer_crops(n: int = 2) -> list:
    """``n`` real 48x48 FER2013 test crops per class from three classes (face-less to YuNet at that size, mostly)."""
    out = []
    for cls in ("happy", "sad", "surprise"):
        out += sorted((FER_ROOT / "test" / cls).iterdir())[:n]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The single-process outputs of a folder and the clip, and one ray run over both (a local 2-CPU Ray)."""
    ray = pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("ray")
    folder = root / "in"
    (folder / "photos").mkdir(parents=True)
    for p in sorted(PHOTOS.glob("*.jpg")):
        shutil.copy(p, folder / "photos" / p.name)
    for p in _fer_crops():
        (folder / "fer" / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / "fer" / p.parent.name / p.name)
    frames = ["--max-frames", str(VIDEO_FRAMES)]
    assert main(["predict", str(folder), "--out", str(root / "local_images"), "--no-annotate", *YUNET_ARGS]) == 0
    assert main(["predict", str(VIDEO), "--out", str(root / "local_video"), "--no-annotate", *frames, *YUNET_ARGS]) == 0

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        out = root / "ray"
        assert main(["predict", str(folder), str(VIDEO), "--out", str(out), "--engine", "ray", "--workers", "2",
                     "--batch-size", "4", *frames, *YUNET_ARGS]) == 0
        yield {"root": root, "folder": folder, "out": out, "frames": frames}
    finally:
        ray.shutdown()


def _assert_same_faces(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        for key in ("source", "frame", "time_s", "track_id", "box", "label"):
            assert g[key] == w[key], (key, g, w)
        assert g["score"] == pytest.approx(w["score"], abs=1e-4)
        assert g["probs"].keys() == w["probs"].keys()
        assert g["probs"] == pytest.approx(w["probs"], abs=PROB_TOL)
        assert (g["landmarks"] is None) == (w["landmarks"] is None)
        if w["landmarks"] is not None:
            assert np.allclose(g["landmarks"], w["landmarks"], atol=0.11)  # rounded to 0.1 px


def _split(records: list[dict]) -> tuple[list[dict], list[dict]]:
    video = [r for r in records if r["source"] == str(VIDEO)]
    return [r for r in records if r["source"] != str(VIDEO)], video


def _ray_again(runs, *extra) -> dict:
    assert main(["predict", str(runs["folder"]), str(VIDEO), "--out", str(runs["out"]), "--engine", "ray",
                 "--workers", "2", "--batch-size", "4", *runs["frames"], *YUNET_ARGS, *extra]) == 0
    return json.loads((runs["out"] / "summary.json").read_text())


def test_images_equal_the_single_process_run(runs):
    images, _ = _split(read_jsonl(runs["out"] / "results.jsonl"))
    want = read_jsonl(runs["root"] / "local_images" / "results.jsonl")
    _assert_same_faces(images, want)
    assert {r["source"] for r in want} >= {str(runs["folder"] / "photos" / p.name) for p in PHOTOS.glob("*.jpg")}
    summary = json.loads((runs["out"] / "summary.json").read_text())
    assert summary["engine"] == "ray" and summary["images"] == 4 + 6 and summary["videos"] == 1
    assert summary["processed"] == 11 and summary["done_before"] == 0 and not summary["skipped"]


def test_video_is_tracked_as_in_the_single_process_run(runs):
    _, video = _split(read_jsonl(runs["out"] / "results.jsonl"))
    want = read_jsonl(runs["root"] / "local_video" / "results.jsonl")
    _assert_same_faces(video, want)  # same frames, times, track ids, boxes, labels and probabilities
    assert len({r["track_id"] for r in video}) >= 8 and max(r["frame"] for r in video) == VIDEO_FRAMES - 1
    summary = json.loads((runs["out"] / "summary.json").read_text())
    assert summary["frames"] == 10 + VIDEO_FRAMES


def test_a_rerun_does_no_work_and_writes_the_same_file(runs):
    before = (runs["out"] / "results.jsonl").read_bytes()
    parts = sorted((runs["out"] / "ray" / "parts").iterdir())
    summary = _ray_again(runs)
    assert summary["done_before"] == 11 and summary["processed"] == 0
    assert (runs["out"] / "results.jsonl").read_bytes() == before
    assert sorted((runs["out"] / "ray" / "parts").iterdir()) == parts  # no new part: Ray was not even started


def test_a_source_taken_off_the_done_list_is_redone_alone(runs):
    done = runs["out"] / "ray" / "done.txt"
    redo = str(runs["folder"] / "photos" / "two_people.jpg")
    lines = done.read_text().splitlines()
    assert redo in lines
    done.write_text("".join(f"{line}\n" for line in lines if line != redo))
    parts = set((runs["out"] / "ray" / "parts").iterdir())
    summary = _ray_again(runs)
    assert summary["done_before"] == 10 and summary["processed"] == 1
    (new,) = set((runs["out"] / "ray" / "parts").iterdir()) - parts
    assert [json.loads(line)["source"] for line in new.read_text().splitlines()] == [redo]
    images, video = _split(read_jsonl(runs["out"] / "results.jsonl"))
    _assert_same_faces(images, read_jsonl(runs["root"] / "local_images" / "results.jsonl"))
    _assert_same_faces(video, read_jsonl(runs["root"] / "local_video" / "results.jsonl"))


def test_parquet_holds_the_same_rows(runs):
    pq = pytest.importorskip("pyarrow.parquet")
    # Through the Python API: everything is done, so this only merges the parts into Parquet.
    settings = ferkit.RecognizerSettings(detector="yunet", yunet_path=YUNET)
    summary = ferkit.predict_ray([runs["folder"], VIDEO], runs["out"], workers=2, recognizer=settings,
                                 max_frames=VIDEO_FRAMES, format="parquet")
    assert summary["processed"] == 0
    rows = pq.read_table(runs["out"] / "results.parquet").to_pylist()
    want = read_jsonl(runs["out"] / "results.jsonl")
    assert len(rows) == len(want)
    for r, w in zip(rows, want):
        assert (r["source"], r["frame"], r["track_id"], r["box"], r["label"]) == (w["source"], w["frame"], w["track_id"],
                                                                               w["box"], w["label"])
        assert r["probs"] == w["probs"]


def test_resuming_with_another_model_setting_is_refused(runs, capsys):
    assert main(["predict", str(runs["folder"]), "--out", str(runs["out"]), "--engine", "ray",
                 *YUNET_ARGS[:-2], "--detect-every", "2"]) == 1
    assert "other settings" in capsys.readouterr().err


def test_usage_errors(tmp_path, monkeypatch, capsys):
    photo = PHOTOS / "two_people.jpg"
    assert main(["predict", str(photo), str(VIDEO), "--out", str(tmp_path / "a")]) == 1
    assert "--engine ray takes several" in capsys.readouterr().err
    assert main(["predict", str(photo), "--out", str(tmp_path / "b"), "--workers", "3"]) == 1
    assert "--workers: only with --engine ray" in capsys.readouterr().err
    with pytest.raises(UsageError, match="camera or stream"):
        distributed.expand_sources(["0"])
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(UsageError, match=r'pip install -e "\.\[ray\]"'):
        distributed.import_ray()


def test_a_terminated_ray_run_leaves_no_ray_process_behind(tmp_path):
    """`ferkit predict --engine ray` stopped with SIGTERM (what `timeout`, Docker and systemd send) mid-run: the
    local Ray cluster it started (GCS server, raylet, their agents) goes with it."""
    import os
    import signal
    import subprocess
    import time

    pytest.importorskip("ray")

    def ray_pids() -> set[int]:
        out = subprocess.run(["pgrep", "-f", "ray/core/src/ray|ray::|dashboard_agent|runtime_env_agent"],
                             capture_output=True, text=True, check=False).stdout
        return {int(p) for p in out.split()} - {os.getpid()}

    src = tmp_path / "in"
    src.mkdir()
    for i in range(60):
        shutil.copyfile(PHOTOS / "two_people.jpg", src / f"p{i:02d}.jpg")
    before = ray_pids()
    proc = subprocess.Popen([sys.executable, "-m", "ferkit.app.cli", "predict", str(src), "--engine", "ray", "--workers", "1",
                             "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not (ray_pids() - before):  # the cluster is up
            assert proc.poll() is None and time.time() - t0 < 120, proc.stderr.read() if proc.poll() is not None else "slow"
            time.sleep(0.5)
        ours = ray_pids() - before
        time.sleep(3)  # mid-run
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    t0 = time.time()
    while ours & ray_pids() and time.time() - t0 < 30:
        time.sleep(0.5)
    assert not ours & ray_pids(), f"left behind: {sorted(ours & ray_pids())}"
