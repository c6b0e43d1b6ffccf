"""``ferkit data stats|split|balance|relabel|convert`` on real FER2013 slices: no file lost (FER2013's own
name collisions included), the input untouched, refusal of non-new outputs, counts printed, stratified
seeded splits, balancing to the target, and a lossless CSV -> folder -> CSV round trip."""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import random
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import FER_ROOT, PHOTOS, make_fer_slice

from ferkit.app.cli import main
from ferkit.data.readers import read_fer2013_csv, read_image_folder
from ferkit.data.tools import balance_dataset, convert_dataset, dataset_stats, relabel_dataset, split_dataset
from ferkit.labels import FER2013

# FER2013 uses these names twice in train/, in different classes, for different images (SOURCE.md)
COLLISIONS = {"Training_52789098.jpg": ("neutral", "surprise"), "Training_8475486.jpg": ("angry", "surprise")}
PER_CLASS = {"angry": 6, "disgust": 3, "fear": 5, "happy": 10, "neutral": 6, "sad": 5, "surprise": 6}


def digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """``{relative path: content hash}`` of every file under ``root``."""
    return {p.relative_to(root).as_posix(): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def contents(root: Path) -> Counter:
    return Counter(tree(root).values())


def class_of(rel: str) -> str:
    return rel.split("/")[-2]


@pytest.fixture(scope="module")
def fer(tmp_path_factory) -> Path:
    """An imbalanced real FER2013 slice (Kaggle layout, 41 files per split) plus FER2013's four
    colliding train files: 127 files. Never written to by the tests (each checks that)."""
    root = make_fer_slice(tmp_path_factory.mktemp("tools") / "fer", PER_CLASS, seed=3)
    for name, classes in COLLISIONS.items():
        for c in classes:
            shutil.copyfile(FER_ROOT / "train" / c / name, root / "train" / c / name)
    return root


@pytest.fixture()
def untouched(fer):
    """Fails the test if the input tree changed in any way."""
    before = tree(fer)
    yield
    assert tree(fer) == before, "a tool modified its input"


def labels_by_content(root: Path) -> dict[str, set[str]]:
    out = defaultdict(set)
    for rel, h in tree(root).items():
        out[h].add(class_of(rel))
    return out


# ------------------------------------------------------------------ the data itself


def test_fer2013_train_has_two_file_names_used_in_two_classes():
    seen = defaultdict(list)
    for p in (FER_ROOT / "train").glob("*/*.jpg"):
        seen[p.name].append(p.parent.name)
    dup = {n: tuple(sorted(c)) for n, c in seen.items() if len(c) > 1}
    assert dup == COLLISIONS
    for name, (a, b) in dup.items():  # different images under one name
        assert digest(FER_ROOT / "train" / a / name) != digest(FER_ROOT / "train" / b / name)


# ------------------------------------------------------------------ stats


def test_stats_table_csv_and_plot_through_the_cli(fer, tmp_path, capsys, untouched):
    rc = main(["data", "stats", str(fer), "--csv", str(tmp_path / "counts.csv"), "--plot", str(tmp_path / "counts.png")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "127 images, 48x48, grey, 7 classes" in out
    # train holds the slice plus the colliding files: neutral 6+1, surprise 6+2, angry 6+1
    assert re.search(r"surprise\s+8\s+6\s+6\s+20", out), out
    assert re.search(r"total\s+45\s+41\s+41\s+127", out), out
    with open(tmp_path / "counts.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["class", "train", "val", "test", "total"]
    assert ["happy", "10", "10", "10", "30"] in rows and rows[-1] == ["total", "45", "41", "41", "127"]
    png = cv2.imread(str(tmp_path / "counts.png"))
    assert png is not None and png.shape[0] > 100
    # the same from Python, mapped to 5 classes
    st = dataset_stats(fer, labels="fer5")
    assert st.counts["train"] == {"angry": 7, "happy": 10, "neutral": 7, "sad": 5, "surprise": 8}


# ------------------------------------------------------------------ split


def test_split_is_stratified_seeded_and_loses_nothing(fer, tmp_path, untouched):
    rep = split_dataset(fer, tmp_path / "s0", val=0.2, test=0.2, seed=0)
    out = tmp_path / "s0"
    assert rep.files_in == rep.files_out == 127 and not rep.skipped
    assert contents(out) == contents(fer)  # every file, byte for byte, colliding names included
    labels = labels_by_content(fer)
    per = defaultdict(Counter)
    for rel, h in tree(out).items():
        assert class_of(rel) in labels[h]  # a file keeps its class
        per[class_of(rel)][rel.split("/")[0]] += 1
    pooled = Counter(class_of(r) for r in tree(fer))
    for c, n in pooled.items():  # stratified: each class dealt 60/20/20 (rounded half up)
        assert per[c]["val"] == per[c]["test"] == math.floor(n * 0.2 + 0.5), (c, per[c])
    # the output reads back exactly as reported, whatever the Kaggle prefixes said before
    back = read_image_folder(out)
    assert back.class_counts() == {s: {c: rep.counts[s].get(c, 0) for c in FER2013} for s in ("train", "val", "test")}
    assert any(Path(s).name.startswith("train_PublicTest_") for s in back.sources)

    split_dataset(fer, tmp_path / "s0_again", val=0.2, test=0.2, seed=0)
    split_dataset(fer, tmp_path / "s1", val=0.2, test=0.2, seed=1)
    assert tree(tmp_path / "s0_again") == tree(out)  # same seed, same split
    assert tree(tmp_path / "s1") != tree(out)


def test_split_only_from_train_keeps_val_and_test(fer, tmp_path, untouched):
    rep = split_dataset(fer, tmp_path / "carve", val=0.25, test=0, seed=0, from_splits=["train"])
    back = read_image_folder(tmp_path / "carve").class_counts()
    assert back["test"] == {c: PER_CLASS[c] for c in FER2013}  # PrivateTest untouched
    # per class, round(n * 0.25) half up of the train files (7, 3, 5, 10, 7, 5, 8) joins the 41 PublicTest files
    assert back["val"] == {"angry": 6 + 2, "disgust": 3 + 1, "fear": 5 + 1, "happy": 10 + 3, "neutral": 6 + 2,
                           "sad": 5 + 1, "surprise": 6 + 2}
    assert rep.files_out == 127


def test_split_keeps_both_files_when_a_relabel_puts_one_name_twice_in_a_class(fer, tmp_path):
    """labels.csv moves surprise/Training_52789098.jpg to neutral, where a different image has that name."""
    src = tmp_path / "relabelled"
    shutil.copytree(fer, src)
    (src / "labels.csv").write_text("file,label\ntrain/surprise/Training_52789098.jpg,neutral\n")
    before = tree(src)
    rep = split_dataset(src, tmp_path / "out", val=0, test=0, seed=0)
    assert tree(src) == before
    out = tree(tmp_path / "out")
    neutral = {r: h for r, h in out.items() if r.startswith("train/neutral/Training_52789098")}
    assert sorted(neutral) == ["train/neutral/Training_52789098-1.jpg", "train/neutral/Training_52789098.jpg"]
    both = {before[f"train/{c}/Training_52789098.jpg"] for c in ("neutral", "surprise")}
    assert set(neutral.values()) == both
    assert len(rep.renamed) == 1 and rep.renamed[0][1] == "train/neutral/Training_52789098-1.jpg"
    assert rep.files_out == len(out) == 127  # labels.csv is an instruction, not a sample


def test_split_of_a_csv_writes_lossless_png(fer, tmp_path):
    convert_dataset(fer, tmp_path / "fer.csv")
    rep = split_dataset(tmp_path / "fer.csv", tmp_path / "out", val=0.1, test=0.1, seed=0)
    assert rep.files_out == 127 and all(p.suffix == ".png" for p in (tmp_path / "out").rglob("*") if p.is_file())
    src = read_fer2013_csv(tmp_path / "fer.csv")
    back = read_image_folder(tmp_path / "out")
    key = Counter((im.tobytes(), lab) for im, lab in zip(src.images, src.labels))
    assert Counter((im.tobytes(), lab) for im, lab in zip(back.images, back.labels)) == key


# ------------------------------------------------------------------ balance


def test_balance_reaches_the_target_with_augmented_copies(fer, tmp_path, untouched):
    rep = balance_dataset(fer, tmp_path / "bal", seed=0)
    out = tmp_path / "bal"
    files = tree(out)
    train = Counter(class_of(r) for r in files if r.startswith("train/"))
    assert train == {c: 10 for c in FER2013}  # every class raised to the largest (happy, 10)
    assert rep.augmented == {"angry": 3, "disgust": 7, "fear": 5, "neutral": 3, "sad": 5, "surprise": 2}
    # originals are all there, unchanged and under their names (colliding names in their own classes)
    fer_files = tree(fer)
    assert all(files[r] == h for r, h in fer_files.items())
    new = sorted(set(files) - set(fer_files))
    assert len(new) == sum(rep.augmented.values()) and rep.files_out == 127 + len(new)
    for rel in new:
        m = re.fullmatch(r"train/(\w+)/(.+)_aug(\d{3})\.png", rel)
        assert m, rel
        source = out / "train" / m[1] / f"{m[2]}.jpg"
        assert source.is_file()  # named after an original of the same class
        aug, orig = cv2.imread(str(out / rel), cv2.IMREAD_UNCHANGED), cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
        assert aug.shape == orig.shape == (48, 48)
        assert not np.array_equal(aug, orig)  # really augmented
    # disgust has 3 originals for 7 copies: each is used 2 or 3 times
    used = Counter(re.sub(r"_aug\d+\.png$", "", Path(r).name) for r in new if "/disgust/" in r)
    assert sorted(used.values()) == [2, 2, 3]
    # val and test are copied as they are
    assert Counter(r.split("/")[0] for r in files if not r.startswith("train/")) == {"test": 82}

    balance_dataset(fer, tmp_path / "bal_again", seed=0)
    assert tree(tmp_path / "bal_again") == files  # seeded


def test_balance_multiplier_and_numeric_target(fer, tmp_path, capsys):
    assert main(["data", "balance", str(fer), "--out", str(tmp_path / "x2"), "--multiplier", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {127 + 7 * 20 - 45} files to {tmp_path / 'x2'}" in printed
    train = Counter(class_of(r) for r in tree(tmp_path / "x2") if r.startswith("train/"))
    assert train == {c: 20 for c in FER2013}
    rep = balance_dataset(fer, tmp_path / "t8", target=8)
    train = Counter(class_of(r) for r in tree(tmp_path / "t8") if r.startswith("train/"))
    assert train == {"angry": 8, "disgust": 8, "fear": 8, "happy": 10, "neutral": 8, "sad": 8, "surprise": 8}
    assert "happy" not in rep.augmented  # classes above the target keep all their files, nothing dropped


# ------------------------------------------------------------------ relabel


def test_relabel_merge_keeps_colliding_files_and_drops_only_on_request(fer, tmp_path, capsys, untouched):
    rc = main(["data", "relabel", str(fer), "--map", "surprised=neutral", "--out", str(tmp_path / "merged"), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "1 name collision(s)" in printed and "train/neutral/Training_52789098-1.jpg" in printed
    out = tree(tmp_path / "merged")
    assert Counter(out.values()) == contents(fer)  # files in == files out
    assert not any(class_of(r) == "surprise" for r in out)
    assert sum(class_of(r) == "neutral" for r in out) == 6 * 3 + 1 + 6 * 3 + 2

    rep = relabel_dataset(fer, tmp_path / "fer5", to="fer5")
    assert rep.dropped == {"disgust": 9, "fear": 15} and rep.files_out == 127 - 24
    out5 = tree(tmp_path / "fer5")
    assert {class_of(r) for r in out5} == {"angry", "happy", "neutral", "sad", "surprise"}
    assert all(out5[r] == h for r, h in tree(fer).items() if class_of(r) not in ("disgust", "fear"))


def test_relabel_from_a_labels_csv(fer, tmp_path, untouched):
    happy = sorted((fer / "train" / "happy").iterdir())
    table = tmp_path / "map.csv"
    table.write_text(f"file,label\ntrain/happy/{happy[0].name},anger\n{happy[1].name},sadness\nmissing.jpg,fear\n"
                     "train/surprise/Training_8475486.jpg,angry\n")
    rep = relabel_dataset(fer, tmp_path / "out", labels_csv=table)
    out = tree(tmp_path / "out")
    assert Counter(out.values()) == contents(fer)
    assert f"train/angry/{happy[0].name}" in out and f"train/sad/{happy[1].name}" in out
    # surprise/Training_8475486.jpg moved into angry, which already has a different Training_8475486.jpg
    assert {out["train/angry/Training_8475486.jpg"], out["train/angry/Training_8475486-1.jpg"]} == {
        digest(fer / "train/angry/Training_8475486.jpg"), digest(fer / "train/surprise/Training_8475486.jpg")}
    assert any("missing.jpg" in n for n in rep.notes)  # a row that matches nothing is reported


# ------------------------------------------------------------------ convert


def _original_csv(path: Path, root: Path) -> None:
    """The original fer2013.csv format from the real JPEGs: Training rows, then PublicTest, then PrivateTest."""
    order = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
    files = sorted(root.rglob("*.jpg"), key=lambda p: (order[p.name.split("_")[0]], p.as_posix()))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            w.writerow([FER2013.index(f.parent.name), " ".join(map(str, img.ravel())), f.name.split("_")[0]])


def test_convert_csv_to_folder_to_csv_round_trip(fer, tmp_path):
    original = tmp_path / "fer2013.csv"
    _original_csv(original, fer)
    rep = convert_dataset(original, tmp_path / "images")
    assert rep.files_in == rep.files_out == 127
    files = sorted(p.relative_to(tmp_path / "images").as_posix() for p in (tmp_path / "images").rglob("*.png"))
    assert "train/angry/Training_0.png" in files and len(files) == 127
    assert all(re.fullmatch(r"(train/\w+/Training|test/\w+/(PublicTest|PrivateTest))_\d+\.png", f) for f in files)
    src = read_fer2013_csv(original)
    back = read_image_folder(tmp_path / "images")
    for f, img, lab, split in zip(back.sources, back.images, back.labels, back.split):
        row = int(re.search(r"_(\d+)\.png$", f)[1])
        np.testing.assert_array_equal(img, src.images[row])  # PNG is lossless
        assert (lab, split) == (src.labels[row], src.split[row])

    rep2 = convert_dataset(tmp_path / "images", tmp_path / "again" / "fer2013.csv")
    assert rep2.files_out == 127 and rep2.counts["PublicTest"]["happy"] == 10
    assert (tmp_path / "again" / "fer2013.csv").read_bytes() == original.read_bytes()  # the same file


def test_convert_folder_to_csv_keeps_colliding_files(fer, tmp_path, capsys, untouched):
    assert main(["data", "convert", str(fer), "--out", str(tmp_path / "csvdir"), "--no-progress"]) == 0
    assert f"wrote 127 rows to {tmp_path / 'csvdir' / 'fer2013.csv'}" in capsys.readouterr().out
    data = read_fer2013_csv(tmp_path / "csvdir" / "fer2013.csv")
    want = Counter((cv2.imread(str(fer / r), cv2.IMREAD_GRAYSCALE).tobytes(), FER2013.index(class_of(r))) for r in tree(fer))
    assert Counter((im.tobytes(), lab) for im, lab in zip(data.images, data.labels)) == want


def test_convert_rgb_images_of_another_size_to_csv_with_a_notice(tmp_path, caplog):
    rng = random.Random(0)
    photo = cv2.cvtColor(cv2.imread(str(PHOTOS / "two_people.jpg")), cv2.COLOR_BGR2RGB)
    crops = {}
    for c in ("happy", "sad"):
        for k in range(3):
            y, x = rng.randint(0, 400), rng.randint(0, 900)
            crop = cv2.resize(photo[y:y + 200, x:x + 200], (64, 64), interpolation=cv2.INTER_AREA)
            (tmp_path / "rgb" / c).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "rgb" / c / f"{k}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            crops[(c, k)] = crop
    with caplog.at_level(logging.WARNING):
        rep = convert_dataset(tmp_path / "rgb", tmp_path / "rgb.csv")
    assert any("converted to grey" in n and "resized to 48x48" in n for n in rep.notes)
    assert "converted to grey" in caplog.text
    data = read_fer2013_csv(tmp_path / "rgb.csv")
    assert data.images.shape == (6, 48, 48)
    for i, (c, k) in enumerate(sorted(crops, key=lambda ck: (ck[1], ck[0]))):  # rows by file name, then path
        want = cv2.resize(cv2.cvtColor(crops[(c, k)], cv2.COLOR_RGB2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(data.images[i], want)
        assert data.label_names[data.labels[i]] == c


# ------------------------------------------------------------------ refusals and bad input


TOOLS = {
    "split": lambda d, o: split_dataset(d, o),
    "balance": lambda d, o: balance_dataset(d, o),
    "relabel": lambda d, o: relabel_dataset(d, o, to="fer5"),
    "convert": lambda d, o: convert_dataset(d, o),
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_tools_refuse_a_non_empty_output_and_any_output_in_the_input(fer, tmp_path, tool, untouched):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="busy.*not empty"):
        TOOLS[tool](fer, busy)
    assert (busy / "keep.txt").read_text() == "user data" and len(list(busy.iterdir())) == 1
    for inside in (fer, fer / "out", fer / "train" / "happy" / "new"):
        with pytest.raises(FileExistsError, match="input"):
            TOOLS[tool](fer, inside)
    assert not list(tmp_path.glob(".*partial*"))  # nothing left behind
    # the CLI says it in one line
    args = {"relabel": ["--to", "fer5"]}.get(tool, [])
    assert main(["data", tool, str(fer), "--out", str(busy), "--no-progress", *args]) == 1


def test_cli_error_for_output_inside_the_input_is_one_line(fer, capsys, untouched):
    assert main(["data", "split", str(fer), "--out", str(fer / "split")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ferkit data: error:") and str(fer / "split") in err and "\n" not in err


def test_an_unreadable_input_file_is_reported_and_skipped(fer, tmp_path, caplog):
    src = tmp_path / "with_bad"
    shutil.copytree(fer, src)
    good = next((src / "train" / "fear").iterdir())
    (src / "train" / "fear" / "Training_cut.jpg").write_bytes(good.read_bytes()[:300])  # truncated JPEG
    (src / "train" / "fear" / "Training_empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        rep = split_dataset(src, tmp_path / "out", seed=0)
    assert rep.files_in == rep.files_out == 127
    assert len(rep.skipped) == 2 and "Training_cut.jpg" in " ".join(rep.skipped) and "Training_empty.jpg" in caplog.text
    assert "2 unreadable input(s) skipped" in rep.format()
    assert Counter(tree(tmp_path / "out").values()) == contents(fer)
