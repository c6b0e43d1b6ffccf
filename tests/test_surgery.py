"""Model surgery with ferkit's own commands (issue 26): the crop geometry chosen and stored by ``ferkit calibrate``,
weights interpolated and souped by ``ferkit export --interpolate``."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SHARED

SFEW = SHARED / "data" / "sfew-dev"


def ferkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferkit.app.cli", *args], check=False, capture_output=True, text=True, timeout=600)


def sfew_slice(dest, per_class: int = 3):
    """The first ``per_class`` real SFEW-dev photos of each class, in its layout (val/<class>/*.png)."""
    for cdir in sorted((SFEW / "val").iterdir()):
        for f in sorted(cdir.iterdir())[:per_class]:
            (dest / "val" / cdir.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest / "val" / cdir.name / f.name)
    return dest


def test_crop_search_stores_the_best_geometry_then_fits_the_temperature_on_it(tmp_path):
    """One call chooses YuNet's crop on real film photos, then fits YuNet's temperature on the new crop; the new
    file holds the grid's best geometry (checked by scoring the grid again), the input stays untouched, and the
    Recognizer crops with it."""
    from ferkit.engine.checkpoint import DEFAULT_MODEL
    from ferkit.engine.preprocess import CropGeometry
    from ferkit.infer.crop_search import load_scenes, score_geometry
    from ferkit.infer.recognizer import Recognizer

    photos = sfew_slice(tmp_path / "sfew")
    out = tmp_path / "yunet.pt"
    shipped = hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    r = ferkit("calibrate", "--model", "default", "--detector", "yunet", "--crop-photos", str(photos),
               "--margins=-0.05,0.2", "--offsets=0,0.1", "--align", "on", "--photos", str(photos),
               "--out", str(out), "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "yunet crop on sfew val (4 geometries)" in r.stdout and "temperature" in r.stdout
    assert hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest() == shipped  # the input is never rewritten

    ckpt = torch.load(out, weights_only=True)
    stored = ckpt["preprocess"]["crop_geometry"]["yunet"]
    before = torch.load(DEFAULT_MODEL, weights_only=True)["preprocess"]
    assert ckpt["preprocess"]["crop_geometry"]["haar"] == before["crop_geometry"]["haar"]  # other detectors kept
    assert stored["temperature"] != before["crop_geometry"]["yunet"]["temperature"]  # refitted after the crop
    assert ckpt["state_dict"]["head.1.weight"].dtype == torch.float16  # the float16 file stays float16
    assert {"yunet crop", "yunet"} <= set(ckpt["calibration"])

    # independently: score the same grid on the same photos; the stored geometry is the first best
    rec = Recognizer("default", detector="yunet", device="cpu", backend="torch", threads=1)
    scenes = load_scenes(rec, photos, "photos")
    grid = [CropGeometry(m, o, True) for m in (-0.05, 0.2) for o in (0.0, 0.1)]
    scores = [score_geometry(rec, scenes, g)["accuracy"] for g in grid]
    best = grid[int(np.argmax(scores))]
    assert (stored["margin"], stored["offset_y"], stored["align"]) == (best.margin, best.offset_y, best.align)
    assert ckpt["calibration"]["yunet crop"]["best"]["score"] == pytest.approx(max(scores))
    assert max(scores) > min(scores)  # the grid is not flat on these photos: the choice means something

    deployed = Recognizer(str(out), detector="yunet", device="cpu", backend="torch")
    assert deployed.crop_geometry == best
    assert deployed.preprocess.temperature_for("yunet") == pytest.approx(stored["temperature"])

    again = ferkit("calibrate", "--model", str(out), "--detector", "yunet", "--crop-photos", str(photos),
                   "--out", str(out), "--force")
    assert again.returncode != 0 and "is the input model" in again.stderr


def _noisy_copy(src, dest, seed: int = 0):
    """The shipped model with seeded noise on every float weight: a second model of the same architecture."""
    from ferkit.engine.checkpoint import export_weights, load_checkpoint

    ck = load_checkpoint(src)
    g = torch.Generator().manual_seed(seed)
    ck["state_dict"] = {k: v.float() + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                        for k, v in ck["state_dict"].items()}
    export_weights(ck, dest)
    return load_checkpoint(dest)


def test_interpolate_endpoints_mean_and_soup(tmp_path):
    from ferkit.engine.checkpoint import interpolate_checkpoints, load_checkpoint, soup_checkpoints

    a = load_checkpoint("default")
    b = _noisy_copy("default", tmp_path / "b.pt")
    c = _noisy_copy("default", tmp_path / "c.pt", seed=1)
    sa, sb, sc = a["state_dict"], b["state_dict"], c["state_dict"]
    zero, one = interpolate_checkpoints(a, b, 0.0)["state_dict"], interpolate_checkpoints(a, b, 1.0)["state_dict"]
    for k, v in sa.items():
        if v.is_floating_point():
            assert torch.equal(zero[k], v.float()) and torch.equal(one[k], sb[k].float())
    soup = soup_checkpoints([a, b, c])
    k = "head.1.weight"
    torch.testing.assert_close(soup["state_dict"][k], (sa[k].float() + sb[k] + sc[k]) / 3)
    assert soup["interpolated"]["soup"][1].endswith("b.pt")
    with pytest.raises(ValueError, match="alpha must be in"):
        interpolate_checkpoints(a, b, 1.5)


def test_export_interpolate_command(tmp_path):
    """``ferkit export --interpolate A,B --alpha 0.5`` writes the mean, which loads and runs; models of other
    architectures or classes are refused in one line; an existing --out is refused."""
    from ferkit.engine.checkpoint import load_checkpoint, load_model

    b = _noisy_copy("default", tmp_path / "b.pt")
    out = tmp_path / "mid.pt"
    r = ferkit("export", "--interpolate", f"default,{tmp_path / 'b.pt'}", "--alpha", "0.5", "--out", str(out))
    assert r.returncode == 0, r.stderr
    mid, a = load_checkpoint(out), load_checkpoint("default")
    for k, v in a["state_dict"].items():
        if v.is_floating_point():
            torch.testing.assert_close(mid["state_dict"][k], (v.float() + b["state_dict"][k]) / 2)
    assert mid["interpolated"]["alpha"] == 0.5
    model, pre = load_model(out)
    assert model(torch.zeros(1, 1, pre.input_size, pre.input_size)).shape == (1, len(pre.label_names))

    bad = ferkit("export", "--interpolate", "default,ferplus", "--alpha", "0.5", "--out", str(tmp_path / "bad.pt"))
    assert bad.returncode != 0 and "cannot average the weights of" in bad.stderr
    assert not (tmp_path / "bad.pt").exists()
    exists = ferkit("export", "--interpolate", f"default,{tmp_path / 'b.pt'}", "--out", str(out))
    assert exists.returncode != 0 and "already exists" in exists.stderr

    # A float32 checkpoint (the interpolated one) stored as float16 with --format checkpoint --half: the
    # model card's stage-3 step, with a ferkit command.
    half = tmp_path / "mid_half.pt"
    r = ferkit("export", "--model", str(out), "--format", "checkpoint", "--half", "--out", str(half))
    assert r.returncode == 0, r.stderr
    small = load_checkpoint(half)
    for k, v in mid["state_dict"].items():
        if v.is_floating_point():
            assert v.dtype == torch.float32 and small["state_dict"][k].dtype == torch.float16
            torch.testing.assert_close(small["state_dict"][k].float(), v, atol=2e-3, rtol=1e-3)
    wrong = ferkit("export", "--model", str(out), "--format", "onnx", "--half", "--out", str(tmp_path / "m.onnx"))
    assert wrong.returncode != 0 and "--half with --interpolate or --format checkpoint" in wrong.stderr
