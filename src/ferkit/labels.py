"""Emotion label vocabularies and name-based mapping between them.

Datasets disagree on names ("anger" vs "angry", "happiness" vs "happy") and on
order. Everything in ferkit maps labels *by canonical name*, never by index, so
FER2013-7 can be mapped onto a 5-class subset or onto FER+-8 safely.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Canonical names are the Kaggle FER2013 folder names plus "contempt".
SYNONYMS: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
    "contempt": "contempt",
}

# Original fer2013.csv index order: 0 angry ... 6 neutral.
FER2013 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# FER+ vote-column order (fer2013new.csv), canonicalised.
FERPLUS = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
# AffectNet-8 index order.
AFFECTNET8 = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")
# The 5-class subset used by the ResNeXt reference experiment.
FER5 = ("angry", "happy", "neutral", "sad", "surprise")

VOCABULARIES: dict[str, tuple[str, ...]] = {
    "fer2013": FER2013,
    "ferplus": FERPLUS,
    "affectnet8": AFFECTNET8,
    "fer5": FER5,
}


# Two-letter expression codes in file names (JAFFE: KA.AN1.39.tiff), read by --label-pattern.
CODES: dict[str, str] = {"an": "angry", "di": "disgust", "fe": "fear", "ha": "happy", "ne": "neutral", "sa": "sad",
                         "su": "surprise", "co": "contempt"}


def from_code(text: str) -> str:
    """A class from a file-name code: a two-letter code (:data:`CODES`), else a name or synonym (:func:`canonical`)."""
    key = str(text).strip().lower()
    return CODES.get(key) or canonical(key)


def canonical(name: str) -> str:
    """Return the canonical spelling of an emotion name (unknown names are lower-cased and kept)."""
    key = str(name).strip().lower()
    return SYNONYMS.get(key, key)


def resolve_labels(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Turn a vocabulary name ("fer2013", "fer5", ...) or a list/comma string of names into canonical names."""
    if isinstance(spec, str):
        if spec.lower() in VOCABULARIES:
            return VOCABULARIES[spec.lower()]
        spec = [s for s in spec.split(",") if s.strip()]
    names = tuple(canonical(s) for s in spec)
    if len(set(names)) != len(names):
        raise ValueError(f"label list {list(spec)} names a class twice after synonyms are applied: {names}")
    if not names:
        raise ValueError("empty label list")
    return names


def mapping(source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """Index map from ``source`` classes to ``target`` classes by canonical name.

    Returns an int64 array ``m`` of len(source) with ``m[i]`` the target index of
    source class i, or -1 where the class has no counterpart (samples to drop).
    """
    tgt = {canonical(n): i for i, n in enumerate(target)}
    return np.array([tgt.get(canonical(n), -1) for n in source], dtype=np.int64)


def check_known(names: Iterable[str], vocabulary: Sequence[str], what: str) -> None:
    """Raise a clear error if any of ``names`` is missing from ``vocabulary``."""
    vocab = {canonical(v) for v in vocabulary}
    bad = sorted({n for n in names if canonical(n) not in vocab})
    if bad:
        raise ValueError(f"{what}: unknown class name(s) {bad}; valid names are {list(vocabulary)}")
