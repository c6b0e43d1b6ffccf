"""Command-line options that several ``ferkit`` commands share: each defined and worded once, here."""

from __future__ import annotations

import argparse

DEVICE_HELP = "auto (a GPU when there is one, else the CPU), cpu, cuda, cuda:1, ..."


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_model(p: argparse.ArgumentParser) -> None:
    """``--model``: the one trained model a command works on."""
    p.add_argument("--model", "-m", default="default",
                   help="'default' (the shipped model), a checkpoint file, a run folder from 'ferkit train', "
                        "or an .onnx file from 'ferkit export'")


def add_dataset(p: argparse.ArgumentParser, default_split: str = "test", multiple: bool = False) -> None:
    """``--data`` and ``--split``: one split of a dataset (or all of it), by default of the one the model was trained on;
    ``multiple``: ``--data`` may be given several times (a list, None when not given)."""
    p.add_argument("--data", "-d", action="append" if multiple else "store",
                   help="fer2013.csv or image folder; if not given, the dataset the model was trained on"
                        + ("; give it several times for one table across datasets" if multiple else ""))
    p.add_argument("--split", "-s", default=default_split,
                   help="train / val / test (or Training / PublicTest / PrivateTest), or 'all': every image whatever "
                        "its split, e.g. a flat folder root/<class>/*")


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``: where the model runs."""
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads``: CPU threads of PyTorch (and OpenCV, where the command uses it); None when not given."""
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads for the model (PyTorch or ONNX Runtime) and OpenCV; if not given, the libraries' "
                        "defaults (all cores). 1 is often fastest when other programs keep the cores busy")


def add_no_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bar (there is none anyway when stderr is not a terminal)."""
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (when stderr is not a terminal there is never one, only log lines)")


def add_detector(p: argparse.ArgumentParser) -> None:
    """``--detector`` and ``--yunet``: the face detector."""
    p.add_argument("--detector", choices=("auto", "yunet", "haar"), default="auto",
                   help="face detector; auto = YuNet when its weights are at hand, else Haar (with a notice)")
    p.add_argument("--yunet", metavar="PATH",
                   help="another YuNet weights file; if not given, the one shipped in the package (or $FERKIT_YUNET)")
    p.add_argument("--min-face", type=positive_int, metavar="PX",
                   help="smallest face wanted, in pixels of the input (longer box side; if not given, 20). "
                        "A larger value lets YuNet look at a smaller copy of each frame: faster on large frames "
                        "(e.g. 80 for a webcam user at a desk in 1280x720), but smaller faces are missed")


def probability(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text!r}")
    return value


def add_min_confidence(p: argparse.ArgumentParser) -> None:
    """``--min-confidence``: below it a face is labelled "uncertain"."""
    p.add_argument("--min-confidence", type=probability, default=0.0, metavar="P",
                   help="label a face 'uncertain' when its top calibrated probability is below P (its probabilities are "
                        "still written, and video smoothing still uses them); e.g. 0.5. 0 answers every face")


def add_backend(p: argparse.ArgumentParser) -> None:
    """``--backend``: the classifier's runtime."""
    p.add_argument("--backend", choices=("auto", "torch", "onnx", "onnx-int8"), default="auto",
                   help="classifier runtime: auto (default: the shipped model quantized to int8 on ONNX Runtime when "
                        "it runs on a CPU, else PyTorch), torch, onnx (ONNX Runtime), onnx-int8 (the shipped int8 file)")


def recognizer_settings(args: argparse.Namespace, **changes):
    """The :class:`~ferkit.infer.recognizer.RecognizerSettings` the options above describe (those a command
    lacks keep their defaults), with ``changes`` on top: every command builds its recognizers from this."""
    from ferkit.infer.recognizer import RecognizerSettings

    given = {"model": getattr(args, "model", None), "detector": getattr(args, "detector", None),
             "yunet_path": getattr(args, "yunet", None), "backend": getattr(args, "backend", None),
             "device": getattr(args, "device", None), "threads": getattr(args, "threads", None),
             "min_face": getattr(args, "min_face", None), "min_confidence": getattr(args, "min_confidence", None)}
    return RecognizerSettings(**({k: v for k, v in given.items() if v is not None} | changes))
