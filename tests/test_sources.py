"""Frame sources on real data: a photo, a nested folder, the real clip, a video written by ferkit, and bad inputs."""

from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest
from conftest import PHOTOS, VIDEO

from ferkit.infer.sources import open_source
from ferkit.infer.writers import VideoWriter

PHOTO_NAMES = sorted(p.name for p in PHOTOS.glob("*.jpg"))


def test_image_source_gives_one_bgr_frame_with_its_name():
    src = open_source(PHOTOS / "two_people.jpg")
    frames = list(src)
    assert src.kind == "image" and not src.is_video
    assert len(frames) == 1
    f = frames[0]
    assert f.image.shape == (661, 1126, 3) and f.image.dtype == np.uint8
    assert src.size == (1126, 661)
    assert f.source == str(PHOTOS / "two_people.jpg") and f.index == 0 and f.time_s == 0.0
    # BGR as OpenCV decodes it (the pipeline and detectors expect OpenCV's order).
    assert np.array_equal(f.image, cv2.imread(str(PHOTOS / "two_people.jpg")))


def test_folder_source_is_recursive_sorted_and_skips_unreadable_files(tmp_path, caplog):
    root = tmp_path / "photos"
    (root / "b" / "deeper").mkdir(parents=True)
    (root / "a").mkdir()
    shutil.copy(PHOTOS / PHOTO_NAMES[0], root / PHOTO_NAMES[0])
    shutil.copy(PHOTOS / PHOTO_NAMES[1], root / "a" / PHOTO_NAMES[1])
    shutil.copy(PHOTOS / PHOTO_NAMES[2], root / "b" / "deeper" / PHOTO_NAMES[2])
    shutil.copy(PHOTOS / PHOTO_NAMES[3], root / "b" / PHOTO_NAMES[3])
    (root / "b" / "broken.jpg").write_bytes(b"this is not a JPEG")  # unreadable: logged and skipped
    (root / "notes.txt").write_text("not an image")  # not an image extension: ignored
    out = root / "out"  # an output folder inside the source is left out
    (out / "annotated").mkdir(parents=True)
    shutil.copy(PHOTOS / PHOTO_NAMES[0], out / "annotated" / "old.jpg")

    src = open_source(root, exclude=[out])
    with caplog.at_level(logging.WARNING, logger="ferkit.infer.sources"):
        frames = list(src)
    names = [f.path.relative_to(root).as_posix() for f in frames]
    assert names == sorted(names) and len(frames) == 4
    assert set(names) == {PHOTO_NAMES[0], f"a/{PHOTO_NAMES[1]}", f"b/deeper/{PHOTO_NAMES[2]}", f"b/{PHOTO_NAMES[3]}"}
    assert [f.source for f in frames] == [str(root / n) for n in names]
    assert all(f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)
    assert [p.name for p, _ in src.skipped] == ["broken.jpg"]
    assert "broken.jpg" in caplog.text


def test_video_source_frame_count_and_timestamps_follow_fps():
    src = open_source(VIDEO)
    assert src.kind == "video" and src.is_video
    assert src.frame_count == 275 and src.size == (640, 360)
    assert src.fps == pytest.approx(29.97, abs=0.01)
    frames = [(f.index, f.time_s, f.image.shape) for f in src]
    assert len(frames) == 275
    assert [i for i, _, _ in frames] == list(range(275))
    t = np.array([s for _, s, _ in frames])
    assert t[0] == 0.0 and np.all(np.diff(t) > 0)
    np.testing.assert_allclose(t, np.arange(275) / src.fps, atol=2e-3)
    assert t[-1] == pytest.approx(274 / 29.97, abs=0.01)  # a 9-second clip
    assert all(shape == (360, 640, 3) for _, _, shape in frames)


def test_video_written_by_ferkit_reads_back_with_its_frames_and_size(tmp_path):
    real = [f.image for _, f in zip(range(25), open_source(VIDEO))]
    path = tmp_path / "written.mp4"
    with VideoWriter(path, 29.97, (640, 360)) as w:
        for img in real:
            w.write(img)
    assert w.frames == 25
    src = open_source(path)
    back = [f.image for f in src]
    assert len(back) == 25 and src.frame_count == 25 and src.size == (640, 360)
    assert src.fps == pytest.approx(29.97, abs=0.01)
    # Lossy codec, but the same pictures: small mean difference per frame.
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(real, back)) < 8


@pytest.mark.unit  # no data from ../shared
def test_missing_video_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        open_source(tmp_path / "nothere.mp4")


def test_video_with_zero_frames_is_a_clear_error(tmp_path):
    empty = tmp_path / "no_frames.mp4"
    VideoWriter(empty, 25, (64, 48)).close()  # a valid container with no frame in it
    with pytest.raises(ValueError, match="no_frames.mp4"):
        open_source(empty)
    zero = tmp_path / "zero_bytes.mp4"
    zero.write_bytes(b"")
    with pytest.raises(ValueError, match="zero_bytes.mp4.*empty"):
        open_source(zero)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(VIDEO.read_bytes()[:4000])
    with pytest.raises(ValueError, match="truncated.mp4"):
        open_source(truncated)


@pytest.mark.unit  # no data from ../shared
def test_webcam_that_is_not_there_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no camera at index 97"):
        open_source("97")
    with pytest.raises(RuntimeError, match="no camera at index 98"):
        open_source(98)


@pytest.mark.unit  # no data from ../shared
def test_stream_that_cannot_be_opened_names_the_url():
    with pytest.raises(RuntimeError, match="rtsp://127.0.0.1:9/none"):
        open_source("rtsp://127.0.0.1:9/none")


@pytest.mark.unit  # no data from ../shared
def test_empty_folder_and_folder_without_images_are_errors(tmp_path):
    with pytest.raises(ValueError, match="no images found"):
        open_source(tmp_path)
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(ValueError, match=str(tmp_path)):
        open_source(tmp_path)


@pytest.mark.unit  # no data from ../shared
def test_unreadable_single_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but truncated")
    with pytest.raises(ValueError, match="bad.png"):
        open_source(bad)
