"""``ferkit eval``: metrics of a trained model on one split of a dataset."""

from __future__ import annotations

from ferkit.app.args import add_dataset, add_device, add_model, add_threads


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on a dataset split (accuracy, macro-F1, confusion matrix)",
        formatter_class=formatter,
        description="Evaluate a model on one split of a dataset, e.g.\n"
        "  ferkit eval --model runs/vgg9 --data ../shared/data/fer2013 --split PrivateTest --tta tencrop --out runs/vgg9/eval\n"
        "The dataset's classes are matched to the model's by name (a 7-class model can be scored on a 5-class set).\n"
        "Figures without TTA are always given; --tta adds them with test-time augmentation. For FER2013 a leak-free\n"
        "figure leaves out test images that have an identical copy in Training (from duplicates.csv).\n"
        "FER2013 splits: train = Training, val = PublicTest (checkpoint selection), test = PrivateTest (report this one).\n"
        "--model may also be a file written by `ferkit export --format onnx` (e.g. --int8), run with ONNX Runtime,\n"
        "or an ensemble: models joined by commas (--model runs/a,runs/b,runs/c), their probabilities averaged.\n"
        "A model with classes the dataset lacks (the 8-class FER+ model on FER2013) is scored on the shared classes.",
    )
    add_model(p)
    add_dataset(p)
    p.add_argument("--tta", choices=("none", "flip", "tencrop"), default="none",
                   help="test-time augmentation, reported besides the plain figures")
    p.add_argument("--out", "-o",
                   help="folder for metrics.json, summary.md, predictions.csv and confusion plots; if not given, print only")
    p.add_argument("--duplicates",
                   help="FER2013 duplicates.csv for the leak-free figure; if not given, DATA/duplicates.csv when present")
    p.add_argument("--batch-size", type=int, help="images per forward pass; if not given, the model's training setting")
    p.add_argument("--ferplus-mode", choices=("majority", "soft", "off"),
                   help="a model trained on FER+ votes, on its own dataset: majority (a label where most raters agree, "
                        "the protocol of Barsoum et al.), soft (the top vote) or off (the dataset's own labels, e.g. "
                        "FER2013's); if not given, as in training")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ferkit.engine.evaluate import evaluate, format_summary

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)  # e.g. 1 beside a training run: two threads would spin on a busy core

    result = evaluate(
        args.model,
        data=args.data,
        split=args.split,
        tta=args.tta,
        out_dir=args.out,
        batch_size=args.batch_size,
        device=args.device,
        duplicates=args.duplicates,
        ferplus_mode=args.ferplus_mode,
    )
    print(format_summary(result))
    if args.out:
        print(f"wrote metrics.json, summary.md, predictions.csv and confusion plots to {args.out}")
    return 0
