"""The model comparison table: every registered model listed with size and cost, latency where asked, accuracy of
a checkpoint on real images."""

from __future__ import annotations

import csv
import json

import pytest

from ferkit.app.cli import main as cli
from ferkit.engine.config import load_config
from ferkit.engine.evaluate import evaluate
from ferkit.engine.trainer import train
from ferkit.report.bench import BenchSettings, bench_models, state_dict_bytes
from ferkit.models.registry import create_model, list_models, model_info
from ferkit.models.summary import model_table

from conftest import make_fer_slice


def test_table_lists_every_registered_model(tmp_path, capsys):
    out = tmp_path / "zoo.csv"
    # fast mode; latency only for the two tiny models (the 224x224 backbones would take minutes at batch 64)
    assert cli(["bench-models", "--fast", "--threads", "1", "--max-gflops", "0.01", "--out", str(out)]) == 0
    md = capsys.readouterr().out
    with open(out, newline="") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == list_models()
    ref = {r["name"]: r for r in model_table()}
    for name, r in rows.items():
        assert f"| {name} |" in md
        assert int(r["params"]) == ref[name]["params"] and float(r["gflops"]) == pytest.approx(ref[name]["flops"] / 1e9, rel=1e-4)
        # fp32 weights: the file is 4 bytes per parameter plus buffers and pickling overhead
        assert 4 * int(r["params"]) <= float(r["size_mb"]) * 2**20 < 4 * int(r["params"]) * 1.05 + 200_000, name
        info = model_info(name)  # the zoo's registered input: ImageNet backbones take RGB at their own size
        side, chans = info.input_size, 3 if info.family == "pretrained" else 1
        assert r["input"] == f"{side}x{side}x{chans}"
        if float(r["gflops"]) <= 0.01:
            b1, b64, tput = float(r["latency_b1_ms"]), float(r["latency_b64_ms"]), float(r["throughput"])
            assert 0 < b1 < b64 and tput == pytest.approx(64 / (b64 / 1000), rel=1e-3)
        else:
            assert r["latency_b1_ms"] == "" and "latency not measured" in r["note"]
    assert {"lenet", "deep_emotion"} <= {n for n, r in rows.items() if r["latency_b1_ms"]}


@pytest.mark.unit  # no data from ../shared
def test_size_on_disk_is_the_saved_state_dict(tmp_path):
    import torch

    model = create_model("vgg9")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    assert state_dict_bytes(model) == pytest.approx((tmp_path / "w.pt").stat().st_size, abs=2048)


def test_checkpoint_row_has_its_accuracy(tmp_path):
    data = make_fer_slice(tmp_path / "fer", 10)
    train(load_config(None, [f"data={data}", "model=lenet", "epochs=1", "batch_size=32", "threads=1", "tta=none",
                             "augment=none"]), tmp_path / "run")
    rows = bench_models([], {"mine": str(tmp_path / "run")}, BenchSettings(fast=True, threads=1, batch_sizes=(1, 8)),
                        data=str(data), split="test")
    assert len(rows) == 1 and rows[0]["model"] == "mine" and rows[0]["architecture"] == "lenet"
    ref = evaluate(tmp_path / "run", data=data, split="test")
    assert rows[0]["accuracy"] == pytest.approx(ref["accuracy"]) and "PrivateTest" in rows[0]["accuracy_on"]
    assert rows[0]["latency_b8_ms"] > 0 and rows[0]["throughput"] > 0
    out = tmp_path / "t.json"
    assert cli(["bench-models", "--models", "none", "--checkpoint", f"mine={tmp_path / 'run'}", "--data", str(data),
                "--fast", "--batch-sizes", "1,4", "--out", str(out)]) == 0
    assert json.loads(out.read_text())[0]["accuracy"] == pytest.approx(ref["accuracy"])


@pytest.mark.unit  # no data from ../shared
def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    cases = [
        (["--models", "lenett"], "unknown model 'lenett'; did you mean lenet"),
        (["--models", "none", "--checkpoint", "runs/x"], "expected NAME=PATH"),
        (["--models", "none", "--checkpoint", f"x={tmp_path / 'nothing'}"], "nothing: no such checkpoint file or run folder"),
        (["--models", "lenet", "--out", str(tmp_path / "t.xlsx")], "unknown table format '.xlsx'; use .md, .csv or .json"),
        (["--models", "lenet", "--batch-sizes", "1,x"], "expected a comma list of integers"),
    ]
    for args, message in cases:
        assert cli(["bench-models", "--fast", *args]) == 1, args
        assert message in capsys.readouterr().err, args
