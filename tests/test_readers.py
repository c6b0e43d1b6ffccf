"""Dataset readers on real data: the FER2013 CSV rebuilt from the real JPEGs, the Kaggle folder layout,
RGB photo folders of other sizes and class names, labels.csv, FER+ votes through the join table, label
synonyms, the decoded cache, and bad input (each reported by file and skipped, or a clear error)."""

from __future__ import annotations

import csv
import functools
import logging
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import FER_ROOT, PHOTOS, make_fer_slice, make_png_bomb

from ferkit.data import readers
from ferkit.data.readers import load_dataset, read_fer2013_csv, read_ferplus, read_image_folder
from ferkit.labels import FER5, FER2013, FERPLUS

FERPLUS_DIR = FER_ROOT / "ferplus"
USAGE_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
# FER2013 uses these two file names twice, in different classes, for different images (SOURCE.md)
COLLIDING = ("Training_52789098.jpg", "Training_8475486.jpg")


def grey(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert img is not None, path
    return img


def kaggle_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.jpg"))


def write_fer_csv(path: Path, root: Path, files: list[Path], pixel_rows: dict[int, str] | None = None) -> list[dict]:
    """Write ``files`` (Kaggle-layout JPEGs under ``root``) as a CSV in the original fer2013.csv format:
    emotion index in FER2013 order, 48*48 space-separated grey pixels, Usage from the file-name prefix.
    ``pixel_rows`` replaces the pixel text of some data rows (0-based) to make bad input."""
    rows = []
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for i, f in enumerate(files):
            img = grey(f)
            usage = f.name.split("_")[0]
            text = " ".join(str(v) for v in img.ravel())
            if pixel_rows and i in pixel_rows:
                text = pixel_rows[i]
            w.writerow([FER2013.index(f.parent.name), text, usage])
            rows.append({"file": f, "image": img, "label": f.parent.name, "split": USAGE_SPLIT[usage]})
    return rows


@pytest.fixture(scope="module")
def slice5(tmp_path_factory) -> Path:
    """5 real FER2013 images per class per split (105 files), Kaggle layout; read-only for the tests."""
    return make_fer_slice(tmp_path_factory.mktemp("slice5") / "fer", 5, seed=1)


# ------------------------------------------------------------------ FER2013 CSV


def test_csv_reader_reads_the_original_fer2013_format(slice5, tmp_path):
    files = kaggle_files(slice5)
    random.Random(0).shuffle(files)  # rows in any order, splits interleaved
    rows = write_fer_csv(tmp_path / "fer2013.csv", slice5, files)
    data = read_fer2013_csv(tmp_path / "fer2013.csv")
    assert len(data) == 105 and data.images.shape == (105, 48, 48) and data.images.dtype == np.uint8
    assert data.label_names == FER2013
    for i, r in enumerate(rows):
        assert data.sources[i] == f"fer2013.csv:{i + 2}"  # header is line 1
        assert data.label_names[data.labels[i]] == r["label"]
        assert data.split[i] == r["split"]
        np.testing.assert_array_equal(data.images[i], r["image"])
    # Training / PublicTest / PrivateTest -> train / val / test, 5 per class each
    assert data.class_counts() == {s: {c: 5 for c in FER2013} for s in ("train", "val", "test")}
    # the dispatcher reads the same CSV the same way
    again = load_dataset(tmp_path / "fer2013.csv")
    np.testing.assert_array_equal(again.images, data.images)
    np.testing.assert_array_equal(again.labels, data.labels)


def test_csv_without_usage_column_is_all_train(slice5, tmp_path):
    files = kaggle_files(slice5)[:10]
    with open(tmp_path / "plain.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels"])
        for f in files:
            w.writerow([FER2013.index(f.parent.name), " ".join(map(str, grey(f).ravel()))])
    data = read_fer2013_csv(tmp_path / "plain.csv")
    assert data.splits() == ["train"] and len(data) == 10
    assert [data.label_names[i] for i in data.labels] == [f.parent.name for f in files]


# ------------------------------------------------------------------ image folders


def test_kaggle_folder_layout_prefixes_become_val_and_test(slice5):
    data = read_image_folder(slice5)
    assert data.label_names == FER2013  # the 7 FER2013 folders get FER2013's index order
    assert data.image_size == (48, 48) and data.channels == 1
    assert data.class_counts() == {s: {c: 5 for c in FER2013} for s in ("train", "val", "test")}
    for src, split, lab, img in zip(data.sources, data.split, data.labels, data.images):
        name = Path(src).name
        expected = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}[name.split("_")[0]]
        assert split == expected, src
        assert data.label_names[lab] == Path(src).parent.name
        np.testing.assert_array_equal(img, grey(slice5 / src))


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    return tuple(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(PHOTOS.glob("*.jpg")))


