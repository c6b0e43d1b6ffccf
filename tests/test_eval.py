"""Evaluation: metrics checked by hand, ``ferkit eval`` end to end on a real FER2013 slice, and the recipes."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import FER_ROOT, REPO, make_fer_slice

from ferkit.app.cli import main
from ferkit.labels import FER5, FER2013
from ferkit.metrics import classification_metrics, confusion_markdown

DUPLICATES = FER_ROOT / "duplicates.csv"


# ------------------------------------------------------------------ metrics by hand


@pytest.mark.unit  # no data from ../shared
def test_metrics_match_a_hand_computed_case():
    names = ["angry", "happy", "sad", "surprise"]  # surprise: no sample and never predicted
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = np.array([
        [0.60, 0.30, 0.10, 0.00],  # angry    -> angry
        [0.50, 0.10, 0.40, 0.00],  # angry    -> angry
        [0.30, 0.50, 0.10, 0.10],  # angry    -> happy, angry second: a top-2 hit
        [0.10, 0.70, 0.20, 0.00],  # happy    -> happy
        [0.10, 0.20, 0.60, 0.10],  # happy    -> sad, happy second: a top-2 hit
        [0.10, 0.50, 0.05, 0.35],  # sad      -> happy, surprise second: a top-2 miss
    ])
    m = classification_metrics(y, probs, names)
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["top2"] == pytest.approx(5 / 6)
    pc = m["per_class"]
    # angry: 2 of 2 predictions right, 2 of 3 found -> F1 = 2*1*(2/3)/(1+2/3) = 0.8
    assert (pc["angry"]["precision"], pc["angry"]["recall"], pc["angry"]["f1"]) == pytest.approx((1.0, 2 / 3, 0.8))
    # happy: 1 of 3 predictions right, 1 of 2 found -> F1 = 2*(1/3)*(1/2)/(1/3+1/2) = 0.4
    assert (pc["happy"]["precision"], pc["happy"]["recall"], pc["happy"]["f1"]) == pytest.approx((1 / 3, 0.5, 0.4))
    assert (pc["sad"]["precision"], pc["sad"]["recall"], pc["sad"]["f1"]) == (0.0, 0.0, 0.0)
    assert pc["surprise"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert [pc[n]["support"] for n in names] == [3, 2, 1, 0]
    # macro-F1 averages the classes present in the split: (0.8 + 0.4 + 0) / 3, not / 4
    assert m["macro_f1"] == pytest.approx(0.4)
    table = confusion_markdown(m)
    assert "| **angry** | 2 | 1 | 0 | 0 | 3 |" in table
    assert "| **surprise** | 0 | 0 | 0 | 0 | 0 |" in table


# ------------------------------------------------------------------ a tiny real model


def _duplicate_groups() -> list[list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    with open(DUPLICATES, newline="") as fh:
        for row in csv.DictReader(fh):
            groups[row["group_id"]].append(row["jpg_path"])
    return list(groups.values())


def _copy(rel: str, root: Path) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FER_ROOT / rel, root / rel)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real FER2013 slice holding known duplicates, and a ResNet-11 trained on it for one epoch."""
    from ferkit.engine.config import load_config
    from ferkit.engine.trainer import train

    root = make_fer_slice(tmp_path_factory.mktemp("data") / "fer", 12)
    groups = _duplicate_groups()
    # PrivateTest images with an identical copy in Training: the leak-free figure must drop them ...
    leaked_private = sorted(p for g in groups if any(q.startswith("train/") for q in g) for p in g if "/PrivateTest_" in p)
    # ... and PrivateTest images whose only copy is in PublicTest: not a Training leak, so they stay.
    test_only = sorted(p for g in groups if not any(q.startswith("train/") for q in g) for p in g if "/PrivateTest_" in p)
    for rel in leaked_private[:6] + test_only[:2]:
        _copy(rel, root)
    shutil.copyfile(DUPLICATES, root / "duplicates.csv")  # where ferkit eval looks for it by itself
    private = {p.relative_to(root).as_posix() for p in root.glob("test/*/PrivateTest_*")}
    threads = torch.get_num_threads()
    cfg = load_config(None, data=str(root), model="resnet11", model_kwargs={"width": 16}, epochs=1, batch_size=8,
                      lr=0.01, threads=1, tta="tencrop")
    run = tmp_path_factory.mktemp("runs") / "r11"
    train(cfg, run)
    yield {"root": root, "run": run, "private": private, "leaked": private & set(leaked_private),
           "must_drop": set(leaked_private[:6]), "must_keep": set(test_only[:2])}
    torch.set_num_threads(threads)


