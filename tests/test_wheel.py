"""The wheel is the product: a wheel built from this tree carries the recipes, weights and web UI, and an installed
copy lists and loads every recipe from its own files (issue 26)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import RECIPES, REPO


@pytest.mark.slow
def test_a_built_wheel_installs_and_loads_every_recipe(tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(wheels)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("ferkit-*.whl")
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
                        str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    probe = (
        "import json, ferkit\n"
        "from ferkit.engine.config import list_recipes, load_config\n"
        "from ferkit.engine.sweep.spec import load_sweep\n"
        "from pathlib import Path\n"
        "names = list_recipes()\n"
        "for n in names: load_config(n)\n"
        "root = Path(ferkit.__file__).parent\n"
        "sweeps = sorted(p.stem for p in (root / 'recipes' / 'sweeps').glob('*.yaml') if p.stem != 'mini_base')\n"
        "for s in sweeps: load_sweep([s])\n"
        "weights = sorted(p.name for p in (Path(ferkit.__file__).parent / 'weights').iterdir())\n"
        "static = sorted(p.name for p in (Path(ferkit.__file__).parent / 'app' / 'static').iterdir())\n"
        "print(json.dumps({'file': ferkit.__file__, 'recipes': names, 'sweeps': sweeps, 'weights': weights, 'static': static}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "FERKIT_DATA": str(REPO.parent / "shared" / "data")}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(target))  # the installed copy, not this source tree
    assert got["recipes"] == sorted(p.stem for p in RECIPES.glob("*.yaml"))
    assert {"default_fer2013", "joint_labels", "ferplus"} <= set(got["recipes"])
    assert got["sweeps"] == sorted(p.stem for p in (RECIPES / "sweeps").glob("*.yaml") if p.stem != "mini_base")
    assert {"default.pt", "default_int8.onnx", "ferplus.pt", "face_detection_yunet_2023mar.onnx"} <= set(got["weights"])
    assert {"index.html", "app.js", "style.css"} <= set(got["static"])


@pytest.mark.unit
def test_a_recipe_without_ferkit_data_says_how_to_set_it(monkeypatch):
    from ferkit.engine.config import load_config

    monkeypatch.delenv("FERKIT_DATA", raising=False)
    with pytest.raises(ValueError, match=r"\$FERKIT_DATA, which is not set: set FERKIT_DATA"):
        load_config("vgg9_fer2013")
    assert load_config("vgg9_fer2013", ["data=/elsewhere/fer2013"]).data == "/elsewhere/fer2013"  # data=PATH wins
    monkeypatch.setenv("FERKIT_DATA", "/data/")
    assert load_config("joint_labels").ferplus == "/data/fer2013/ferplus/fer2013new.csv"
