"""The model zoo: every registered model trains on real faces at its input size, with any class count
and channel count; fine-tuning backbones load local weights and adapt to grey input; the zoo table and
``ferkit models`` list them all."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from conftest import FER_ROOT
from torch import nn

from ferkit.app.cli import main
from ferkit.engine.classify import torch_threads
from ferkit.engine.config import TrainConfig
from ferkit.engine.optim import param_groups
from ferkit.engine.preprocess import Preprocess
from ferkit.imageio import read_image
from ferkit.models.registry import create_model, list_models, model_info
from ferkit.models.summary import count_flops, count_params, model_table

MODELS = list_models()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # These tests run beside other jobs on a 2-core machine: with a core taken, PyTorch's two OpenMP
    # threads wait on each other at every op and ResNet-152 takes 20 s instead of 1 s.
    with torch_threads(1):
        yield


def natural_chans(name: str) -> int:
    return 3 if model_info(name).family == "pretrained" else 1


def real_faces(size: int, channels: int, n: int = 2) -> torch.Tensor:
    """``n`` real FER2013 training faces (different classes) as normalised ``(n, C, size, size)`` model input."""
    classes = ("happy", "surprise", "sad", "angry")[:n]
    images = [read_image(sorted((FER_ROOT / "train" / c).glob("Training_*"))[0]) for c in classes]
    pre = Preprocess(input_size=size, channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels)
    return pre.to_tensor(pre.prepare_images(images))


def first_conv(model: nn.Module) -> nn.Conv2d:
    # Deep-Emotion's localisation net starts with zero last-layer weights (identity transform), so its
    # convs get no gradient on the first step by design; the classifier's first conv must.
    return next(m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "localisation" not in n)


# Every model with its natural channels and 5 classes, plus a cross-section of other combinations.
CASES = [(name, 5, natural_chans(name)) for name in MODELS] + [
    ("lenet", 8, 3),
    ("vgg_khaireddin", 8, 3),
    ("resnext18", 8, 3),
    ("deep_emotion", 8, 3),
    ("tv_resnet18", 8, 1),
    ("tv_efficientnet_b3", 8, 1),
]


@pytest.mark.unit  # no data from ../shared
def test_cases_cover_every_model():
    assert {c[0] for c in CASES} == set(MODELS)
    assert {"lenet", "vgg9", "vgg_khaireddin", "resnext18", "deep_emotion", "tv_vgg11", "tv_vgg16", "tv_resnet18",
            "tv_resnet50", "tv_efficientnet_b3"} <= set(MODELS)


@pytest.mark.parametrize("name,num_classes,in_chans", CASES, ids=[f"{n}-k{k}-c{c}" for n, k, c in CASES])
def test_model_trains_at_its_input_size(name, num_classes, in_chans):
    torch.manual_seed(0)
    size = model_info(name).input_size
    model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    x = real_faces(size, in_chans)  # (2, C, S, S)
    assert first_conv(model).in_channels == in_chans

    features = []
    model.head.register_forward_hook(lambda module, args, out: features.append(args[0]))
    model.train()
    logits = model(x)
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    assert features[0].ndim == 2 and features[0].shape[0] == 2  # forward_features: (B, F) into the head
    nn.functional.cross_entropy(logits, torch.tensor([0, num_classes - 1])).backward()
    grad = first_conv(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # The trainer's optimizer finds the classifier by the name "head": its last Linear has the K outputs.
    assert [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1].out_features == num_classes


@pytest.mark.unit  # no data from ../shared
def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="vgg_khaireddin") as err:
        create_model("vgg_khairedin")
    assert "did you mean vgg_khaireddin" in str(err.value)
    assert all(name in str(err.value) for name in MODELS)


def test_deep_emotion_starts_with_identity_warp():
    model = create_model("deep_emotion").eval()
    x = real_faces(48, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.warp(x), x, atol=1e-5, rtol=0)


@pytest.mark.unit  # no data from ../shared
def test_resnext18_is_grouped_and_plausibly_sized():
    model = create_model("resnext18")
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(grouped) == 6 and all(m.groups == 32 for m in grouped)
    assert [m.out_channels for m in grouped] == [128, 128, 256, 256, 512, 512]  # 32 paths of 4, 8, 16 channels
    assert 2e6 < count_params(model) < 6e6


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision ResNet-18 state dict (random weights, as a user's local copy would hold ImageNet ones)."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.unit  # no data from ../shared
def test_pretrained_loads_local_weights_and_gets_a_new_head(resnet18_file):
    path, state = resnet18_file
    model = create_model("tv_resnet18", num_classes=5, in_chans=3, weights=str(path))
    torch.testing.assert_close(model.body.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.body.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"], rtol=0, atol=0)
    assert model.head.weight.shape == (5, 512)

    # Fine-tuning: the new layer (and only it) gets lr x head_lr_mult.
    groups = param_groups(model, TrainConfig(lr=0.01, head_lr_mult=10.0))
    head_params = {id(p) for g in groups if g["lr"] == pytest.approx(0.1) for p in g["params"]}
    assert head_params == {id(p) for p in model.head.parameters()}


@pytest.mark.unit  # no data from ../shared
def test_pretrained_imagenet_weights_come_from_torchvision_cache(resnet18_file, tmp_path, monkeypatch):
    # A file already in torchvision's cache is used as is: this exercises the real "imagenet" path offline.
    path, state = resnet18_file
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = create_model("tv_resnet18", num_classes=3, in_chans=3, weights="imagenet")
    torch.testing.assert_close(model.body.layer2[0].conv1.weight, state["layer2.0.conv1.weight"], rtol=0, atol=0)


def test_pretrained_grey_input_sums_rgb_kernels(resnet18_file):
    path, state = resnet18_file
    model = create_model("tv_resnet18", num_classes=7, in_chans=1, weights=str(path)).eval()
    torch.testing.assert_close(model.body.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    # So a grey face gives the same features as the same face as three equal RGB channels.
    rgb = create_model("tv_resnet18", num_classes=7, in_chans=3, weights=str(path)).eval()
    grey = real_faces(224, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(grey), rgb.forward_features(grey.expand(-1, 3, -1, -1)),
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.unit  # no data from ../shared
def test_pretrained_rejects_bad_weights(resnet18_file, tmp_path):
    path, _ = resnet18_file
    with pytest.raises(ValueError, match=r"resnet18\.pth: not a state dict of torchvision's ResNet \(missing .*layer1"):
        create_model("tv_resnet50", weights=str(path))
    with pytest.raises(FileNotFoundError, match="'imagenet1k'.*expected None, 'imagenet' or the path"):
        create_model("tv_resnet18", weights="imagenet1k")


@pytest.mark.unit  # no data from ../shared
def test_count_flops_is_twice_the_multiply_adds():
    conv = nn.Conv2d(1, 8, 3, padding=1)  # 8 filters x 9 taps per output pixel
    assert count_flops(conv, 48, 1) == 2 * 8 * 9 * 48 * 48
    assert count_params(conv) == 8 * 9 + 8


@pytest.mark.unit  # no data from ../shared
def test_model_table_rows():
    rows = {r["name"]: r for r in model_table(["lenet", "vgg9", "tv_resnet18"])}
    # LeNet-5 at 48x48: conv 1->6 (5x5), conv 6->16 (5x5), FC 16*9*9->120, 120->84, 84->7.
    assert rows["lenet"]["params"] == (6 * 25 + 6) + (16 * 6 * 25 + 16) + (1296 * 120 + 120) + (120 * 84 + 84) + (84 * 7 + 7)
    assert rows["vgg9"]["input_size"] == 48 and rows["vgg9"]["in_chans"] == 1
    assert rows["tv_resnet18"]["in_chans"] == 3 and rows["tv_resnet18"]["input_size"] == 224
    # torchvision documents 1.81 G multiply-adds for ResNet-18 at 224x224.
    assert rows["tv_resnet18"]["flops"] == pytest.approx(2 * 1.81e9, rel=0.01)


def test_cli_lists_every_model(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "family", "input"]
    assert sorted(line.split()[0] for line in lines[1:]) == MODELS
    assert main(["models", "lenet", "tv_vgg16", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["lenet", "tv_vgg16"]
    assert rows[1]["params"] > 100e6 and rows[1]["family"] == "pretrained"


def test_stride_2_stem_quarters_the_flops_and_keeps_the_parameters():
    full = create_model("resnet18", width=32)
    fast = create_model("resnet18", width=32, stem_stride=2)
    assert count_params(fast) == count_params(full)
    # Every layer after the stem sees a quarter of the pixels (48 -> 24 in the first stage); the stem
    # itself too, and the head does not depend on the resolution.
    assert count_flops(fast, 48, 1) == pytest.approx(count_flops(full, 48, 1) / 4, rel=0.01)
    x = real_faces(48, 1)
    assert fast.eval()(x).shape == (2, 7)
    assert fast.forward_features(x).shape == (2, 256)
    assert create_model("resnet11", width=8, stem_stride=2).stem[0].stride == (2, 2)
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2, got 4"):
        create_model("resnet34", stem_stride=4)


def test_preprocess_to_array_is_to_tensor_in_numpy():
    grey = Preprocess(label_names=("a", "b"))
    rgb = Preprocess(input_size=48, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    faces = [read_image(sorted((FER_ROOT / "train" / c).glob("Training_*"))[0]) for c in ("happy", "sad", "fear")]
    for pre in (grey, rgb):
        batch = pre.prepare_images(faces)
        got = pre.to_array(batch)
        assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (3, pre.channels, 48, 48)
        assert np.abs(got - pre.to_tensor(batch).numpy()).max() < 1e-5
