"""HTML reports of a real run and a real sweep: self-contained, every image decodes in headless Chromium."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ferkit.app.cli import main as cli
from ferkit.engine import sweep as S
from ferkit.engine.config import load_config
from ferkit.engine.trainer import train

from conftest import make_fer_slice

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
FAST = ["model=lenet", "batch_size=32", "threads=1", "tta=none", "augment=none"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-epoch LeNet run and a 2 x 1 sweep on a real 20-per-class FER2013 slice."""
    root = tmp_path_factory.mktemp("report")
    data = make_fer_slice(root / "fer", 20)
    train(load_config(None, [f"data={data}", "epochs=2", *FAST]), root / "run")
    sweep = S.load_sweep(["lr=0.01,0.002"], seeds=[0], overrides=[f"data={data}", "epochs=1", "optimizer=adam", *FAST])
    S.run_sweep(sweep, root / "sweep")
    return {"run": root / "run", "sweep": root / "sweep", "data": data}


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through selenium (Debian's chromium + chromium-driver)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,2400"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _self_contained(text: str) -> list[str]:
    """The page's image sources, after checking that nothing is fetched from anywhere."""
    assert "<link" not in text and "<script" not in text and "@import" not in text and "url(" not in text
    srcs = re.findall(r'<img src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    return srcs


def _open(browser, page: Path, shot: Path) -> list[dict]:
    browser.get(page.resolve().as_uri())
    browser.execute_script("return document.readyState")
    imgs = browser.execute_script(
        "return Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete, w: i.naturalWidth, h: i.naturalHeight}))")
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    return imgs


def test_run_report_is_one_offline_file_that_renders(runs, browser, tmp_path, capsys):
    run = runs["run"]
    assert cli(["report", str(run)]) == 0
    page = run / "report.html"
    assert f"wrote {page}" in capsys.readouterr().out
    text = page.read_text()
    assert len(_self_contained(text)) == 4
    assert 'name="viewport"' in text  # lays out at the phone's width
    for heading in ("Learning curves", "Evaluation: test (FER2013 PrivateTest)", "Per class", "Calibration", "ECE (15 bins)",
                    "With --min-confidence P", "What the model looks at", "Resolved config", "Environment"):
        assert heading in text, heading
    for fact in ("model: lenet", "epochs: 2", "python", "torch", "cpu", "ferkit"):
        assert fact in text, fact
    assert (run / "eval_test" / "metrics.json").is_file()  # no evaluation existed: made now, kept for next time

    imgs = _open(browser, page, tmp_path / "run_report.png")
    assert [i["alt"] for i in imgs] == ["learning curves", "confusion matrix", "reliability diagram", "saliency grid"]
    assert all(i["ok"] and i["w"] > 0 and i["h"] > 0 for i in imgs), imgs

    # a second report re-uses that evaluation
    stamp = (run / "eval_test" / "metrics.json").stat().st_mtime_ns
    assert cli(["report", str(run), "--out", str(tmp_path / "again.html")]) == 0
    assert (run / "eval_test" / "metrics.json").stat().st_mtime_ns == stamp


def test_run_report_labels_each_figure_with_the_images_it_shows(runs, tmp_path, caplog):
    """The evaluation covers the whole split, explain's galleries a --limit sample: each figure says which images."""
    import json
    import logging

    run = tmp_path / "run"
    shutil.copytree(runs["run"], run)  # the module's run folder stays as the other tests expect it
    assert cli(["explain", "--model", str(run), "--data", str(runs["data"]), "--limit", "60", "--n", "2",
                "--out", str(run / "explain")]) == 0
    with caplog.at_level(logging.WARNING):
        assert cli(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    text = (tmp_path / "r.html").read_text()
    ev = json.loads((run / "eval_test" / "metrics.json").read_text())
    gal = json.loads((run / "explain" / "galleries.json").read_text())
    assert ev["n"] == 140 and gal["n"] == 60
    assert (f"galleries from explain/: 60 of 140 test (FER2013 PrivateTest) images (stratified sample, seed 0); "
            f"accuracy on them {100 * gal['accuracy']:.2f}% (the evaluation above: 140 images, "
            f"{100 * ev['accuracy']:.2f}%)") in text
    assert "saliency: 8 of the 140 test (FER2013 PrivateTest) images (one per class in turn, seed 0)" in text
    assert len(_self_contained(text)) == 7  # curves, confusion matrix, reliability, saliency grid and the three galleries
    # a class the model never predicts (a 2-epoch LeNet on 140 images leaves some out) is called out, page and log
    assert ev["never_predicted"]
    note = f"the model never predicts {', '.join(ev['never_predicted'])} on these images (F1 = 0)"
    assert note in text and note in caplog.text


def test_sweep_report_renders_table_and_plots(runs, browser, tmp_path):
    page = tmp_path / "sweep.html"
    assert cli(["report", str(runs["sweep"]), "--out", str(page)]) == 0
    text = page.read_text()
    assert len(_self_contained(text)) == 2
    assert "<td>lr-0.01</td>" in text and "<td>lr-0.002</td>" in text and "Sweep definition" in text
    imgs = _open(browser, page, tmp_path / "sweep_report.png")
    assert [i["alt"] for i in imgs] == ["validation curves", "accuracy bars"]
    assert all(i["ok"] and i["w"] > 0 for i in imgs), imgs


def test_report_on_a_folder_that_is_not_a_run(runs, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert cli(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}: neither a run folder" in err and "nor a sweep folder" in err
    assert cli(["report", str(runs["data"])]) == 1  # a dataset folder is not a run either
    assert cli(["report", str(tmp_path / "missing")]) == 1
    assert "missing: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def _marks(png: bytes, rgb: tuple[int, int, int]) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of each blob of one colour in a PNG, as connected pixels within a small tolerance."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].astype(int)
    mask = (np.abs(img - np.array(rgb)).max(axis=2) < 40).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    return [tuple(int(v) for v in stats[i, :4]) for i in range(1, n)]


def test_a_one_epoch_run_reports_the_lr_it_trained_at_and_shows_its_points(runs, tmp_path):
    """One epoch of cosine decay from 0.01: the table says 0.01 (not the 0 the schedule ends at), and the learning
    curves, one point each, show that point (a line through one point draws nothing)."""
    import base64
    import csv

    run = tmp_path / "one"
    train(load_config(None, [f"data={runs['data']}", "epochs=1", "lr=0.01", "scheduler=cosine", *FAST]), run)
    with open(run / "metrics.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["lr"]) == pytest.approx(0.01)
    assert cli(["report", str(run)]) == 0
    text = (run / "report.html").read_text()
    table = text[text.index("<h2>Learning curves</h2>"):text.index("<h2>", text.index("<h2>Learning curves</h2>") + 5)]
    assert "<td>1</td><td>0.01</td>" in table.replace("\n", "")
    curves = base64.b64decode(re.search(r'<img src="data:image/png;base64,([^"]*)" alt="learning curves"', text)[1])
    import cv2
    import numpy as np

    width = cv2.imdecode(np.frombuffer(curves, np.uint8), cv2.IMREAD_COLOR).shape[1]
    for colour, panels in (((31, 119, 180), ("loss", "accuracy")), ((255, 127, 14), ("loss",))):  # train (C0), val (C1)
        dots = [(x, y, w, h) for x, y, w, h in _marks(curves, colour) if h >= 5 and w >= 5]  # a line is 2 px thick
        for panel in panels:  # the epoch's point, and the marker beside its name in the legend
            left = panel == "loss"
            assert sum((x + w / 2 < width / 2) == left for x, y, w, h in dots) >= 2, (colour, panel, _marks(curves, colour))
