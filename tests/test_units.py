"""Fast unit tests: config, optimizer and schedule, dataset cache, augmentation, preprocessing, metrics.

No data from ../shared is needed (``pytest -m unit`` runs these and test_layers.py in seconds).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import torch
from torch import nn

from ferkit.data import cache
from ferkit.data.augment import AugmentConfig, BatchAugment
from ferkit.data.dataset import FerData
from ferkit.engine.config import TrainConfig, load_config, parse_overrides
from ferkit.engine.optim import Schedule, build_optimizer, param_groups
from ferkit.engine.preprocess import CropGeometry, Preprocess
from ferkit.metrics import classification_metrics

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------ config


def test_config_layers_defaults_recipe_overrides_and_kwargs():
    cfg = load_config("default_fer2013", ["epochs=3", "augment.rotate=5", "model_kwargs={width: 16}"], seed=7)
    assert (cfg.epochs, cfg.seed, cfg.model, cfg.optimizer) == (3, 7, "resnet18", "adamw")  # override, kwarg, recipe
    assert cfg.augment == {"erase": 0.25, "rotate": 5}  # a dotted key merges into the recipe's dict
    assert cfg.model_kwargs == {"width": 16} and cfg.momentum == TrainConfig().momentum  # default kept
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d=text"]) == {"a": {"b": 1}, "c": [1, 2], "d": "text"}


@pytest.mark.parametrize("override, message", [
    (["scheduler=cosin"], "did you mean cosine"),
    (["optimizer=adamx"], "did you mean adam"),
    (["model=resnet19"], "resnet18"),
    (["model_kwargs={depth: 3}"], "keyword arguments"),
    (["augment.rotat=5"], "unknown augment key"),
    (["augment.pad=wrap"], "reflection"),
    (["tta=five"], "tencrop"),
    (["ema=1.5"], "ema must be in"),
    (["epochs=0"], "epochs and batch_size"),
    (["lr_rate=0.1"], "unknown config key"),
])
def test_bad_settings_fail_in_load_config_before_any_data_is_read(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("default_fer2013", override)


def test_validate_can_check_the_dataset_path(tmp_path):
    cfg = load_config(None, [f"data={tmp_path / 'nothing.csv'}"])  # load_config does not look at data
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        cfg.validate(check_data=True)


# ------------------------------------------------------------------ optimizer and schedule


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)


def test_param_groups_skip_decay_on_norms_and_biases_and_scale_the_head_lr():
    cfg = TrainConfig(lr=0.1, weight_decay=0.01, head_lr_mult=10.0)
    groups = {(g["lr"], g["weight_decay"]): sum(p.numel() for p in g["params"]) for g in param_groups(_Tiny(), cfg)}
    assert groups == {(0.1, 0.01): 36, (0.1, 0.0): 4 + 8, (1.0, 0.01): 12, (1.0, 0.0): 3}


def test_warmup_then_cosine_reaches_min_lr():
    cfg = TrainConfig(optimizer="sgd", lr=1.0, scheduler="cosine", warmup_epochs=1, epochs=3, min_lr=0.0)
    opt = build_optimizer(_Tiny(), cfg)
    sched = Schedule(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(3):
        for _ in range(10):
            lrs.append(sched.lr)
            sched.batch_end()
        sched.epoch_end(0.0)
    assert lrs[0] < 0.2 and all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # linear warm-up
    assert max(lrs) <= 1.0 + 1e-9 and lrs[-1] < 0.05  # then cosine down towards 0


# ------------------------------------------------------------------ dataset cache


def _data(n: int = 6) -> FerData:
    rng = np.random.default_rng(0)
    return FerData(images=rng.integers(0, 255, (n, 8, 8), dtype=np.uint8), labels=np.arange(n) % 2,
                   split=np.array(["train"] * n), label_names=("a", "b"), sources=np.array([f"f{i}" for i in range(n)]))


def test_cache_round_trips_and_rebuilds_on_a_changed_file_or_a_damaged_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "input.txt"
    src.write_text("v1")
    builds = []
    build = lambda: builds.append(1) or _data()  # noqa: E731
    first = cache.cached("unit", [src], {"size": 8}, build)
    again = cache.cached("unit", [src], {"size": 8}, build)
    assert len(builds) == 1 and np.array_equal(first.images, again.images) and again.label_names == ("a", "b")
    os.utime(src, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # the input changed
    cache.cached("unit", [src], {"size": 8}, build)
    assert len(builds) == 2
    cache.cached("unit", [src], {"size": 16}, build)  # other reader options: another entry
    assert len(builds) == 3
    for entry in (tmp_path / "cache" / "datasets").glob("*.npz"):
        entry.write_bytes(b"damaged")
    cache.cached("unit", [src], {"size": 8}, build)  # a damaged entry is rebuilt, never fatal
    assert len(builds) == 4


# ------------------------------------------------------------------ augmentation


def test_augmentation_is_seeded_and_keeps_shape_and_range():
    x = torch.rand(16, 1, 48, 48)
    cfg = AugmentConfig(pad=("zeros", "border", "reflection"), gamma=0.5, lowres=0.5, blur=0.5, noise=0.02, erase=0.5)
    aug = BatchAugment(cfg, 48)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == (16, 1, 48, 48) and torch.equal(a, b) and 0 <= float(a.min()) and float(a.max()) <= 1


def test_border_padding_fills_a_zoomed_out_face_with_its_edge_not_black():
    x = torch.full((1, 1, 48, 48), 0.8)
    out = {}
    for pad in ("zeros", "border", "reflection"):
        cfg = AugmentConfig(hflip=0, rotate=0, scale=(0.7, 0.7), translate=0, brightness=0, contrast=0, pad=pad)
        out[pad] = BatchAugment(cfg, 48)(x, torch.Generator().manual_seed(0))
    assert float(out["zeros"][0, 0, 0, 0]) == 0.0
    assert math.isclose(float(out["border"][0, 0, 0, 0]), 0.8, abs_tol=1e-5)
    assert math.isclose(float(out["reflection"][0, 0, 0, 0]), 0.8, abs_tol=1e-5)


def test_lowres_and_gamma_do_what_they_say():
    x = torch.rand(8, 1, 48, 48)
    plain = dict(hflip=0, rotate=0, scale=(1.0, 1.0), translate=0, brightness=0, contrast=0)
    low = BatchAugment(AugmentConfig(**plain, lowres=1.0, lowres_size=(12, 12)), 48)(x, torch.Generator().manual_seed(0))
    assert float((low[:, :, :, 1:] - low[:, :, :, :-1]).abs().mean()) < 0.5 * float((x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean())
    dark = BatchAugment(AugmentConfig(**plain, gamma=1.0), 48)(torch.full((64, 1, 48, 48), 0.5), torch.Generator().manual_seed(0))
    means = dark.mean(dim=(1, 2, 3))
    assert float(means.min()) < 0.3 and float(means.max()) > 0.7  # exponents from 1/e to e


# ------------------------------------------------------------------ preprocessing


def test_numpy_twin_equals_the_torch_path():
    pre = Preprocess(input_size=8, channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), label_names=("a",))
    batch = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(pre.to_array(batch), pre.to_tensor(batch).numpy(), rtol=0, atol=1e-5)


def _face_folder(root, shape: tuple[int, int]) -> list:
    """An image folder (train/val, two classes) of smooth RGB images of one size other than the model's."""
    from ferkit.imageio import write_image

    rng = np.random.default_rng(0)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for split in ("train", "val"):
        for cls in ("a", "b"):
            for i in range(4):
                f = rng.uniform(0.05, 0.3, 3)
                img = 127.5 + 60 * np.sin(f[0] * xx[..., None] + f[1] * yy[..., None] + np.arange(3) * f[2])
                img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)  # (h, w, 3) RGB
                paths.append(root / split / cls / f"{i}.png")
                paths[-1].parent.mkdir(parents=True, exist_ok=True)
                write_image(paths[-1], img)
    return paths