def _photo_crops(n: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """``n`` RGB crops of the real photos, resized to ``size`` (w, h)."""
    rng = random.Random(seed)
    photos = _photos()
    out = []
    for _ in range(n):
        img = rng.choice(photos)
        h, w = img.shape[:2]
        side = rng.randint(120, min(h, w) // 2)
        y, x = rng.randint(0, h - side), rng.randint(0, w - side)
        out.append(cv2.resize(img[y:y + side, x:x + side], size, interpolation=cv2.INTER_AREA))
    return out


def _save_rgb(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


@pytest.mark.parametrize("layout", ["flat_5_classes", "splits_8_classes"])
def test_rgb_photo_folder_any_size_and_class_names(tmp_path, layout):
    if layout == "flat_5_classes":
        classes = ["apple", "kiwi", "lemon", "mango", "plum"]
        dirs = [("", "train")]
    else:
        classes = ["c1_calm", "c2_bored", "c3_eager", "c4_proud", "c5_shy", "c6_tired", "c7_upset", "c8_zen"]
        dirs = [("train/", "train"), ("valid/", "val")]  # "valid" is a val alias
    root = tmp_path / "photos_ds"
    crops = iter(_photo_crops(len(classes) * len(dirs) * 3, (64, 64), seed=3))
    odd = _photo_crops(2, (80, 100), seed=4)  # a few files of another size, resized to the common one
    expect = {}
    for prefix, split in dirs:
        for c in classes:
            for k in range(3):
                rel = f"{prefix}{c}/img{k}.png"
                img = next(crops)
                _save_rgb(root / rel, img)
                expect[rel] = (img, c, split)
    for k, img in enumerate(odd):
        rel = f"{dirs[0][0]}{classes[0]}/odd{k}.png"
        _save_rgb(root / rel, img)
        expect[rel] = (cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA), classes[0], dirs[0][1])

    data = read_image_folder(root)
    assert data.label_names == tuple(classes)  # unknown vocabularies: sorted folder names
    assert data.channels == 3 and data.image_size == (64, 64)
    assert len(data) == len(expect)
    for src, img, lab, split in zip(data.sources, data.images, data.labels, data.split):
        want, c, s = expect[src]
        np.testing.assert_array_equal(img, want)  # RGB order, not OpenCV's BGR
        assert data.label_names[lab] == c and split == s
    # grey on request: the one colour conversion, same sizes
    g = read_image_folder(root, channels=1, image_size=32)
    assert g.images.shape == (len(expect), 32, 32)


def test_labels_csv_overrides_folder_labels(slice5, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(slice5, root)
    train_angry = sorted((root / "train" / "angry").iterdir())
    test_fear = sorted((root / "test" / "fear").iterdir())
    moves = {
        f"train/angry/{train_angry[0].name}": "happiness",  # path relative to the root, synonym label
        f"angry/{train_angry[1].name}": "sad",  # path below the split folder
        test_fear[0].name: "surprised",  # a unique bare file name
    }
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        w.writerows(moves.items())
    data = read_image_folder(root)
    got = {s: data.label_names[lab] for s, lab in zip(data.sources, data.labels)}
    assert got[f"train/angry/{train_angry[0].name}"] == "happy"
    assert got[f"train/angry/{train_angry[1].name}"] == "sad"
    assert got[f"test/fear/{test_fear[0].name}"] == "surprise"
    changed = {s for s in got if got[s] != Path(s).parent.name}
    assert len(changed) == 3  # nothing else moved
    assert len(data) == 105


def test_labels_csv_bare_name_used_twice_is_not_applied(tmp_path):
    """FER2013's two colliding names in a flat layout: a bare name matching two files changes neither."""
    root = tmp_path / "flat"
    for name in COLLIDING:
        for f in (FER_ROOT / "train").glob(f"*/{name}"):
            (root / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, root / f.parent.name / name)
    (root / "labels.csv").write_text("file,label\nTraining_52789098.jpg,angry\nsurprise/Training_8475486.jpg,fear\n")
    data = read_image_folder(root, label_names=FER2013)
    got = {s: data.label_names[lab] for s, lab in zip(data.sources, data.labels)}
    assert got == {
        "neutral/Training_52789098.jpg": "neutral",
        "surprise/Training_52789098.jpg": "surprise",
        "angry/Training_8475486.jpg": "angry",
        "surprise/Training_8475486.jpg": "fear",  # a path names exactly one file
    }


# ------------------------------------------------------------------ FER+ votes


def _ferplus_slice(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, np.ndarray]]:
    """A real FER2013 slice plus fer2013new.csv / jpg_to_ferplus.csv filtered to it (rows re-indexed).

    Returns (image root, votes CSV, join CSV, {jpg_path: votes of its row}).
    """
    root = make_fer_slice(tmp_path / "fer", 8, seed=2)
    # two special real cases: a JPEG with no FER+ row, and one whose FER+ name is used by two rows
    for rel in ("test/angry/PublicTest_5543497.jpg", "test/neutral/PrivateTest_15353271.jpg"):
        shutil.copyfile(FER_ROOT / rel, root / rel)
    present = {p.relative_to(root).as_posix() for p in root.rglob("*.jpg")}
    with open(FERPLUS_DIR / "jpg_to_ferplus.csv", newline="") as fh:
        join = [r for r in csv.DictReader(fh) if r["jpg_path"] in present]
    assert len(join) == len(present)
    with open(FERPLUS_DIR / "fer2013new.csv", newline="") as fh:
        vrows = list(csv.reader(fh))
    header, body = vrows[0], vrows[1:]
    needed = sorted({int(i) for r in join for i in r["fer2013_rows"].split(";") if i})
    new_index = {old: new for new, old in enumerate(needed)}
    votes_csv, join_csv = tmp_path / "fer2013new.csv", tmp_path / "join.csv"
    with open(votes_csv, "w", newline="") as fh:
        csv.writer(fh).writerows([header] + [body[i] for i in needed])
    expected = {}
    with open(join_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(join[0]))
        w.writeheader()
        for r in join:
            olds = [int(i) for i in r["fer2013_rows"].split(";") if i]
            w.writerow({**r, "fer2013_rows": ";".join(str(new_index[i]) for i in olds)})
            if olds:  # the later row of a reused FER+ name holds that image's votes (JOIN.md)
                expected[r["jpg_path"]] = np.array(body[olds[-1]][2:12], dtype=np.float64)
    return root, votes_csv, join_csv, expected


def test_ferplus_majority_and_soft_through_the_join_table(tmp_path):
    root, votes_csv, join_csv, votes = _ferplus_slice(tmp_path)
    assert "test/angry/PublicTest_5543497.jpg" not in votes  # no FER+ row: must be dropped
    # FER+ rules, from the paper/code: single votes are noise; majority = more than half of the rest
    want_major, want_soft = {}, {}
    for rel, v in votes.items():
        v = np.where(v <= 1, 0, v)
        top = int(np.argmax(v))
        if top < 8 and v[top] > 0.5 * v.sum():
            want_major[rel] = FERPLUS[top]
        if top < 8 and v[:8].sum() > 0:
            want_soft[rel] = v[:8] / v[:8].sum()

    major = load_dataset(root, ferplus=votes_csv, join_csv=join_csv, ferplus_mode="majority")
    assert major.label_names == FERPLUS
    got = {s: major.label_names[lab] for s, lab in zip(major.sources, major.labels)}
    assert got == want_major
    assert "test/neutral/PrivateTest_15353271.jpg" not in got  # the later row of its name: all not-a-face
    for s, split, img in zip(major.sources, major.split, major.images):
        assert split == USAGE_SPLIT[Path(s).name.split("_")[0]]
        np.testing.assert_array_equal(img, grey(root / s))
    # the join is right: FER+ agrees with the FER2013 folder label far above chance (62.8% on all data)
    agree = np.mean([lab == Path(s).parent.name for s, lab in got.items()])
    assert agree > 0.45, agree

    soft = read_ferplus(votes_csv, root, join_csv=join_csv, mode="soft")
    assert set(soft.sources) == set(want_soft) and len(soft) >= len(major)
    assert soft.soft is not None and soft.soft.shape == (len(soft), 8)
    for s, dist, lab in zip(soft.sources, soft.soft, soft.labels):
        np.testing.assert_allclose(dist, want_soft[s], atol=1e-6)
        assert lab == int(np.argmax(dist))


def test_ferplus_votes_and_join_saved_by_excel_read_the_same(tmp_path):
    """fer2013new.csv and the join table saved as Excel's "CSV UTF-8" (a byte-order mark first) give the same labels."""
    root, votes_csv, join_csv, _ = _ferplus_slice(tmp_path)
    plain = load_dataset(root, ferplus=votes_csv, join_csv=join_csv, ferplus_mode="majority")
    for f in (votes_csv, join_csv):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    excel = load_dataset(root, ferplus=votes_csv, join_csv=join_csv, ferplus_mode="majority")
    assert len(plain) > 0 and list(excel.sources) == list(plain.sources) and list(excel.labels) == list(plain.labels)


def test_ferplus_row_aligned_with_a_fer2013_csv(tmp_path):
    """fer2013new.csv with the original CSV, row by row: the same labels as through the join table."""
    root, votes_csv, join_csv, _ = _ferplus_slice(tmp_path)
    with open(join_csv, newline="") as fh:
        join = sorted((int(r["fer2013_rows"].split(";")[-1]), r["jpg_path"]) for r in csv.DictReader(fh) if r["fer2013_rows"])
    # a votes file and an image CSV with exactly one row per joined image, in the same order
    with open(votes_csv, newline="") as fh:
        vrows = list(csv.reader(fh))
    aligned_votes = tmp_path / "votes_aligned.csv"
    with open(aligned_votes, "w", newline="") as fh:
        csv.writer(fh).writerows([vrows[0]] + [vrows[1 + i] for i, _ in join])
    write_fer_csv(tmp_path / "fer2013.csv", root, [root / rel for _, rel in join])
    by_csv = read_ferplus(aligned_votes, tmp_path / "fer2013.csv", mode="majority")
    by_join = read_ferplus(votes_csv, root, join_csv=join_csv, mode="majority")
    key_csv = sorted((img.tobytes(), lab) for img, lab in zip(by_csv.images, by_csv.labels))
    key_join = sorted((img.tobytes(), lab) for img, lab in zip(by_join.images, by_join.labels))
    assert key_csv == key_join and len(key_csv) > 100


# ------------------------------------------------------------------ label names


def test_label_synonyms_and_mapping_to_fer5(slice5, tmp_path):
    synonyms = {"angry": "anger", "disgust": "disgusted", "fear": "fearful", "happy": "happiness",
                "sad": "sadness", "surprise": "surprised", "neutral": "neutral"}
    root = tmp_path / "syn"
    for f in (slice5 / "train").rglob("*.jpg"):
        dest = root / synonyms[f.parent.name] / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest)
    data = read_image_folder(root)
    assert data.label_names == FER2013  # anger/happiness/... unified into the FER2013 vocabulary
    assert data.class_counts() == {"train": {c: 5 for c in FER2013}}

    five = load_dataset(root, labels="fer5")
    assert five.label_names == FER5
    assert five.class_counts() == {"train": {c: 5 for c in FER5}}  # disgust and fear dropped
    inverse = {v: k for k, v in synonyms.items()}
    for s, lab in zip(five.sources, five.labels):
        assert five.label_names[lab] == inverse[Path(s).parent.name]
    # FER2013-7 -> FER+-8 by name: every sample kept, contempt empty
    plus = data.remap("ferplus")
    assert len(plus) == len(data) and plus.class_counts()["train"]["contempt"] == 0
    assert [plus.label_names[i] for i in plus.labels] == [data.label_names[i] for i in data.labels]


# ------------------------------------------------------------------ decoded cache


def test_decoded_cache_is_reused_and_invalidated_on_change(slice5, tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ds"
    shutil.copytree(slice5, root)
    decoded = []
    real_read = readers.read_image

    def counting_read(path, channels=None):
        decoded.append(Path(path))
        return real_read(path, channels)

    monkeypatch.setattr(readers, "read_image", counting_read)
    first = read_image_folder(root)
    assert len(decoded) == 105
    decoded.clear()
    second = read_image_folder(root)
    assert decoded == []  # served from the cache
    np.testing.assert_array_equal(second.images, first.images)
    assert list(second.sources) == list(first.sources) and list(second.labels) == list(first.labels)

    # replace one image by another real one (different bytes): the cache entry is stale
    victim = sorted((root / "train" / "happy").iterdir())[0]
    other = next(f for f in sorted((FER_ROOT / "train" / "happy").iterdir()) if f.stat().st_size != victim.stat().st_size)
    shutil.copyfile(other, victim)
    third = read_image_folder(root)
    assert len(decoded) == 105
    i = list(third.sources).index(victim.relative_to(root).as_posix())
    np.testing.assert_array_equal(third.images[i], grey(other))

    # a CSV edited in place is re-read too
    files = kaggle_files(slice5)[:6]
    write_fer_csv(tmp_path / "a.csv", slice5, files)
    assert read_fer2013_csv(tmp_path / "a.csv").labels[0] == FER2013.index(files[0].parent.name)
    text = (tmp_path / "a.csv").read_text().splitlines()
    text[1] = "5," + text[1].split(",", 1)[1]  # first row becomes surprise
    (tmp_path / "a.csv").write_text("\n".join(text) + "\n")
    assert read_fer2013_csv(tmp_path / "a.csv").labels[0] == FER2013.index("surprise")


# ------------------------------------------------------------------ bad input


@pytest.mark.unit  # no data from ../shared
def test_csv_with_missing_columns_is_an_error_naming_file_and_column(tmp_path):
    bad = tmp_path / "no_pixels.csv"
    bad.write_text("emotion,Usage\n3,Training\n")
    with pytest.raises(ValueError, match=r"no_pixels\.csv.*missing column.*pixels"):
        read_fer2013_csv(bad)


def test_csv_rows_with_wrong_pixel_counts_are_skipped_by_file_and_row(slice5, tmp_path, caplog):
    files = kaggle_files(slice5)[:12]
    short = " ".join(["128"] * 2000)
    rows = write_fer_csv(tmp_path / "bad.csv", slice5, files, pixel_rows={3: short, 7: short + " 999"})
    with caplog.at_level(logging.WARNING):
        data = read_fer2013_csv(tmp_path / "bad.csv")
    assert len(data) == 10
    skipped = data.meta["skipped"]
    assert any("bad.csv:5" in m and "2000 pixels" in m for m in skipped)  # data row 3 is line 5
    assert any("bad.csv:9" in m for m in skipped)
    assert "bad.csv:5" in caplog.text
    kept = [r for i, r in enumerate(rows) if i not in (3, 7)]
    for img, r in zip(data.images, kept):
        np.testing.assert_array_equal(img, r["image"])


def test_csv_with_a_bad_first_row_still_loads_the_rest(slice5, tmp_path):
    """The image size comes from the rows, not from the first one: a damaged first row is the one skipped."""
    files = kaggle_files(slice5)[:8]
    square_but_wrong = " ".join(["7"] * (47 * 47))
    write_fer_csv(tmp_path / "first.csv", slice5, files, pixel_rows={0: square_but_wrong})
    data = read_fer2013_csv(tmp_path / "first.csv")
    assert len(data) == 7 and data.image_size == (48, 48)
    assert any("first.csv:2" in m and "2209 pixels" in m for m in data.meta["skipped"])


def _break(kind: str, folder: Path) -> Path:
    """Put one bad file of ``kind`` into a class folder of a copied slice."""
    good = sorted(folder.iterdir())[0]
    if kind == "corrupt_jpeg":
        bad = folder / "Training_truncated.jpg"
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a real JPEG cut in half
    elif kind == "zero_byte":
        bad = folder / "Training_empty.jpg"
        bad.write_bytes(b"")
    elif kind == "text_as_jpg":
        bad = folder / "Training_notes.jpg"
        bad.write_text("this is not an image, just text saved under a .jpg name\n" * 5)
    else:  # a stray non-image file
        bad = folder / "README.txt"
        bad.write_text("class notes\n")
    return bad


@pytest.mark.parametrize("kind", ["corrupt_jpeg", "zero_byte", "text_as_jpg", "stray_text_file"])
def test_folder_with_an_unreadable_file_reports_it_and_loads_the_rest(slice5, tmp_path, caplog, kind):
    root = tmp_path / "ds"
    shutil.copytree(slice5, root)
    bad = _break(kind, root / "train" / "sad")
    with caplog.at_level(logging.WARNING):
        data = read_image_folder(root)
    assert len(data) == 105  # every good file loaded
    assert bad.relative_to(root).as_posix() not in set(data.sources)
    assert len(data.meta["skipped"]) == 1 and str(bad) in data.meta["skipped"][0]
    assert str(bad) in caplog.text
    reason = {"corrupt_jpeg": "not a readable image", "zero_byte": "empty file", "text_as_jpg": "not a readable image",
              "stray_text_file": "not an image file"}[kind]
    assert reason in data.meta["skipped"][0]


def test_folder_holding_a_decompression_bomb_skips_it_unread(slice5, tmp_path, caplog):
    """A 100 KB PNG declaring 30000x30000 pixels in a class folder: reported (name, size, limit) and left out,
    without decoding it (that took 1.8 GB and added a black "happy" sample)."""
    import resource

    root = tmp_path / "ds"
    shutil.copytree(slice5, root)
    bomb = make_png_bomb(root / "train" / "happy" / "Training_bomb.png")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with caplog.at_level(logging.WARNING):
        data = read_image_folder(root)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # no GB-sized decode happened
    assert len(data) == 105 and "train/happy/Training_bomb.png" not in set(data.sources)
    reason = f"{bomb}: 30000x30000 = 900,000,000 pixels, more than the limit of 100,000,000"
    assert len(data.meta["skipped"]) == 1 and data.meta["skipped"][0].startswith(reason)
    assert reason in caplog.text
