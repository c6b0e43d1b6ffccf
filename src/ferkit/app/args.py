"""Command-line arguments that several ``ferkit`` commands share, defined once."""

from __future__ import annotations

import argparse


def add_model(p: argparse.ArgumentParser) -> None:
    """``--model``: the one trained model a command works on."""
    p.add_argument("--model", "-m", default="default", help="checkpoint file, run folder, or 'default' (the shipped model)")


def add_dataset(p: argparse.ArgumentParser) -> None:
    """``--data`` and ``--split``: one split of a dataset, by default the one the model was trained on."""
    p.add_argument("--data", "-d", help="fer2013.csv or image folder; if not given, the dataset the model was trained on")
    p.add_argument("--split", "-s", default="test", help="train / val / test, or Training / PublicTest / PrivateTest")
