"""Sweeps on a real FER2013 slice: summary table and plots, skipping finished runs, resuming an interrupted
sweep to the same numbers, parallel processes, and grids that fail before anything runs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import pytest

from ferkit.app.cli import main as cli
from ferkit.engine import sweep as S
from ferkit.engine import trainer as T

from conftest import FER_ROOT, REPO, make_fer_slice

SWEEP_RECIPES = REPO / "src" / "ferkit" / "recipes" / "sweeps"


@pytest.fixture(scope="module")
def fer_slice(tmp_path_factory) -> Path:
    # 20 real images per class and split: 140 train, 140 PublicTest (val), 140 PrivateTest (test)
    return make_fer_slice(tmp_path_factory.mktemp("sweep") / "fer", 20)


def fast(data: Path, epochs: int = 2) -> list[str]:
    return [f"data={data}", "model=lenet", f"epochs={epochs}", "batch_size=32", "threads=1", "tta=none", "augment=none"]


@pytest.fixture(scope="module")
def finished_sweep(fer_slice, tmp_path_factory) -> Path:
    """A 2 configurations x 2 seeds sweep run through the CLI."""
    out = tmp_path_factory.mktemp("sweeps") / "opt"
    rc = cli(["sweep", "--grid", "optimizer=sgd,adam", "--seeds", "0,1", "--out", str(out), "--no-progress", *fast(fer_slice)])
    assert rc == 0
    return out


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_sweep_writes_run_folders_summary_table_and_plots(finished_sweep):
    out = finished_sweep
    for cfg in ("optimizer-sgd", "optimizer-adam"):
        for seed in (0, 1):
            run = out / cfg / f"seed{seed}"
            for name in ("config.yaml", "metrics.csv", "best.pt", "last.pt", "summary.json"):
                assert (run / name).is_file(), run / name  # a normal run folder
            assert f"seed: {seed}" in (run / "config.yaml").read_text()
            assert "epoch 2/2" in (out / cfg / f"seed{seed}.log").read_text()  # the run's own log
    rows = _rows(out / "summary.csv")
    assert [r["config"] for r in rows] == ["optimizer-sgd", "optimizer-adam"]
    runs = _rows(out / "runs.csv")
    for r in rows:
        assert r["n_seeds"] == "2"
        mine = [x for x in runs if x["config"] == r["config"]]
        vals = [float(x["best_val_acc"]) for x in mine]
        # mean and sample std of the two seeds' best PublicTest accuracy; test accuracy of the selected epoch
        assert float(r["val_acc_mean"]) == pytest.approx(sum(vals) / 2, abs=1e-5)
        assert float(r["val_acc_std"]) == pytest.approx(abs(vals[0] - vals[1]) / 2**0.5, abs=1e-5)
        for x in mine:
            s = json.loads((Path(x["run_dir"]) / "summary.json").read_text())
            assert float(x["test_acc"]) == pytest.approx(s["test"]["accuracy"], abs=1e-5)
        assert float(r["epochs_mean"]) == 2 and float(r["train_s_mean"]) > 0
    md = (out / "summary.md").read_text()
    assert "| optimizer-adam | 2 |" in md or "| **optimizer-adam** | 2 |" in md
    assert "±" in md and "PrivateTest" in md
    for plot in ("curves.png", "bars.png"):
        img = cv2.imread(str(out / plot))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 300, plot
        assert img.std() > 10, f"{plot} looks blank"
    # the resolved sweep is itself a sweep file
    again = S.load_sweep([str(out / "sweep.yaml")])
    assert [n for n, _ in again.configs] == ["optimizer-sgd", "optimizer-adam"] and again.seeds == [0, 1]


def test_rerun_skips_finished_runs(finished_sweep, fer_slice, capsys):
    out = finished_sweep
    files = [p for p in out.glob("*/seed*/*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    capsys.readouterr()
    rc = cli(["sweep", "--grid", "optimizer=sgd,adam", "--seeds", "0,1", "--out", str(out), "--no-progress", *fast(fer_slice)])
    assert rc == 0
    assert "0 runs trained, 0 resumed, 4 already finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in files} == before  # no run folder was touched


def test_interrupted_sweep_resumes_to_the_same_result(finished_sweep, fer_slice, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"
    sweep = S.load_sweep(["optimizer=sgd,adam"], seeds="0,1", overrides=fast(fer_slice))
    real_write = T.Trainer._write_epoch

    def killed_after_first_epoch(self, row):  # a kill between epoch 1 and 2 of the second run
        real_write(self, row)
        if self.out == out / "optimizer-sgd" / "seed1" and row["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(T.Trainer, "_write_epoch", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        S.run_sweep(sweep, out)
    monkeypatch.setattr(T.Trainer, "_write_epoch", real_write)
    assert [r.status for r in S.plan_runs(sweep, out)] == ["done", "resume", "new", "new"]

    result = S.run_sweep(sweep, out)
    assert result.skipped == ["optimizer-sgd/seed0"] and result.resumed == ["optimizer-sgd/seed1"]
    assert result.ran == ["optimizer-adam/seed0", "optimizer-adam/seed1"] and not result.failed
    # the interrupted run, resumed, reaches exactly the uninterrupted run's numbers
    for a, b in zip(_rows(out / "runs.csv"), _rows(finished_sweep / "runs.csv")):
        for key in ("best_val_acc", "best_epoch", "test_acc", "epochs_run"):
            assert a[key] == b[key], (a["config"], a["seed"], key)


def test_parallel_processes_one_thread_each(fer_slice, tmp_path):
    out = tmp_path / "par"
    sweep = S.load_sweep(["lr=0.05,0.01"], seeds=[0], overrides=fast(fer_slice, epochs=1) + ["threads=0"])
    result = S.run_sweep(sweep, out, parallel=2)
    assert sorted(result.ran) == ["lr-0.01/seed0", "lr-0.05/seed0"]
    for cfg in ("lr-0.05", "lr-0.01"):
        log = (out / cfg / "seed0.log").read_text()
        # the `ferkit train` process's output: one log line per epoch (no \r bar in a file), then its summary
        assert "epoch 1/1" in log and "best epoch 1 of 1" in log and "\r" not in log
        # 2 processes on this machine's cores: threads split between them
        assert f"threads: {max(1, (os.cpu_count() or 1) // 2)}" in (out / cfg / "seed0" / "config.yaml").read_text()
    assert [r["n_seeds"] for r in _rows(out / "summary.csv")] == ["1", "1"]


def test_bad_grid_fails_before_anything_runs(fer_slice, tmp_path, capsys):
    out = tmp_path / "bad"
    rc = cli(["sweep", "--grid", "optimizer=sgd,foo", "--out", str(out), *fast(fer_slice)])
    err = capsys.readouterr().err
    assert rc == 1 and "unknown optimizer 'foo'" in err and "valid: sgd, nesterov, asgd, adam" in err
    assert "optimizer-foo" in err and not out.exists()  # nothing ran, nothing written

    with pytest.raises(ValueError, match=r"unknown config key 'lrr' \(did you mean lr\?\)"):
        S.plan_runs(S.load_sweep(["lrr=0.1,0.01"], overrides=fast(fer_slice)), out)
    with pytest.raises(ValueError, match=r"unknown scheduler 'cosin' \(did you mean cosine\?\)"):
        S.plan_runs(S.load_sweep(["scheduler=cosin,step"], overrides=fast(fer_slice)), out)
    with pytest.raises(ValueError, match=r"lenet does not take model_kwargs .*its keyword arguments: dropout"):
        S.plan_runs(S.load_sweep(["model_kwargs.width=8,16"], overrides=fast(fer_slice)), out)
    with pytest.raises(ValueError, match="data=no/such/data: dataset not found"):
        S.plan_runs(S.load_sweep(["lr=0.1,0.01"], overrides=fast(Path("no/such/data"))), out)
    recipe_as_sweep = tmp_path / "r.yaml"
    recipe_as_sweep.write_text("model: lenet\nepochs: 3\n")
    with pytest.raises(ValueError, match=r"r.yaml: unknown sweep key\(s\) \['epochs', 'model'\] \(is it a training recipe"):
        S.load_sweep([str(recipe_as_sweep)])
    with pytest.raises(ValueError, match="sets 'seed'; list seeds under 'seeds:'"):
        S.load_sweep(["seed=1,2"])
    assert not out.exists()


def test_a_diverging_run_is_reported_and_the_others_finish(fer_slice, tmp_path, capsys):
    out = tmp_path / "div"
    rc = cli(["sweep", "--grid", "lr=0.01,1e9", "--out", str(out), "--no-progress", *fast(fer_slice), "optimizer=sgd"])
    err = capsys.readouterr().err
    assert rc == 1 and "1 of 2 runs failed" in err and "lr-1e9/seed0 (training diverged" in err
    rows = {r["config"]: r for r in _rows(out / "runs.csv")}
    assert rows["lr-0.01"]["status"] == "done" and rows["lr-1e9"]["status"].startswith("failed: training diverged")
    assert "lr-1e9/seed0 (failed: training diverged" in (out / "summary.md").read_text()


@pytest.mark.unit  # no data from ../shared
def test_sweep_file_named_configs_times_grid(tmp_path):
    (tmp_path / "base.yaml").write_text("model: lenet\nepochs: 3\n")
    f = tmp_path / "s.yaml"
    f.write_text("recipe: base.yaml\nfixed: {batch_size: 16}\n"
                 "configs:\n  - {name: sgd, optimizer: sgd, lr: 0.01}\n  - {name: adam, optimizer: adam, lr: 0.001}\n"
                 "grid:\n  scheduler: [none, plateau]\n  augment.erase: [0.25]\nseeds: [3, 4]\n")
    sw = S.load_sweep([str(f)])
    assert sw.recipe == str(tmp_path / "base.yaml")  # a base recipe beside the sweep file
    assert [n for n, _ in sw.configs] == ["sgd_scheduler-none", "sgd_scheduler-plateau", "adam_scheduler-none",
                                          "adam_scheduler-plateau"]
    assert dict(sw.configs)["adam_scheduler-plateau"] == {"optimizer": "adam", "lr": 0.001, "scheduler": "plateau",
                                                          "augment": {"erase": 0.25}}
    assert sw.seeds == [3, 4] and sw.fixed == {"batch_size": 16}
    assert S.split_values("[5,8],[3, 6]") == ["[5,8]", "[3, 6]"]  # commas inside lists stay
    assert [o for _, o in S.load_sweep(["milestones=[5,8],[3,6]"]).configs] == [{"milestones": [5, 8]}, {"milestones": [3, 6]}]
    assert [n for n, _ in S.select_configs(sw, ["adam*"]).configs] == ["adam_scheduler-none", "adam_scheduler-plateau"]


def test_committed_sweep_recipes_are_valid(tmp_path):
    files = sorted(p for p in SWEEP_RECIPES.glob("*.yaml") if p.name != "mini_base.yaml")
    assert {p.stem for p in files} >= {"optimizers", "schedules", "dropout", "augmentation", "balanced", "depth"}

    for f in files:
        sw = S.load_sweep([str(f)], overrides=[f"data={FER_ROOT}"])
        runs = S.plan_runs(sw, tmp_path / f.stem)  # every configuration resolves and validates
        assert len(sw.seeds) == 2 and len(runs) == 2 * len(sw.configs)
        assert all(r.cfg.threads == 1 and r.cfg.train_limit >= 3000 and r.cfg.tta == "none" for r in runs), f
