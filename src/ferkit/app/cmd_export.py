"""``ferkit export``: a model as ONNX or TorchScript, with its preprocessing stored inside the file."""

from __future__ import annotations

from pathlib import Path

from ferkit.app.args import add_model


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "export",
        help="export a model (or an ensemble) to ONNX, TorchScript or one checkpoint file, preprocessing inside",
        formatter_class=formatter,
        description="Export a trained model for deployment, e.g.\n"
        "  ferkit export --model runs/vgg9 --format onnx --out vgg9.onnx\n"
        "Input: float (N, C, S, S), normalised as the model's preprocessing says; output: logits (N, K).\n"
        "The preprocessing (input size, channels, mean/std, face-crop margin, label names) is stored as JSON:\n"
        "in ONNX metadata_props under 'ferkit.preprocess', in TorchScript's extra file 'ferkit_preprocess.json'.\n"
        "Use an ONNX file with  ferkit.Recognizer(model='vgg9.onnx')  (ONNX Runtime backend).\n"
        "--int8 quantizes the ONNX model (1.5x faster per face on a 2-core AVX2 CPU), with activation ranges\n"
        "calibrated on --calib-images training images, e.g.\n"
        "  ferkit export --model runs/vgg9 --format onnx --int8 --calib ../shared/data/fer2013 --out vgg9_int8.onnx\n"
        "Its outputs differ slightly from the float model's: check its accuracy before you deploy it.\n"
        "An ensemble (several models joined by commas; it averages their probabilities) exports to one file:\n"
        "  ferkit export --model runs/a,runs/b,runs/c --format onnx --out ensemble.onnx\n"
        "  ferkit export --model runs/a,runs/b,runs/c --format checkpoint --out ensemble.pt   # --model ensemble.pt\n"
        "  ferkit export --model default,ferplus --member-weights 0.75,0.25 --format checkpoint --out weighted.pt",
    )
    add_model(p)
    p.add_argument("--format", "-f", dest="fmt", choices=("onnx", "torchscript", "checkpoint"), default="onnx",
                   help="output format (checkpoint: an inference-only ferkit .pt file, e.g. of an ensemble)")
    p.add_argument("--out", "-o", required=True, help="output file, e.g. model.onnx or model.pt")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--member-weights", metavar="W,W,...",
                   help="with --format checkpoint and an ensemble: each member's weight in the average, e.g. 0.75,0.25")
    q = p.add_argument_group("int8 quantization (ONNX only)")
    q.add_argument("--int8", action="store_true", help="write an int8 model (static quantization, calibrated)")
    q.add_argument("--calib", help="dataset for calibration; if not given, the dataset the model was trained on")
    q.add_argument("--calib-split", default="train", help="its split to draw calibration images from")
    q.add_argument("--calib-images", type=int, default=512, help="how many images (a random sample, seed 0)")
    q.add_argument("--calib-method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="how activation ranges are taken")
    q.add_argument("--weight-bits", type=int, choices=(7, 8), default=8,
                   help="7 avoids overflowing the 16-bit sums of ONNX Runtime's int8 kernels on x86 CPUs "
                   "without VNNI, should a model show it (the shipped one does not: PublicTest on an AVX2 CPU "
                   "69.82%% with 8 bits, 69.55%% with 7, float 69.57%%)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ferkit.engine.export import export_model

    out = Path(args.out)
    if out.is_dir():
        raise FileExistsError(f"{out}: is a folder; give a file name such as {out / ('model.onnx' if args.fmt == 'onnx' else 'model.pt')}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out}: already exists; use --force to overwrite it")
    if args.int8:
        if args.fmt != "onnx":
            raise ValueError("--int8 works with --format onnx only")
        from ferkit.engine.export import export_onnx_int8

        export_onnx_int8(args.model, out, calibration_images(args), args.calib_method, reduce_range=args.weight_bits == 7)
    elif args.member_weights:
        from ferkit.engine.export import export_checkpoint
        from ferkit.errors import UsageError

        if args.fmt != "checkpoint":
            raise UsageError("--member-weights works with --format checkpoint; export that file to ONNX afterwards")
        try:
            weights = [float(w) for w in args.member_weights.split(",")]
        except ValueError:
            raise UsageError(f"--member-weights {args.member_weights}: expected numbers joined by commas") from None
        export_checkpoint(args.model, out, weights)
    else:
        export_model(args.model, out, args.fmt)
    print(f"wrote {args.fmt}{' int8' if args.int8 else ''} model to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def calibration_images(args):
    """uint8 images for int8 calibration: a seeded random sample of ``--calib-split`` of ``--calib``."""
    import numpy as np

    from ferkit.data.dataset import canonical_split
    from ferkit.data.readers import load_dataset
    from ferkit.engine.checkpoint import load_checkpoint

    data = args.calib or (load_checkpoint(args.model).get("config") or {}).get("data")
    if not data:
        raise ValueError(f"{args.model}: the checkpoint does not name the dataset it was trained on; pass --calib PATH")
    if not args.calib and not Path(data).exists():  # stored as given at training time, often relative
        raise FileNotFoundError(f"{args.model}: the model was trained on {data}, which is not found from here "
                                f"({Path.cwd()}); pass --calib PATH")
    if args.calib_images < 1:
        raise ValueError(f"--calib-images must be at least 1, got {args.calib_images}")
    ds = load_dataset(data)
    split = canonical_split(args.calib_split)
    idx = np.flatnonzero(ds.split == split)
    if not len(idx):
        raise ValueError(f"{data}: the {split!r} split is empty (splits present: {ds.splits()}); choose one with --calib-split")
    pick = np.random.default_rng(0).choice(idx, min(args.calib_images, len(idx)), replace=False)
    print(f"calibrating on {len(pick)} images of {data} ({split})")
    return ds.images[np.sort(pick)]
