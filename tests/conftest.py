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


def pytest_configure(config):
    if not FER_ROOT.is_dir():
        raise pytest.UsageError(f"real test data not found at {SHARED}; set FERKIT_SHARED to the shared/ folder")


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
