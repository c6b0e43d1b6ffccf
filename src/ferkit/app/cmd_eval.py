"""``ferkit eval``: metrics of a trained model on one split of a dataset, or one table across several."""

from __future__ import annotations

from ferkit.app.args import add_dataset, add_detector, add_device, add_model, add_threads


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on datasets (accuracy, macro-F1, calibration, confusion matrix; end to end on photos)",
        formatter_class=formatter,
        description="Evaluate a model on one split of a dataset, e.g.\n"
        "  ferkit eval --model runs/vgg9 --data ../shared/data/fer2013 --split PrivateTest --tta tencrop --out runs/vgg9/eval\n"
        "The dataset's classes are matched to the model's by name (a 7-class model can be scored on a 5-class set).\n"
        "Figures without TTA are always given; --tta adds them with test-time augmentation. For FER2013 a leak-free\n"
        "figure leaves out test images that have an identical copy in Training (from duplicates.csv).\n"
        "FER2013 splits: train = Training, val = PublicTest (checkpoint selection), test = PrivateTest (report this one).\n"
        "Calibration is always reported: ECE (15 bins), Brier score, NLL, a reliability diagram, and the share of faces\n"
        "answered and their accuracy for min-confidence thresholds P = 0 ... 0.9 (what --min-confidence P keeps).\n"
        "--model may also be a file written by `ferkit export --format onnx` (e.g. --int8), run with ONNX Runtime,\n"
        "or an ensemble: models joined by commas (--model runs/a,runs/b,runs/c), their probabilities averaged.\n"
        "A model with classes the dataset lacks (the 8-class FER+ model on FER2013) is scored on the shared classes.\n\n"
        "One table across datasets: give --data several times, and --photos for sets of whole photos scored end to\n"
        "end (the detector, the model's calibrated crop, the largest face; a photo with no face found counts wrong):\n"
        "  ferkit eval --model default --data ../shared/data/fer2013 --photos ../shared/data/sfew-dev \\\n"
        "              --photos ../shared/data/jaffe-dev --out runs/eval/default\n"
        "A photo set with one split (SFEW-dev and JAFFE-dev hold only 'val') is scored on that split. The table gives\n"
        "per dataset n, accuracy, macro-F1 and ECE, and the real-face score: the mean of the --photos accuracies.\n"
        "A flat folder whose labels are in the file names (JAFFE's KA.AN1.39.tiff) reads with --label-pattern.",
    )
    add_model(p)
    add_dataset(p, multiple=True)
    p.add_argument("--photos", action="append", metavar="DATA",
                   help="a labelled image dataset of whole photos, scored end to end through the face detector "
                        "(repeatable)")
    add_detector(p)  # for --photos
    p.add_argument("--label-pattern", metavar="REGEX",
                   help="read the --photos folders flat, the class of each image coded in its file name: the "
                        "regex's first group (or group 'label') is the class, e.g. '^[A-Z]+\\.([A-Z]{2})' for JAFFE; "
                        "two-letter codes AN DI FE HA NE SA SU and any class name or synonym are understood")
    p.add_argument("--tta", choices=("none", "flip", "tencrop"), default="none",
                   help="test-time augmentation, reported besides the plain figures (--data only)")
    p.add_argument("--min-confidence", type=float, metavar="P",
                   help="also report the share of faces answered and their accuracy when faces whose top probability "
                        "is below P are answered 'uncertain'")
    p.add_argument("--out", "-o",
                   help="folder for metrics.json, summary.md, predictions.csv, confusion, reliability and coverage "
                        "plots (one subfolder per dataset, and table.md, with several); if not given, print only")
    p.add_argument("--duplicates",
                   help="FER2013 duplicates.csv for the leak-free figure; if not given, DATA/duplicates.csv when present")
    p.add_argument("--batch-size", type=int, help="images per forward pass; if not given, the model's training setting")
    p.add_argument("--ferplus-mode", choices=("majority", "soft", "off"),
                   help="a model trained on FER+ votes, on its own dataset: majority (a label where most raters agree, "
                        "the protocol of Barsoum et al.), soft (the top vote) or off (the dataset's own labels, e.g. "
                        "FER2013's); if not given, as in training")
    p.add_argument("--ferplus", metavar="CSV",
                   help="FER+ votes (fer2013new.csv): score any model against FER+ labels of the FER2013 --data "
                        "(--ferplus-mode, default majority); with several datasets, FER2013 gets a row with each label set")
    p.add_argument("--join-csv", metavar="CSV",
                   help="the image -> FER+ row table for a FER2013 image folder (jpg_to_ferplus.csv)")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ferkit.app.args import recognizer_settings
    from ferkit.infer.crosseval import EvalSet, evaluate_sets, format_table, photo_settings

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)  # e.g. 1 beside a training run: two threads would spin on a busy core
    if args.label_pattern and not args.photos:
        from ferkit.errors import UsageError

        raise UsageError("--label-pattern reads the --photos folders; give the folder with --photos DATA")
    if args.min_confidence is not None and not 0.0 <= args.min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must be a probability in [0, 1], got {args.min_confidence}")
    sets = [EvalSet(d, "crops") for d in (args.data or [])]
    if args.ferplus:
        sets += [EvalSet(d, "crops", ferplus=args.ferplus) for d in (args.data or [None])]
    sets += [EvalSet(d, "photos") for d in (args.photos or [])]
    if not sets:
        sets = [EvalSet(None, "crops")]  # the dataset the model was trained on
    # photos: the end-to-end recognizer of these options (device "auto" is the CPU there, backend "torch": exact)
    photos = photo_settings(recognizer_settings(args, device="cpu" if args.device == "auto" else args.device,
                                                backend="torch", min_confidence=0.0))
    results = evaluate_sets(args.model, sets, recognizer=photos, split=args.split, tta=args.tta, out_dir=args.out, batch_size=args.batch_size,
                            device=args.device, duplicates=args.duplicates, ferplus_mode=args.ferplus_mode,
                            join_csv=args.join_csv, label_pattern=args.label_pattern, min_confidence=args.min_confidence)
    if len(results) == 1:
        from ferkit.engine.evaluate import format_summary

        print(format_summary(results[0]))
    print(format_table(args.model, results, args.min_confidence))
    if args.out:
        print(f"wrote metrics.json, summary.md, predictions.csv and plots to {args.out}"
              + (" (one folder per dataset, and table.md)" if len(results) > 1 else ""))
    return 0
