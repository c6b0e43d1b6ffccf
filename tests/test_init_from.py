"""``init_from`` names a shipped model by its digest (``default@<12+ hex>``) or says ``default@latest``; a bare
``default`` is refused at config load (issue 26). Data-free: the shipped weights are package files."""

from __future__ import annotations

import hashlib

import pytest
import torch
import yaml

from ferkit.engine import builders
from ferkit.engine import checkpoint as ckpt
from ferkit.engine.config import RECIPE_DIRS, TrainConfig, load_config
from ferkit.models.registry import create_model

pytestmark = pytest.mark.unit

SHA = hashlib.sha256(ckpt.DEFAULT_MODEL.read_bytes()).hexdigest()  # today's default.pt, hashed here on its own
PIN = f"default@{SHA[:12]}"
OTHER = hashlib.sha256(ckpt.SHIPPED_MODELS["ferplus"].read_bytes()).hexdigest()  # a real file that is not default.pt


def test_a_bare_shipped_name_is_refused_with_the_exact_pinned_spelling():
    assert ckpt.pinned_spelling("default") == PIN
    with pytest.raises(ValueError, match=rf"init_from=default names the shipped 'default' model.*init_from={PIN}\b.*default@latest"):
        load_config(None, ["data=x", "init_from=default"])
    with pytest.raises(ValueError, match=rf"init_from={PIN}"):  # the recipes' path too
        load_config("joint_labels", ["init_from=default"])


def test_a_pinned_or_latest_shipped_model_loads():
    # the resolved config names the file by its full digest (what config.yaml keeps; a sweep compares it on resume)
    for spec in (PIN, f"default@{SHA.upper()}", "default@latest"):
        assert load_config(None, ["data=x", f"init_from={spec}"]).init_from == f"default@{SHA}", spec
    assert ckpt.resolve_pinned(PIN) == ("default", SHA)
    assert ckpt.resolve_pinned("default@latest") == ("default", SHA)
    assert ckpt.resolve_pinned("runs/a/best.pt") == ("runs/a/best.pt", None)  # a path passes through, as before


def test_a_pin_of_another_file_fails_naming_both_digests_and_what_to_do():
    with pytest.raises(ValueError) as err:
        load_config(None, ["data=x", f"init_from=default@{OTHER[:12]}"])
    msg = str(err.value)
    assert SHA[:12] in msg and OTHER[:12] in msg, msg
    assert f"init_from={PIN}" in msg and "init_from=default@latest" in msg and "init_from=PATH" in msg, msg


def test_a_recipe_pinned_to_the_shipped_file_fails_once_another_file_ships(monkeypatch):
    load_config("joint_labels")  # pinned to today's default.pt
    monkeypatch.setitem(ckpt.SHIPPED_MODELS, "default", ckpt.SHIPPED_MODELS["ferplus"])  # "a new default ships"
    with pytest.raises(ValueError, match=rf"has sha256 {OTHER[:12]}\.\.\., not the pinned {SHA[:12]}"):
        load_config("joint_labels")
    assert load_config("joint_labels", ["init_from=default@latest"]).init_from == f"default@{OTHER}"


@pytest.mark.parametrize("pin", ["default@650a7d", "default@not-hex-digits", "default@"])
def test_a_malformed_pin_is_refused(pin):
    with pytest.raises(ValueError, match=r"12 or more hex digits"):
        load_config(None, ["data=x", f"init_from={pin}"])


def test_every_shipped_recipe_pins_the_shipped_models_it_starts_from():
    for path in sorted(RECIPE_DIRS[0].rglob("*.yaml")):
        spec = (yaml.safe_load(path.read_text()) or {}).get("init_from")
        if spec and spec.split("@")[0] in ckpt.SHIPPED_MODELS:
            assert "@" in spec and ckpt.resolve_pinned(spec)[1], f"{path.name}: init_from {spec}"


def test_a_run_records_the_file_it_started_from_and_loads_its_weights(caplog):
    cfg = TrainConfig(data="x", init_from="default@latest", model="resnet18", model_kwargs={"width": 32})
    assert builders.resolve_init_from(cfg) == "default"
    assert cfg.init_from == f"default@{SHA}"  # what config.yaml and every checkpoint of the run keep
    model = create_model("resnet18", num_classes=7, in_chans=1, width=32)
    builders.init_from(model, cfg.init_from)
    shipped = torch.load(ckpt.DEFAULT_MODEL, weights_only=True)["state_dict"]
    assert all(torch.equal(v.float(), shipped[k].float()) for k, v in model.state_dict().items())
    legacy = TrainConfig(data="x", init_from="default")  # a run configured before pins (a resume): taken as @latest
    with caplog.at_level("WARNING"):
        assert builders.resolve_init_from(legacy) == "default"
    assert legacy.init_from == f"default@{SHA}" and "without a pin" in caplog.text
