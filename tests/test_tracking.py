"""Tracking and smoothing: stable ids on the real clip, fewer label flips when smoothed, detect-every-N."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import VIDEO, YUNET

from ferkit.infer.pipeline import predict_stream
from ferkit.infer.results import Face
from ferkit.infer.sources import open_source
from ferkit.infer.tracking import SceneCutDetector, Tracker, iou, shift_boxes

N_FRAMES = 90  # the clip's first 3 seconds: a two-person shot (frames 0-19), then a cut to a panning audience shot
LABELS = ("angry", "happy", "neutral")


def _face(box, probs=(0.2, 0.5, 0.3)) -> Face:
    p = dict(zip(LABELS, probs))
    return Face(box=box, score=0.9, label=max(p, key=p.get), probs=p)


def _centre(box):
    return np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])


@pytest.fixture(scope="module")
def rec():
    from ferkit.infer.recognizer import Recognizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared; one thread is also the fastest here for 48x48 crops
    yield Recognizer(detector="yunet", yunet_path=YUNET, device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def raw_faces(rec) -> list[list[Face]]:
    """Untracked, unsmoothed faces of the clip's first frames (YuNet + the shipped model, detection on every frame)."""
    return [r.faces for r in predict_stream(VIDEO, rec, track=False, max_frames=N_FRAMES, keep_images=False)]


def _track(raw: list[list[Face]], smoothing: float | None) -> list[list[Face]]:
    tracker = Tracker(smoothing=smoothing, max_age=15)
    return [tracker.update(faces) for faces in raw]


def _tracks(tracked: list[list[Face]]) -> dict[int, list[tuple[int, Face]]]:
    out: dict[int, list[tuple[int, Face]]] = {}
    for t, faces in enumerate(tracked):
        for f in faces:
            out.setdefault(f.track_id, []).append((t, f))
    return out


@pytest.mark.unit  # no data from ../shared
def test_tracker_follows_moving_faces_and_drops_lost_ones():
    tr = Tracker(max_age=2, smoothing=None)
    a = tr.update([_face((100, 100, 50, 60)), _face((300, 100, 50, 60))])
    ids = [f.track_id for f in a]
    assert len(set(ids)) == 2
    # Both move; the first one fast (no overlap left with its last box, but close in face sizes).
    b = tr.update([_face((300 + 8, 104, 50, 60)), _face((100 + 35, 100, 50, 60))])
    assert [f.track_id for f in b] == [ids[1], ids[0]]
    # The first face disappears for 2 frames (max_age) and comes back: same id; a new face gets a new id.
    tr.update([_face((316, 108, 50, 60))])
    tr.update([_face((324, 112, 50, 60))])
    c = tr.update([_face((150, 100, 50, 60)), _face((332, 116, 50, 60)), _face((500, 300, 40, 40))])
    assert c[0].track_id == ids[0] and c[1].track_id == ids[1] and c[2].track_id not in ids
    # Gone for longer than max_age: the track is dropped, a face there later starts a new one.
    for _ in range(3):
        tr.update([])
    assert tr.update([_face((150, 100, 50, 60))])[0].track_id not in ids


@pytest.mark.unit  # no data from ../shared
def test_smoothing_is_an_ema_of_probabilities_and_can_be_switched_off():
    probs = [(0.1, 0.8, 0.1), (0.1, 0.1, 0.8), (0.1, 0.1, 0.8)]
    smooth, raw = Tracker(smoothing=0.6), Tracker(smoothing=None)
    s = [smooth.update([_face((10, 10, 40, 40), p)])[0] for p in probs]
    r = [raw.update([_face((10, 10, 40, 40), p)])[0] for p in probs]
    assert s[1].probs["happy"] == pytest.approx(0.6 * 0.8 + 0.4 * 0.1)
    assert s[1].label == "happy" and s[2].label == "neutral"  # the label follows the smoothed argmax, one frame later
    assert [f.label for f in r] == ["happy", "neutral", "neutral"]
    assert r[1].probs == dict(zip(LABELS, probs[1]))
    assert sum(s[2].probs.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="smoothing"):
        Tracker(smoothing=1.5)


def test_track_ids_stay_stable_while_faces_stay_in_view(raw_faces):
    tracked = _track(raw_faces, smoothing=0.6)
    # A face that is still there in the next frame (its boxes overlap) keeps its id.
    kept = changed = 0
    for prev, cur in zip(tracked, tracked[1:]):
        for f in cur:
            same = [p for p in prev if iou(p.box, f.box) > 0.5]
            if same:
                kept += f.track_id == same[0].track_id
                changed += f.track_id != same[0].track_id
    assert kept > 150 and changed == 0
    # The two people of the first shot (frames 0-19) keep their ids through the whole shot.
    first = {f.track_id for f in tracked[0]}
    assert len(first) == 2
    assert all(first <= {f.track_id for f in faces} for faces in tracked[:20])
    # Ids are few: far fewer than detections, a small multiple of the faces in view at once.
    tracks = _tracks(tracked)
    n_faces = sum(len(f) for f in tracked)
    max_in_view = max(len(f) for f in tracked)
    assert len(tracks) <= 3 * max_in_view and n_faces > 5 * len(tracks)
    # Most detections belong to long tracks (>= 10 frames); short ones are blurry audience faces seen briefly.
    in_long = sum(len(v) for v in tracks.values() if len(v) >= 10)
    assert in_long >= 0.8 * n_faces