def _predictions(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_eval_run_folder_with_tencrop_and_leak_free(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", "--model", str(trained["run"]), "--data", str(trained["root"]), "--split", "PrivateTest",
               "--tta", "tencrop", "--duplicates", str(DUPLICATES), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    keys = ("accuracy", "macro_f1", "labels", "per_class", "confusion_matrix", "top2", "n", "split", "model", "tta", "leak_free")
    for key in keys:
        assert key in m, key
    n = len(trained["private"])
    assert m["split"] == "test" and m["n"] == n
    assert np.array(m["confusion_matrix"]).sum() == n
    assert m["model"].endswith("best.pt")
    for f in ("summary.md", "confusion.png", "confusion_tta.png", "predictions.csv"):
        assert (out / f).stat().st_size > 0, f
    # ferkit eval reproduces the test figure the trainer wrote for the same weights
    summary = json.loads((trained["run"] / "summary.json").read_text())
    assert abs(m["accuracy"] - summary["test"]["accuracy"]) <= 1 / n + 1e-9
    # ten-crop: the same images, a different computation, predictions that mostly agree with the plain ones
    t = m["tta"]
    assert t["mode"] == "tencrop" and t["n"] == n and np.array(t["confusion_matrix"]).sum() == n
    rows = _predictions(out)
    assert {r["source"] for r in rows} == trained["private"]
    assert sum(r["confidence_none"] != r["confidence_tencrop"] for r in rows) > 0.5 * n
    assert sum(r["pred_none"] == r["pred_tencrop"] for r in rows) >= 0.5 * n
    # leak-free: exactly the slice's PrivateTest images that have a copy in Training are left out
    lf = m["leak_free"]
    assert lf["dropped"] == len(trained["leaked"]) >= 6
    assert lf["n"] == n - lf["dropped"] and np.array(lf["confusion_matrix"]).sum() == lf["n"]
    assert lf["tta"]["n"] == lf["n"]
    flagged = {r["source"] for r in rows if r["leaked"] == "1"}
    assert flagged == trained["leaked"]
    assert trained["must_drop"] <= flagged and not (trained["must_keep"] & flagged)
    # the printed report names the split and its meaning, and gives the numbers
    assert "PrivateTest" in printed and "held-out" in printed and f"{m['accuracy']:.4f}" in printed
    assert f"{lf['dropped']} images with an identical copy in Training" in printed
    assert (out / "summary.md").read_text() in printed


def test_eval_checkpoint_file_defaults(trained, tmp_path, capsys):
    """best.pt with no --data: the dataset it was trained on, its duplicates.csv found beside it, no TTA."""
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(trained["run"] / "best.pt"), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "test" and m["n"] == len(trained["private"])
    assert m["tta"] is None and not (out / "confusion_tta.png").exists()
    assert m["leak_free"]["dropped"] == len(trained["leaked"])
    assert Path(m["leak_free"]["duplicates"]) == trained["root"] / "duplicates.csv"
    capsys.readouterr()
    # on the split that chose the checkpoint, the report says the figure is optimistic; --threads sets torch's
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["eval", "--model", str(trained["run"] / "best.pt"), "--split", "PublicTest", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "PublicTest" in printed and "optimistic" in printed


def test_eval_7_class_model_on_5_class_data(trained, tmp_path):
    root = make_fer_slice(tmp_path / "fer5", {c: 5 for c in FER5}, seed=1)
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(trained["run"]), "--data", str(root), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["labels"] == list(FER2013) and m["n"] == 25  # scored in the model's 7 classes
    support = {k: v["support"] for k, v in m["per_class"].items()}
    assert support == {"angry": 5, "disgust": 0, "fear": 0, "happy": 5, "sad": 5, "surprise": 5, "neutral": 5}
    assert m["macro_f1"] == pytest.approx(np.mean([m["per_class"][c]["f1"] for c in FER5]))
    # true classes are FER5 names, whatever the model predicted
    assert {r["true"] for r in _predictions(out)} == set(FER5)
    assert m["leak_free"] is None  # no duplicates.csv beside this slice


def test_eval_5_class_model_on_7_class_data_leaves_out_unknown_classes(trained, tmp_path):
    from ferkit.engine.config import load_config
    from ferkit.engine.trainer import train

    run = tmp_path / "fer5_run"
    train(load_config(None, data=str(trained["root"]), labels="fer5", model="resnet11", model_kwargs={"width": 8},
                      epochs=1, batch_size=16, threads=1), run)
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(run), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["labels"] == list(FER5)
    private = trained["private"]
    n_unknown = {c: sum(f"test/{c}/" in p for p in private) for c in ("disgust", "fear")}
    assert m["unmapped"] == n_unknown
    assert m["n"] == len(private) - sum(n_unknown.values())
    assert "disgust" in (out / "summary.md").read_text()


def test_eval_errors_name_the_bad_input(trained, tmp_path, capsys):
    run = str(trained["run"])
    cases = [
        (["--model", str(tmp_path / "nope.pt")], "nope.pt"),
        (["--model", run, "--data", str(tmp_path / "no_data")], "no_data"),
        (["--model", run, "--split", "holdout"], "holdout"),
        (["--model", run, "--duplicates", str(tmp_path / "dups.csv")], "dups.csv"),
    ]
    other = tmp_path / "pets"
    for cls, src in (("cat", "happy"), ("dog", "sad")):  # real images under class names no model knows
        for f in sorted((trained["root"] / "train" / src).iterdir())[:2]:
            (other / "train" / cls).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, other / "train" / cls / f.name)
    cases.append((["--model", run, "--data", str(other), "--split", "train"], "share no name"))
    for args, expected in cases:
        capsys.readouterr()
        assert main(["eval", *args]) == 1, args
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (args, err)
    main(["eval", "--model", run, "--split", "holdout"])
    assert "privatetest" in capsys.readouterr().err.lower()  # the split error lists the valid names


class NotWeights:
    """Any Python object in a checkpoint: torch's weights-only loader refuses to unpickle it."""

    def __init__(self):
        self.payload = "whatever runs when this is unpickled"


def test_a_checkpoint_holding_objects_is_refused_without_advice_to_run_it(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "ferkit", "model": NotWeights()}, evil)
    for cmd in (["eval", "--model", str(evil)], ["predict", str(FER_ROOT / "test" / "happy"), "--model", str(evil),
                                                 "--out", str(tmp_path / "out")]):
        assert main(cmd) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"{evil}: not a safe ferkit checkpoint" in err and "NotWeights" in err
        assert "weights_only" not in err and "trusted source" not in err  # never advise running the file's code


def test_eval_asks_for_data_when_the_stored_path_is_not_found_from_here(tmp_path, capsys, monkeypatch):
    """The shipped model names the dataset as ../shared/data/fer2013, relative to where it was trained."""
    monkeypatch.chdir(tmp_path)
    assert main(["eval"]) == 1
    err = capsys.readouterr().err
    assert "trained on ../shared/data/fer2013, which is not found from here" in err and "--data PATH" in err
    # one rule for every command that falls back to the model's dataset, each naming its own option
    from ferkit.engine.classify import ModelRef
    from ferkit.engine.evaluate import trained_dataset

    ref = ModelRef.resolve("default")
    with pytest.raises(FileNotFoundError, match=r"^default: the model was trained on .* give the dataset with --calib PATH"):
        trained_dataset(ref.config, ref, option="--calib")
    with pytest.raises(ValueError, match="does not name the dataset it was trained on; give one with --calib PATH"):
        trained_dataset({}, ref, option="--calib")


def test_split_all_scores_a_flat_folder_of_class_folders(trained, tmp_path, capsys):
    flat = tmp_path / "flat"  # root/<class>/*.jpg: a user's own labelled faces, no split folders or Kaggle names
    for i, f in enumerate(sorted(trained["root"].glob("test/*/PrivateTest_*.jpg"))):
        (flat / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, flat / f.parent.name / f"face_{i:03d}.jpg")
    n = sum(1 for _ in flat.rglob("*.jpg"))
    # The default split is empty there: the error says how to score the folder.
    assert main(["eval", "--model", str(trained["run"]), "--data", str(flat)]) == 1
    assert "--split all scores every image" in capsys.readouterr().err
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(trained["run"]), "--data", str(flat), "--split", "all", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "all" and m["n"] == n == len(trained["private"])
    assert "training split" not in printed and "every image of a dataset other than" in printed
    # the same images, the same predictions as when they are scored as the test split of the Kaggle layout
    same = tmp_path / "same"
    assert main(["eval", "--model", str(trained["run"]), "--data", str(trained["root"]), "--out", str(same)]) == 0
    assert json.loads((same / "metrics.json").read_text())["confusion_matrix"] == m["confusion_matrix"]


@pytest.mark.unit  # no data from ../shared
def test_never_predicted_classes_are_called_out():
    from ferkit.engine.evaluate import format_summary
    from ferkit.metrics import never_predicted

    names = ["angry", "happy", "sad", "surprise"]
    y = np.array([0, 0, 1, 1, 2, 2])  # surprise has no image: not "never predicted", just absent
    probs = np.eye(4)[[0, 1, 1, 1, 1, 0]]  # sad is never predicted
    m = classification_metrics(y, probs, names)
    assert never_predicted(m) == ["sad"] and m["per_class"]["sad"]["f1"] == 0
    result = {**m, "architecture": "x", "split_title": "test", "model": "m.pt", "data": "d", "split_role": "r",
              "unmapped": {}, "tta": None, "leak_free": None, "never_predicted": never_predicted(m)}
    assert "**warning**: the model never predicts sad on these images (F1 = 0)" in format_summary(result)


# ------------------------------------------------------------------ recipes


RECIPES = sorted((REPO / "src" / "ferkit" / "recipes").glob("*.yaml"))


@pytest.mark.unit  # no data from ../shared
@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_loads_and_names_a_registered_model(path):
    from ferkit import labels as L
    from ferkit.data.augment import AugmentConfig
    from ferkit.engine.config import load_config
    from ferkit.engine.optim import Schedule, build_optimizer
    from ferkit.models.registry import create_model, list_models, model_info

    cfg = load_config(path)  # raises on unknown keys
    assert str(yaml.safe_load(path.read_text()).get("reference", "")).strip(), f"{path.name}: no reference text"
    AugmentConfig.from_spec(cfg.augment)  # raises on unknown augmentation keys
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)  # raises on unknown optimizer names
    Schedule(opt, cfg, steps_per_epoch=10)  # raises on unknown scheduler names
    assert cfg.tta in ("none", "flip", "tencrop")
    assert cfg.model in list_models(), f"{path.name}: model {cfg.model!r} is not registered"
    # the model accepts the recipe's input size and channels (weights=None: no download in tests)
    info = model_info(cfg.model)
    kwargs = {**cfg.model_kwargs, **({"weights": None} if "weights" in cfg.model_kwargs else {})}
    k = len(L.resolve_labels(cfg.labels)) if cfg.labels else 7
    chans = cfg.channels or (3 if info.family == "pretrained" else 1)
    size = cfg.input_size or info.input_size
    model = create_model(cfg.model, num_classes=k, in_chans=chans, **kwargs).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, chans, size, size)).shape == (2, k)
