"""Training on real FER2013 slices: learning, resume after a kill, config errors."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ferkit.app.cli import main as cli
from ferkit.engine.checkpoint import load_checkpoint, load_model
from ferkit.engine.config import load_config
from ferkit.engine.trainer import train

from conftest import FER_ROOT

# Three visually distinct classes keep a few-epoch CPU run meaningful: chance is 1/3.
FAST = [f"data={FER_ROOT}", "labels=happy,surprise,neutral", "model=resnet11", "model_kwargs={width: 16}",
        "optimizer=adam", "lr=0.002", "weight_decay=0", "batch_size=64", "augment=none", "threads=1"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> tuple[Path, dict]:
    """One 6-epoch run on 3,000 real training images, shared by the tests that read what it learned and wrote."""
    run = tmp_path_factory.mktemp("short") / "run"
    cfg = load_config(None, FAST + ["epochs=6", "train_limit=3000", "val_limit=900", "scheduler=cosine", "threads=2"])
    return run, train(cfg, run)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A 1-epoch run: the first stage of the fine-tuning test and the teacher of the distillation test."""
    run = tmp_path_factory.mktemp("base") / "run"
    train(load_config(None, FAST + ["epochs=1", "train_limit=600", "val_limit=200"]), run)
    return run


@pytest.mark.slow
def test_short_run_learns_on_real_images(short_run):
    run, summary = short_run
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # held-out PublicTest slice: well above chance (1/3) and the majority-class share (happy, 47%)
    assert summary["best_val_acc"] > 0.55, summary
    assert float(rows[-1]["val_macro_f1"]) > 0.45, rows[-1]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    # PrivateTest (never seen in training or selection) agrees
    assert summary["test"]["accuracy"] > 0.5 and summary["test"]["n"] > 1000


@pytest.mark.slow
def test_a_run_folder_holds_its_outputs_and_a_data_only_checkpoint(short_run):
    run, _ = short_run
    for name in ("config.yaml", "best.pt", "last.pt", "curves.png", "summary.json"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir()), "no TensorBoard event file"
    # the checkpoint carries the preprocessing and loads as data (weights_only)
    model, pre = load_model(run)
    assert pre.label_names == ("happy", "surprise", "neutral") and pre.input_size == 48 and pre.channels == 1
    assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 3)


def _train_cmd(out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "ferkit.app.cli", "train", *FAST, f"epochs={epochs}", "train_limit=1200",
            "val_limit=300", "scheduler=onecycle", "model_kwargs={width: 8}", "ema=0.9", "--out", str(out), "--no-progress"]