def test_tracked_boxes_move_smoothly(raw_faces):
    steps = []
    for items in _tracks(_track(raw_faces, smoothing=0.6)).values():
        for (t0, a), (t1, b) in zip(items, items[1:]):
            if t1 == t0 + 1:
                size = np.sqrt(a.box[2] * a.box[3])
                steps.append(np.linalg.norm(_centre(b.box) - _centre(a.box)) / size)
    steps = np.array(steps)
    assert len(steps) > 150
    # Consecutive boxes of one id move by a fraction of the face size (no jumps to another face).
    assert np.median(steps) < 0.1 and np.quantile(steps, 0.98) < 0.5


def _flips(tracked: list[list[Face]]) -> int:
    return sum(a.label != b.label for items in _tracks(tracked).values()
               for (t0, a), (t1, b) in zip(items, items[1:]) if t1 == t0 + 1)


def test_smoothing_reduces_frame_to_frame_label_flips(raw_faces):
    raw, smooth = _flips(_track(raw_faces, None)), _flips(_track(raw_faces, 0.6))
    assert raw > 0
    assert smooth < raw and smooth <= max(1, 0.75 * raw), (raw, smooth)
    # Heavier smoothing flips less still.
    assert _flips(_track(raw_faces, 0.85)) <= smooth


def test_optical_flow_carries_boxes_to_the_next_frame(rec):
    src = iter(open_source(VIDEO))
    images = [next(src).image for _ in range(50)][20:]  # the panning shot after the cut
    dets = [rec.detect(im) for im in images]
    gain, base = [], []
    for t in range(len(images) - 1):
        moved = shift_boxes(images[t], images[t + 1], dets[t])
        for d0, d1 in zip(dets[t], moved):
            target = max(dets[t + 1], key=lambda d: iou(d.box, d0.box), default=None)
            if target is None or iou(target.box, d0.box) < 0.3:
                continue
            base.append(iou(d0.box, target.box))
            gain.append(iou(d1.box, target.box))
            assert d1.box[2:] == d0.box[2:]  # translated, same size
    assert len(base) > 20
    # Flow-moved boxes overlap the next frame's detections better than the unmoved boxes (the camera pans here).
    assert np.mean(gain) > np.mean(base) + 0.01 and np.mean(gain) > 0.8, (np.mean(base), np.mean(gain))


def test_detect_every_3_gives_the_same_tracks_with_a_third_of_the_detections(rec, raw_faces, monkeypatch):
    calls = []
    detect = rec.detect
    monkeypatch.setattr(rec, "detect", lambda image: calls.append(1) or detect(image))
    every3 = [r.faces for r in predict_stream(VIDEO, rec, detect_every=3, max_frames=N_FRAMES, keep_images=False)]
    # Every third frame, with the count restarting at each shot change (frames 20 and 82), where the detector runs.
    expected = [t for t in range(N_FRAMES) if (t - max(c for c in (0, 20, 82) if c <= t)) % 3 == 0]
    assert len(every3) == N_FRAMES and len(calls) == len(expected) == 31
    every1 = _track(raw_faces, 0.6)
    long1 = [v for v in _tracks(every1).values() if len(v) >= 10]
    long3 = [v for v in _tracks(every3).values() if len(v) >= 10]
    assert abs(len(long3) - len(long1)) <= 1
    n1, n3 = sum(map(len, every1)), sum(map(len, every3))
    assert abs(n3 - n1) <= 0.15 * n1
    # Every face has an id and probabilities over the model's classes; boxes stay inside the frame.
    for faces in every3:
        for f in faces:
            assert isinstance(f.track_id, int) and set(f.probs) == set(rec.label_names)
            x, y, w, h = f.box
            assert 0 <= x and 0 <= y and x + w <= 640 and y + h <= 360


def test_scene_cuts_are_found_on_the_real_clip_and_nowhere_else():
    cut = SceneCutDetector()
    found = [f.index for f in open_source(VIDEO) if cut(f.image)]
    assert found == [20, 82, 211]  # the clip's three hard cuts, found by looking at it frame by frame


def test_track_ids_end_at_a_scene_cut(rec):
    """Frame 210 shows one person; frame 211 cuts to an audience of five. Without the cut, a face there
    inherited the person's id (seen at 210 -> 212)."""
    results = list(predict_stream(VIDEO, rec, max_frames=214, keep_images=False))
    before = {f.track_id for r in results[200:211] for f in r.faces}
    after = {f.track_id for r in results[211:214] for f in r.faces}
    assert before and len(after) >= 4
    assert not before & after
    # Ids are never reused within a video.
    assert min(after) > max(before)
    old = list(predict_stream(VIDEO, rec, max_frames=214, keep_images=False, scene_cuts=False))
    assert {f.track_id for r in old[200:211] for f in r.faces} & {f.track_id for r in old[211:214] for f in r.faces}
