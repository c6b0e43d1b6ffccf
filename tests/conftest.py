"""Shared fixtures: real data from ../shared (never copied into the repository)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERKIT_SHARED", REPO.parent / "shared"))
FER_ROOT = SHARED / "data" / "fer2013"
PHOTOS = SHARED / "data" / "photos"
VIDEO = SHARED / "data" / "video" / "short_hamilton_clip.mp4"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
RECIPES = REPO / "src" / "ferkit" / "recipes"
# The shipped recipes read their data from $FERKIT_DATA: the tests' is ../shared/data (a user's setting wins).
os.environ.setdefault("FERKIT_DATA", str(SHARED / "data"))


DATA_FIXTURES = {"fer_data", "fer_slice"}  # fixtures that read ../shared: a ``unit`` test may use none of them


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects: the tiers are known from the fixtures and files
def pytest_collection_modifyitems(items):
    """Mark the tiers that follow from what a test uses: ``browser`` (a Chromium fixture), ``ray`` (tests/test_ray.py);
    refuse a ``unit`` test that uses a real-data fixture."""
    for item in items:
        used = DATA_FIXTURES & set(getattr(item, "fixturenames", ()))
        if used and item.get_closest_marker("unit") is not None:
            raise pytest.UsageError(f"{item.nodeid} is marked unit but uses {sorted(used)}, which read ../shared")
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        if item.path.name == "test_ray.py":
            item.add_marker(pytest.mark.ray)


class _SharedDataCheck:
    @pytest.hookimpl(trylast=True)  # after ``-m`` has deselected what will not run
    def pytest_collection_modifyitems(self, config, items):
        """The real-data tier needs ../shared; the unit tier (``pytest -m unit``) runs without it."""
        if not FER_ROOT.is_dir() and any(item.get_closest_marker("unit") is None for item in items):
            raise pytest.UsageError(f"real test data not found at {SHARED}; set FERKIT_SHARED to the shared/ folder, "
                                    "or run only the unit tests: pytest -m unit")


def pytest_configure(config):
    config.pluginmanager.register(_SharedDataCheck(), "ferkit-shared-data-check")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests decode into their own cache (and never touch the user's ~/.cache)."""
    old = os.environ.get("FERKIT_CACHE")
    os.environ["FERKIT_CACHE"] = str(tmp_path_factory.mktemp("ferkit_cache"))
    yield
    if old is None:
        os.environ.pop("FERKIT_CACHE", None)
    else:
        os.environ["FERKIT_CACHE"] = old


@pytest.fixture(scope="session")
def fer_data():
    """All of FER2013 (35,887 real images), decoded once per test session."""
    from ferkit.data.readers import load_dataset

    return load_dataset(FER_ROOT)


def make_fer_slice(dest: Path, per_class: dict[str, int] | int = 20, seed: int = 0) -> Path:
    """Copy a small real slice of FER2013 in its Kaggle layout (train/<class>, test/<class> with
    PublicTest_/PrivateTest_ names) into ``dest``: ``per_class`` files per class per split."""
    import random

    rng = random.Random(seed)
    for split_dir, prefixes in (("train", ("Training_",)), ("test", ("PublicTest_", "PrivateTest_"))):
        for cdir in sorted((FER_ROOT / split_dir).iterdir()):
            n = per_class if isinstance(per_class, int) else per_class.get(cdir.name, 0)
            for prefix in prefixes:
                files = sorted(p for p in cdir.iterdir() if p.name.startswith(prefix))
                for f in rng.sample(files, min(n, len(files))):
                    out = dest / split_dir / cdir.name / f.name
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, out)
    return dest


@pytest.fixture()
def fer_slice(tmp_path) -> Path:
    """A fresh 20-per-class-per-split real FER2013 slice (Kaggle layout) in a temp folder."""
    return make_fer_slice(tmp_path / "fer_slice", 20)


def make_png_bomb(path: Path, side: int = 30000) -> Path:
    """A real PNG declaring ``side`` x ``side`` black pixels (900 MP by default) in about 100 KB: 1-bit grey,
    deflated row by row, so writing it never holds more than one row in memory (decoding it would take GBs)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + the row's bits
    body = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grey, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path