def _final_state(run: Path) -> dict:
    ck = load_checkpoint(run / "last.pt")  # with ema: the averaged weights and the live ones
    return {**ck["state_dict"], **{"live." + k: v for k, v in ck["train_state_dict"].items()}, "ema_updates": ck["ema_updates"]}


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_train_cmd(ref, 3), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_train_cmd(killed, 3), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "metrics.csv").is_file():
        time.sleep(0.2)
    time.sleep(0.5)  # somewhere inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(csv.DictReader(open(killed / "metrics.csv"))))
    assert 1 <= done < 3, "the kill should land before the run finished"

    r = subprocess.run([sys.executable, "-m", "ferkit.app.cli", "train", "--resume", "--out", str(killed), "--no-progress"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = _final_state(ref), _final_state(killed)
    assert a.keys() == b.keys()
    assert a["ema_updates"] == b["ema_updates"] == 3 * (1200 // 64)
    for k in a:
        assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), f"{k} differs after resume"
    ra = list(csv.DictReader(open(ref / "metrics.csv")))
    rb = list(csv.DictReader(open(killed / "metrics.csv")))
    assert [r["val_acc"] for r in ra] == [r["val_acc"] for r in rb]
    assert json.loads((killed / "summary.json").read_text())["test"] == json.loads((ref / "summary.json").read_text())["test"]


def test_fine_tune_stage_and_early_stopping(base_run, tmp_path):
    base = base_run
    # a second stage from the checkpoint on a different label set: backbone reused, new head
    cfg = load_config(None, FAST + ["labels=happy,surprise", "epochs=6", "train_limit=600", "val_limit=200",
                                    f"init_from={base}", "early_stopping=1", "lr=0.02", "head_lr_mult=10"])
    s = train(cfg, tmp_path / "stage2")
    src, dst = load_checkpoint(base)["state_dict"], load_checkpoint(tmp_path / "stage2" / "best.pt")["state_dict"]
    assert dst["head.1.weight"].shape[0] == 2 and src["head.1.weight"].shape[0] == 3
    assert s["epochs_run"] < 6 or s["best_epoch"] == 6  # stopped early unless it kept improving
    best = load_checkpoint(tmp_path / "stage2" / "best.pt")
    assert best["epoch"] == s["best_epoch"]  # best weights are the ones restored and reported


@pytest.mark.unit  # no data from ../shared: settings are refused before any is read
@pytest.mark.parametrize(
    "override, needle",
    [
        (["modle=resnet18"], "did you mean model"),
        (["model=resnet19"], "resnet18"),
        (["optimizer=adamm"], "adam"),
        (["scheduler=cosin"], "cosine"),
        (["augment={rotation: 5}"], "rotate"),
    ],
)
def test_bad_config_names_the_valid_choices(tmp_path, capsys, override, needle):
    code = cli(["train", *FAST, "epochs=1", "train_limit=200", "val_limit=100", *override, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and needle in err and "error" in err


@pytest.mark.unit  # no data from ../shared: settings are refused before any is read
def test_unknown_recipe_and_non_empty_output(tmp_path, capsys):
    assert cli(["train", "--recipe", "no_such_recipe", "--out", str(tmp_path / "r")]) == 1
    assert "default_fer2013" in capsys.readouterr().err  # lists the recipes there are
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert cli(["train", *FAST, "epochs=1", "--out", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "user data"
    assert cli(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 1


@pytest.mark.unit  # no data from ../shared
def test_train_limit_is_exact_and_keeps_class_shares():
    """FER2013's Training class counts: rounding each class on its own made train_limit=8000 give 8001."""
    from ferkit.data.dataset import FerData
    from ferkit.engine.trainer import stratified_subset
    from ferkit.labels import FER2013

    counts = [3995, 436, 4097, 7215, 4830, 3171, 4965]
    labels = np.repeat(np.arange(7), counts)
    data = FerData(np.zeros((len(labels), 1, 1), np.uint8), labels, ["train"] * len(labels), FER2013,
                   np.arange(len(labels)).astype(str))
    for n in (8000, 1200, 601, 100, 7, 1):
        sub = stratified_subset(data, n, seed=0)
        assert len(sub) == n
        got = np.bincount(sub.labels, minlength=7)
        assert np.all(np.abs(got - np.array(counts) * n / len(labels)) < 1), (n, got)  # each class within one of its share
        assert len(set(sub.sources.tolist())) == n  # no sample twice
    assert stratified_subset(data, 8000, seed=0).sources.tolist() == stratified_subset(data, 8000, seed=0).sources.tolist()


def test_cli_run_killed_before_its_first_checkpoint_resumes_from_scratch_and_reports_for_people(fer_slice, tmp_path,
                                                                                                capsys, caplog):
    """A run folder holding only config.yaml (killed while loading data or in epoch 1): --resume starts it again."""
    import yaml

    run = tmp_path / "killed"
    run.mkdir()
    cfg = load_config(None, [f"data={fer_slice}", "model=lenet", "epochs=1", "train_limit=70", "val_limit=40",
                             "batch_size=16", "threads=1", "augment=none", "tta=none"])
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))  # what fit() writes first
    assert cli(["train", "--out", str(run)] + [f"data={fer_slice}"]) == 1
    assert "not empty" in capsys.readouterr().err  # a fresh start is refused: the folder is the run's

    with caplog.at_level(logging.INFO):
        assert cli(["train", "--resume", "--out", str(run)]) == 0  # progress bar on by default
    captured = capsys.readouterr()
    assert "no checkpoint yet" in caplog.text and "starting from scratch with its saved config.yaml" in caplog.text
    assert "epoch 1/1" in caplog.text  # the per-epoch log line
    assert "\r" not in captured.err  # stderr is not a terminal here: no per-batch bar updates
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_images"] == 70 and summary["epochs_run"] == 1
    assert load_checkpoint(run / "last.pt")["config"] == cfg.to_dict()  # the saved config, not the defaults
    # A short summary for people, and what to run next; not a JSON dump.
    out = captured.out
    assert not out.lstrip().startswith("{")
    assert f"best epoch 1 of 1: {100 * summary['best_val_acc']:.2f} % accuracy on the val split" in out
    assert f"test: {100 * summary['test']['accuracy']:.2f} % accuracy, macro-F1 {summary['test']['macro_f1']:.3f}" in out
    assert f"run folder {run} (" in out and out.rstrip().endswith(f"next: ferkit report {run}")


def test_ddp_under_torchrun_on_two_cpu_processes(tmp_path):
    """DDP (gloo backend on CPU): two ranks share the epoch; rank 0 alone writes the run folder."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "ferkit.app.cli", "train", *FAST, "epochs=2", "train_limit=1000", "val_limit=200",
           "model_kwargs={width: 8}", "--out", str(out), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["test"]["n"] > 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 2 and float(rows[0]["train_img_s"]) > 0


@pytest.mark.unit  # no data from ../shared
def test_weight_ema_is_the_running_mean_then_exponential():
    from ferkit.engine.optim import WeightEMA

    live = torch.nn.BatchNorm1d(1)
    ema = WeightEMA(live, decay=0.75)  # the plain mean of up to 1 / (1 - 0.75) = 4 weight sets
    seen = [live.weight.item()]
    for v in (3.0, 5.0, 7.0):
        live.weight.data.fill_(v)
        live.num_batches_tracked += 1
        ema.update(live)
        seen.append(v)
        assert ema.module.weight.item() == pytest.approx(sum(seen) / len(seen))
    live.weight.data.fill_(9.0)
    ema.update(live)  # then d = 0.75: a quarter of the way from 4 to 9
    assert ema.module.weight.item() == pytest.approx(5.25)
    assert int(ema.module.num_batches_tracked) == 3  # integer buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightEMA(live, decay=1.0)


def test_ema_run_validates_and_ships_the_averaged_weights(tmp_path):
    from ferkit.engine.trainer import Trainer

    cfg = load_config(None, FAST + ["epochs=2", "train_limit=600", "val_limit=300", "ema=0.95"])
    t = Trainer(cfg, tmp_path / "run")
    s = t.fit()
    last, best = load_checkpoint(tmp_path / "run" / "last.pt"), load_checkpoint(tmp_path / "run" / "best.pt")
    assert last["ema_updates"] == 2 * (600 // 64) and "train_state_dict" not in best
    k = "head.1.weight"
    assert not torch.equal(last["state_dict"][k], last["train_state_dict"][k])  # the average is not the live weights
    # best.pt holds the averaged weights of the best epoch, and they score the val accuracy logged for it
    assert torch.equal(t.eval_model.state_dict()[k].cpu(), best["state_dict"][k]) and t.eval_model is t.ema.module
    assert t.evaluate(t.val_t)[0]["accuracy"] == pytest.approx(s["best_val_acc"])


def test_distillation_targets_mix_teacher_views_and_labels(base_run, tmp_path):
    from ferkit.engine.trainer import Trainer, images_to_tensor, predict_probs

    cfg = load_config(None, FAST + ["epochs=1", "train_limit=600", "val_limit=200", f"distill={base_run}",
                                    "distill_tta=flip", "distill_weight=0.25"])
    t = Trainer(cfg, tmp_path / "student")
    teacher, pre = load_model(base_run)
    want = torch.from_numpy(predict_probs(teacher, images_to_tensor(t.train_data.images), pre, "flip", amp=t.amp, channels_last=t.cfg.channels_last))
    cached = torch.load(tmp_path / "student" / "teacher_probs.pt", weights_only=True)
    assert torch.allclose(cached, want, atol=1e-6)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(t.train_data.labels), 3).float()
    assert torch.allclose(t.train_t.soft, 0.25 * want + 0.75 * onehot, atol=1e-6)
    assert t.fit()["epochs_run"] == 1
    # a teacher with other classes is refused, naming both label sets
    bad = load_config(None, FAST + ["labels=happy,surprise", "epochs=1", "train_limit=300", "val_limit=100",
                                    f"distill={base_run}"])
    with pytest.raises(ValueError, match="distill: the teacher .* predicts"):
        Trainer(bad, tmp_path / "bad")
