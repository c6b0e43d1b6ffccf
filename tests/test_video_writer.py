"""Annotated videos that browsers play: H.264 (yuv420p, index first) with the source's sound, from ``ferkit predict``
and from :class:`VideoWriter`, checked with PyAV on a slice of the real test clip (which has AAC sound)."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import VIDEO, YUNET

from ferkit.app.cli import main
from ferkit.infer import writers
from ferkit.infer.writers import VideoWriter

av = pytest.importorskip("av")

YUNET_ARGS = ["--detector", "yunet", "--yunet", str(YUNET), "--device", "cpu"]


def clip_with_sound(path: Path, frames: int) -> Path:
    """The first ``frames`` frames of the real test clip as an H.264 MP4, with the clip's AAC sound over the same
    time copied beside it (the clip's first video frame is time 0 of the new file)."""
    with av.open(str(VIDEO)) as src, av.open(str(path), "w") as out:
        vin, ain = src.streams.video[0], src.streams.audio[0]
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        aout = out.add_stream_from_template(ain)
        t0 = vin.start_time * vin.time_base
        end = t0 + Fraction(frames) / vin.average_rate
        shift = round(t0 / ain.time_base)
        n = 0
        for pkt in src.demux(vin, ain):
            if pkt.dts is None:
                continue
            if pkt.stream.type == "video":
                for f in pkt.decode():
                    if n < frames:
                        frame = av.VideoFrame.from_ndarray(f.to_ndarray(format="bgr24"), format="bgr24")
                        frame.pts = n
                        out.mux(vout.encode(frame))
                        n += 1
            elif t0 <= pkt.pts * pkt.time_base < end:
                pkt.pts -= shift
                pkt.dts -= shift
                pkt.stream = aout
                out.mux(pkt)
        out.mux(vout.encode(None))
    return path


def probe(path: Path) -> dict:
    """What a player sees: codecs, pixel format, size, decoded frame count, durations, and the audio packets."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        info = {"codec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt,
                "size": (v.codec_context.width, v.codec_context.height), "fps": float(v.average_rate),
                "audio": a.codec_context.name if a is not None else None,
                "audio_s": float(a.duration * a.time_base) if a is not None and a.duration else 0.0}
        info["frames"] = sum(1 for _ in c.decode(video=0))
    if a is not None:
        with av.open(str(path)) as c:
            info["audio_packets"] = [bytes(p) for p in c.demux(audio=0) if p.size]
    data = path.read_bytes()
    moov, mdat = data.find(b"moov"), data.find(b"mdat")
    info["index_first"] = moov != -1 and (mdat == -1 or moov < mdat)  # the MP4 index before the media data
    return info


@pytest.fixture(scope="module")
def sound_clip(tmp_path_factory) -> Path:
    return clip_with_sound(tmp_path_factory.mktemp("clip") / "clip_with_sound.mp4", 30)


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is also the fastest for 48x48 crops
    yield
    torch.set_num_threads(threads)


def test_ferkit_predict_writes_h264_with_the_source_sound(sound_clip, tmp_path, one_thread):
    out = tmp_path / "out"
    assert main(["predict", str(sound_clip), "--out", str(out), "--detect-every", "3", *YUNET_ARGS]) == 0
    source, annotated = probe(sound_clip), probe(out / "annotated.mp4")
    assert annotated["codec"] == "h264" and annotated["pix_fmt"] == "yuv420p"  # what browsers decode
    assert annotated["frames"] == source["frames"] == 30 and annotated["size"] == source["size"] == (640, 360)
    assert annotated["fps"] == pytest.approx(source["fps"], abs=0.01)
    assert annotated["index_first"]  # "+faststart": a browser can start playing before the whole file is in
    # The sound is the source's own, copied packet for packet, over the video's length.
    assert annotated["audio"] == "aac"
    assert annotated["audio_packets"] and set(annotated["audio_packets"]) <= set(source["audio_packets"])
    assert annotated["audio_s"] == pytest.approx(30 / 29.97, abs=0.05)
    # And the pictures are the annotated frames: the boxes differ from the source.
    a, b = cv2.VideoCapture(str(sound_clip)), cv2.VideoCapture(str(out / "annotated.mp4"))
    diff = np.abs(a.read()[1].astype(int) - b.read()[1].astype(int)).mean()
    a.release(), b.release()
    assert 0.3 < diff < 20


def _frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(VIDEO))
    out = [cv2.resize(cap.read()[1], size, interpolation=cv2.INTER_AREA) for _ in range(n)]
    cap.release()
    return out


def test_sound_in_a_codec_mp4_cannot_hold_becomes_aac(tmp_path):
    """PCM sound (as in AVI or MKV files) is encoded to AAC, and cut at the video's end."""
    src = tmp_path / "pcm.mkv"
    rate = 16000
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aud = out.add_stream("pcm_s16le", rate=rate)
        aud.layout = "mono"
        for i, img in enumerate(_frames(50, (64, 48))):
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts = i
            out.mux(vs.encode(f))
        tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)).astype(np.int16)  # 2 s of A4
        step = rate // 25  # one chunk of sound per video frame, as AVI files interleave it
        for start in range(0, len(tone), step):
            af = av.AudioFrame.from_ndarray(tone[None, start:start + step], format="s16", layout="mono")
            af.sample_rate, af.pts = rate, start
            out.mux(aud.encode(af))
        out.mux(vs.encode(None))
        out.mux(aud.encode(None))
    with VideoWriter(tmp_path / "out.mp4", 25, (64, 48), audio_from=src) as w:
        for img in _frames(20, (64, 48)):
            w.write(img)
    assert w.audio == "aac"
    info = probe(tmp_path / "out.mp4")
    assert info["codec"] == "h264" and info["frames"] == 20 and info["audio"] == "aac"
    assert 0.7 < info["audio_s"] < 1.0  # 0.8 s of video; AAC frames round the end up a little


def test_odd_sizes_are_padded_to_even_and_silent_sources_stay_silent(tmp_path):
    silent = tmp_path / "silent.avi"
    cv = cv2.VideoWriter(str(silent), cv2.VideoWriter_fourcc(*"MJPG"), 25, (641, 361))
    frames = _frames(5, (641, 361))
    for img in frames:
        cv.write(img)
    cv.release()
    with VideoWriter(tmp_path / "odd.mp4", 25, (641, 361), audio_from=silent) as w:
        for img in frames:
            w.write(img)
    info = probe(tmp_path / "odd.mp4")
    assert info["size"] == (642, 362) and info["pix_fmt"] == "yuv420p" and info["frames"] == 5  # x264 needs even sides
    assert info["audio"] is None and w.audio is None


def test_without_h264_it_falls_back_to_mp4v_with_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(writers, "_h264_unavailable", lambda: "PyAV's FFmpeg has no H.264 encoder (test)")
    with caplog.at_level(logging.WARNING, logger="ferkit.infer.writers"):
        with VideoWriter(tmp_path / "old.mp4", 25, (64, 48), audio_from=VIDEO) as w:
            for img in _frames(10, (64, 48)):
                w.write(img)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "old.mp4" in warnings[0] and "may not play in web browsers" in warnings[0]
    assert w.codec == "mp4v"
    info = probe(tmp_path / "old.mp4")
    assert info["codec"] == "mpeg4" and info["frames"] == 10 and info["audio"] is None
