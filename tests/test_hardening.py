"""Hardening (issue 25), on real files made in each test: symlink loops in a folder, unreadable and huge files in
a folder or dataset, checkpoints with absurd or mismatched contents, CSVs that ferkit writes or Excel saves, and an
output folder that cannot be written. Each is a one-line message naming the file, or a file reported and skipped;
never a hang, a traceback or a run that ends early."""

from __future__ import annotations

import csv
import logging
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import pytest
import torch
from conftest import FER_ROOT, PHOTOS, VIDEO, YUNET, make_fer_slice

from ferkit.app.cli import main
from ferkit.data.readers import load_dataset, read_fer2013_csv, read_image_folder, read_label_csv
from ferkit.engine.checkpoint import DEFAULT_MODEL, load_model
from ferkit.engine.classify import torch_threads
from ferkit.imageio import MAX_IMAGE_BYTES, ImageReadError, read_bgr
from ferkit.infer.distributed import expand_sources
from ferkit.infer.writers import read_jsonl
from ferkit.labels import FER2013

PHOTO = PHOTOS / "two_people.jpg"
YUNET_ARGS = ["--detector", "yunet", "--yunet", str(YUNET), "--device", "cpu"]
# A file past the byte cap, made sparse with truncate(): it costs no disk, but reading it whole took 2 GB
# (and a copy), then OpenCV's imdecode raised cv2.error and ended the run.
HUGE = 2**31 + 1


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def one_line_error(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err and "Warning" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def sparse_file(path: Path, size: int = HUGE) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# ------------------------------------------------------------------ the CLI in a process of its own

FERKIT = Path(sys.executable).with_name("ferkit")  # the console script pip installed: the real entry point
# As root, permission bits stop nobody: chmod 000 and a read-only folder stop root only without these two
# capabilities. setpriv drops them from the bounding set, so the ferkit it starts (still uid 0) has them no more.
DROP_ROOT_POWERS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _permissions_apply() -> list[str]:
    """The command prefix under which permission bits apply to ferkit (none when not root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None or subprocess.run([*DROP_ROOT_POWERS, "true"]).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop the capabilities that bypass file permissions")
    return DROP_ROOT_POWERS


def ferkit(args: list[str], cwd: Path, prefix: list[str] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [str(FERKIT)] if FERKIT.is_file() else [sys.executable, "-m", "ferkit.app.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*prefix, *cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ 1. symbolic link loops


def test_predict_on_a_folder_with_two_symlink_loops_reads_the_photo_once_and_names_the_loops(tmp_path):
    """mkdir L; cp two_people.jpg L/; ln -s . L/l1; ln -s . L/l2: `ferkit predict L` hung (os.walk followed the
    loops 40 levels deep, 2^40 paths); with one loop it read the photo 41 times."""
    root = tmp_path / "L"
    root.mkdir()
    shutil.copy(PHOTO, root / "two_people.jpg")
    (root / "l1").symlink_to(".")
    (root / "l2").symlink_to(".")
    (root / "same.jpg").symlink_to("two_people.jpg")  # one real file under two names: read once
    try:
        run = ferkit(["predict", "L", "--out", "o", *YUNET_ARGS], tmp_path, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("ferkit predict did not finish in 120 s on a folder of one photo and two symlink loops")
    assert run.returncode == 0, run.stderr
    assert "2 face(s) in 1 image(s)" in run.stdout
    records = read_jsonl(tmp_path / "o" / "results.jsonl")
    assert len(records) == 2 and {r["source"] for r in records} == {str(Path("L") / "two_people.jpg")}
    for link in ("L/l1", "L/l2"):
        assert f"{link}: a symbolic link to {root.resolve()}, a folder that holds it (a loop); not followed" in run.stderr


def test_ray_engine_lists_a_folder_as_predict_does_each_real_file_once(tmp_path, caplog):
    root = tmp_path / "L"
    (root / "sub").mkdir(parents=True)
    shutil.copy(PHOTO, root / "two_people.jpg")
    shutil.copy(VIDEO, root / "sub" / "clip.mp4")
    (root / "l1").symlink_to(".")  # a loop: was followed 40 deep, listing 41 photos and 41 clips
    (root / "again").symlink_to("sub")  # a second way into sub/: listed once, under its real name
    with caplog.at_level(logging.INFO):
        items = expand_sources([root])
    assert items == [("image", str(root / "two_people.jpg")), ("video", str(root / "sub" / "clip.mp4"))]
    real = root.resolve()
    assert caplog.text.count(f"{root / 'l1'}: a symbolic link to {real}, a folder that holds it (a loop)") == 1
    assert f"{root / 'again'}: a symbolic link to {real / 'sub'}, listed already" in caplog.text


# ------------------------------------------------------------------ 2. unreadable and huge files


@pytest.mark.unit  # no data from ../shared
def test_image_files_that_cannot_be_read_are_named_with_the_reason(tmp_path):
    """As root a chmod 000 file still reads (see the CLI tests below for real permissions); these are the other
    ways a name with an image extension holds no readable image, each an ImageReadError naming the file."""
    os.mkfifo(tmp_path / "pipe.jpg")  # reading a FIFO blocks until someone writes: never opened
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "broken.jpg").symlink_to("gone.jpg")
    sparse_file(tmp_path / "huge.jpg")
    expected = {"pipe.jpg": "not a regular file", "folder.jpg": "not a regular file",
                "broken.jpg": "no such file (a symbolic link to a missing file)",
                "huge.jpg": f"2,147,483,649 bytes, more than the {MAX_IMAGE_BYTES:,} an image file may have"}
    for name, reason in expected.items():
        with pytest.raises(ImageReadError) as info:
            read_bgr(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: {reason}"), str(info.value)


def test_predict_skips_a_2gb_file_named_jpg_with_one_warning(tmp_path, capsys, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "two_people.jpg")
    huge = sparse_file(folder / "disk_image.jpg")
    with caplog.at_level(logging.WARNING):
        assert main(["predict", str(folder), "--out", str(tmp_path / "o"), *YUNET_ARGS]) == 0
    assert "2 face(s) in 1 image(s)" in capsys.readouterr().out
    assert f"skipped {huge}: 2,147,483,649 bytes, more than the 67,108,864" in caplog.text
    assert len(read_jsonl(tmp_path / "o" / "results.jsonl")) == 2


def test_dataset_reader_skips_a_2gb_file_named_jpg(tmp_path, caplog):
    root = make_fer_slice(tmp_path / "ds", 2, seed=5)
    huge = sparse_file(root / "train" / "happy" / "Training_huge.jpg")
    with caplog.at_level(logging.WARNING):
        data = read_image_folder(root, use_cache=False)
    assert len(data) == 42 and "train/happy/Training_huge.jpg" not in data.sources
    assert len(data.meta["skipped"]) == 1 and data.meta["skipped"][0].startswith(f"{huge}: 2,147,483,649 bytes")


def _fer_slice_with_a_locked_file(tmp_path: Path) -> tuple[Path, Path]:
    root = make_fer_slice(tmp_path / "ds", 3, seed=2)
    locked = root / "train" / "happy" / "Training_locked.jpg"
    shutil.copy(next((root / "train" / "happy").iterdir()), locked)
    locked.chmod(0)
    return root, locked


@pytest.mark.parametrize("command", ["predict", "data stats", "data split", "train"])
def test_a_chmod_000_file_is_reported_and_skipped_not_a_traceback(tmp_path, command):
    """A real ``chmod 000`` file (as root, under setpriv without the capabilities that bypass permissions): it
    raised PermissionError out of np.fromfile and ended every one of these commands with a traceback."""
    prefix = _permissions_apply()
    if command == "predict":
        data = tmp_path / "photos"
        data.mkdir()
        shutil.copy(PHOTO, data / "two_people.jpg")
        locked = data / "locked.jpg"
        shutil.copy(PHOTO, locked)
        locked.chmod(0)
        args = ["predict", str(data), "--out", str(tmp_path / "o"), *YUNET_ARGS]
    else:
        data, locked = _fer_slice_with_a_locked_file(tmp_path)
        args = {"data stats": ["data", "stats", str(data)],
                "data split": ["data", "split", str(data), "--out", str(tmp_path / "split"), "--no-progress"],
                "train": ["train", f"data={data}", "model=lenet", "epochs=1", "batch_size=16", "threads=1",
                          "augment=none", "tta=none", "--out", str(tmp_path / "run"), "--no-progress"]}[command]
    run = ferkit(args, tmp_path, prefix)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    warning = [line for line in run.stderr.splitlines() if str(locked) in line]
    assert warning and f"{locked}: cannot be read (Permission denied)" in warning[0], run.stderr
    if command == "predict":
        assert "2 face(s) in 1 image(s)" in run.stdout
    elif command == "data split":
        assert sum(1 for p in (tmp_path / "split").rglob("*.jpg")) == 63  # every readable file, the locked one not
        assert not any(p.name == locked.name for p in (tmp_path / "split").rglob("*"))
    elif command == "train":
        assert (tmp_path / "run" / "best.pt").is_file()


# ------------------------------------------------------------------ 3. checkpoints


def _default_checkpoint() -> dict:
    return torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)


BAD_PREPROCESS = {
    "input_size": (100000, "preprocess input_size 100000, expected a whole number of pixels in 8..1024"),
    "channels": (2, "preprocess channels 2, expected 1 or 3"),
    "mean": ([0.5, 0.5, 0.5], "preprocess mean [0.5, 0.5, 0.5], expected 1 finite number(s)"),
    "std": ([0.0], "preprocess std [0.0], expected values > 0"),
    "label_names": (["angry"] * 7, "expected a non-empty list of distinct class names"),
    "crop_margin": (40.0, "preprocess crop_margin 40.0, expected a number in -0.5..2.0"),
    "temperature": (0.0, "temperature 0.0 out of range"),  # Preprocess's own check, now naming the file
}


@pytest.mark.unit  # no data from ../shared
@pytest.mark.parametrize("key", BAD_PREPROCESS)
def test_a_checkpoint_with_an_absurd_preprocess_value_is_refused_naming_file_and_value(tmp_path, key):
    """input_size 100000 loaded fine, then allocated 10^10 pixels a face until the kernel killed ferkit."""
    value, needle = BAD_PREPROCESS[key]
    ckpt = _default_checkpoint()
    ckpt["preprocess"][key] = value
    path = tmp_path / "bad.pt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as info:
        load_model(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: a damaged ferkit checkpoint: ") and needle in msg and "\n" not in msg, msg


@pytest.mark.unit  # no data from ../shared
def test_a_checkpoint_whose_label_names_disagree_with_its_outputs_is_refused(tmp_path):
    ckpt = _default_checkpoint()
    ckpt["preprocess"]["label_names"] = ["happy", "sad", "neutral"]
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: .*3 label_names but the model has 7 outputs"):
        load_model(tmp_path / "bad.pt")


def test_weights_that_do_not_fit_the_architecture_are_one_line_naming_it_and_the_tensors(tmp_path, capsys):
    """It was a 30-line load_state_dict RuntimeError traceback."""
    ckpt = _default_checkpoint()
    ckpt["model"]["kwargs"]["width"] = 16  # the file's tensors are for width 32
    path = tmp_path / "narrow.pt"
    torch.save(ckpt, path)
    assert main(["predict", str(PHOTO), "--model", str(path), "--out", str(tmp_path / "o"), *YUNET_ARGS]) == 1
    err = capsys.readouterr().err
    one_line_error(err, f"{path}: its weights do not fit its architecture resnet18(width=16) with 7 classes",
                   "101 tensor(s) of another shape: stem.0.weight is (32, 1, 3, 3) in the file, (16, 1, 3, 3) in the model; ",
                   " and 98 more")
    ckpt = _default_checkpoint()
    del ckpt["state_dict"]["head.1.weight"]  # a tensor lost: named as missing
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"narrow.pt: its weights do not fit .*: 1 tensor\(s\) missing: head.1.weight$"):
        load_model(path)


class Payload:
    """Any Python object: the weights-only loader refuses it."""


@pytest.mark.unit  # no data from ../shared
def test_random_bytes_are_not_a_checkpoint_file_and_torch_warns_nothing(tmp_path, capsys):
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes((i * 97 + 13) % 256 for i in range(5000)))
    obj = tmp_path / "object.pt"
    with open(obj, "wb") as fh:
        pickle.dump({"format": "ferkit", "model": Payload()}, fh, protocol=4)  # torch warns about protocol 4
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["eval", "--model", str(noise)]) == 1
        one_line_error(capsys.readouterr().err, f"{noise}: not a checkpoint file (neither a PyTorch zip archive nor a "
                       "pickle)")
        assert main(["eval", "--model", str(obj)]) == 1
        one_line_error(capsys.readouterr().err, f"{obj}: not a safe ferkit checkpoint: it holds more than tensors")
    assert [str(w.message) for w in seen] == []


# ------------------------------------------------------------------ 4. CSV files


def _write_fer_csv(path: Path, files: list[Path], encoding: str = "utf-8", extra: list[list[str]] = ()) -> None:
    with open(path, "w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            w.writerow([FER2013.index(f.parent.name), " ".join(map(str, img.ravel())), f.name.split("_")[0]])
        for row in extra:
            w.writerow(row)


def _real_faces(n: int = 6) -> list[Path]:
    return [next((FER_ROOT / "train" / c).glob("Training_*.jpg")) for c in FER2013[:n]]


def test_stats_reads_the_csv_that_convert_writes_at_200_pixels(tmp_path, capsys):
    """Each row's pixels field is 200*200*~4 = 160 KB, over csv's default 128 KB: `_csv.Error: field larger
    than field limit`."""
    root = make_fer_slice(tmp_path / "ds", 1, seed=4)
    out = tmp_path / "x.csv"
    assert main(["data", "convert", str(root), "--out", str(out), "--size", "200", "--no-progress"]) == 0
    assert main(["data", "stats", str(out)]) == 0
    assert "21" in capsys.readouterr().out  # 7 classes x 3 splits, one image each
    data = load_dataset(out, use_cache=False)
    assert data.images.shape == (21, 200, 200)


def test_an_excel_csv_with_a_byte_order_mark_loads_like_the_plain_one(tmp_path):
    files = _real_faces()
    _write_fer_csv(tmp_path / "plain.csv", files)
    _write_fer_csv(tmp_path / "excel.csv", files, encoding="utf-8-sig")  # Excel's "CSV UTF-8" starts with EF BB BF
    assert (tmp_path / "excel.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    plain, excel = (read_fer2013_csv(tmp_path / n, use_cache=False) for n in ("plain.csv", "excel.csv"))
    assert (excel.images == plain.images).all() and list(excel.labels) == list(plain.labels) == list(range(6))
    (tmp_path / "labels.csv").write_text("file,label\ntrain/a.jpg,happy\n", encoding="utf-8-sig")
    assert read_label_csv(tmp_path / "labels.csv") == {"train/a.jpg": "happy"}


def test_latin1_and_binary_csvs_are_one_line_errors_naming_the_file(tmp_path, capsys):
    latin = tmp_path / "labels_latin1.csv"
    latin.write_bytes("file,label\nanna_1.jpg,happy\nrené_1.jpg,sad\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"{latin}:3: not UTF-8 text \\(byte 0xe9\\)"):
        read_label_csv(latin)
    binary = tmp_path / "photo.csv"
    shutil.copy(PHOTO, binary)  # a JPEG renamed .csv
    assert main(["data", "stats", str(binary)]) == 1
    one_line_error(capsys.readouterr().err, f"{binary}:1: not UTF-8 text (byte 0xff)", "save it as CSV UTF-8")


def test_a_row_with_missing_fields_is_skipped_naming_file_and_line(tmp_path, caplog):
    path = tmp_path / "short.csv"
    _write_fer_csv(path, _real_faces(3), extra=[["3"]])  # line 5: an emotion and nothing else
    with caplog.at_level(logging.WARNING):
        data = read_fer2013_csv(path, use_cache=False)
    assert len(data) == 3
    assert data.meta["skipped"] == [f"{path}:5: 1 field(s), expected 3 (emotion,pixels,Usage)"]
    assert "list index out of range" not in caplog.text and f"{path}:5" in caplog.text


# ------------------------------------------------------------------ 5. an output folder that cannot be written


@pytest.mark.parametrize("command", ["predict", "data split"])
def test_out_below_a_regular_file_is_one_line_naming_the_path(tmp_path, capsys, command):
    """--out somefile.txt/sub: no folder can be made there (the in-process stand-in for a read-only folder)."""
    (tmp_path / "somefile.txt").write_text("x")
    out = tmp_path / "somefile.txt" / "sub"
    data = str(PHOTO) if command == "predict" else str(make_fer_slice(tmp_path / "ds", 1, seed=6))
    args = ["predict", data, *YUNET_ARGS] if command == "predict" else ["data", "split", data, "--no-progress"]
    assert main([*args, "--out", str(out)]) == 1
    one_line_error(capsys.readouterr().err, f"{tmp_path / 'somefile.txt'}", "choose another path")


def test_out_in_a_read_only_folder_is_one_line_naming_it(tmp_path):
    """A real read-only folder (chmod 555; as root, under setpriv without the capabilities that bypass it): an
    18-line PermissionError traceback from mkdir."""
    prefix = _permissions_apply()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    run = ferkit(["predict", str(PHOTO), "--out", str(ro / "o"), *YUNET_ARGS], tmp_path, prefix)
    assert run.returncode == 1
    one_line_error(run.stderr, f"ferkit predict: error: {ro / 'o'}: Permission denied (check the permissions")