@pytest.mark.parametrize("shape", [(70, 58), (40, 36)])  # shrunk (INTER_AREA) and enlarged (INTER_LINEAR) to 48
def test_training_input_of_a_non_48px_image_is_deployment_input(tmp_path, shape):
    """A face the size of no model: training (dataset -> Trainer batch) and deployment (prepare_images + to_tensor)
    must hand the model the same numbers, colour conversion and resize included."""
    from ferkit.engine.steps import images_to_tensor, predict_probs
    from ferkit.engine.trainer import Trainer
    from ferkit.imageio import read_image

    _face_folder(tmp_path / "faces", shape)
    cfg = TrainConfig(data=str(tmp_path / "faces"), model="lenet", channels=1, augment="none", batch_size=4, epochs=1)
    t = Trainer(cfg, tmp_path / "run")
    trained = t._prepare(t.train_t.x)  # what the training step feeds the model, for every training image
    deployed = t.pre.to_tensor(t.pre.prepare_images([read_image(tmp_path / "faces" / s) for s in t.train_data.sources]))
    assert trained.shape == (8, 1, 48, 48) and torch.equal(trained, deployed)
    # evaluation scores the same input; images of another size are refused, not silently resized
    assert torch.equal(t.val_t.x, images_to_tensor(t.pre.prepare_images(
        [read_image(tmp_path / "faces" / s) for s in t.val_data.sources])))
    with pytest.raises(ValueError, match=r"expected \(N, 1, 48, 48\).*prepare_images"):
        predict_probs(t.model, images_to_tensor(np.zeros((2, *shape), np.uint8)), t.pre)


def test_one_resize_rule_shrinks_by_area_and_enlarges_linearly():
    import cv2

    from ferkit.imageio import resize_image

    img = np.random.default_rng(0).integers(0, 256, (70, 58, 3), dtype=np.uint8)
    assert np.array_equal(resize_image(img, 48), cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA))
    small = img[:40, :36]
    assert np.array_equal(resize_image(small, 48), cv2.resize(small, (48, 48), interpolation=cv2.INTER_LINEAR))
    assert resize_image(img[..., :1], (20, 30)).shape == (20, 30, 1)  # (height, width); a single channel is kept
    assert resize_image(img, (70, 58)) is img


def test_crop_geometry_per_detector_travels_through_the_dict_form():
    pre = Preprocess(label_names=("a",), crop_margin=0.1, crop_geometry={"yunet": {"margin": 0.0, "offset_y": -0.05, "align": True}})
    back = Preprocess.from_dict(pre.to_dict())
    assert back.crop_for("yunet") == CropGeometry(0.0, -0.05, True)
    assert back.crop_for("haar") == CropGeometry(0.1, 0.0, True)  # no calibrated entry: the plain margin
    old = {k: v for k, v in pre.to_dict().items() if k != "crop_geometry"}  # a checkpoint from before the field
    assert Preprocess.from_dict(old).crop_for("yunet") == CropGeometry(0.1, 0.0, True)


# ------------------------------------------------------------------ metrics


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2])
    p = np.eye(3)[[0, 1, 1, 1, 0]]
    m = classification_metrics(y, p, ("a", "b", "c"))
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["a"]["precision"] == pytest.approx(1 / 2) and m["per_class"]["b"]["recall"] == 1.0
    assert m["per_class"]["c"]["f1"] == 0.0  # never predicted
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
