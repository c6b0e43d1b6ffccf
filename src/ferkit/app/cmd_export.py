"""``ferkit export``: a model as ONNX or TorchScript, with its preprocessing stored inside the file."""

from __future__ import annotations

from pathlib import Path

from ferkit.app.args import add_model, probability


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
        "  ferkit export --model default,ferplus --member-weights 0.75,0.25 --format checkpoint --out weighted.pt\n"
        "Weight interpolation (WiSE-FT) and weight soups average the weights of fine-tunings of one model into one\n"
        "model of the same size (a checkpoint; export that to ONNX afterwards):\n"
        "  ferkit export --interpolate stage3.pt,runs/robust --alpha 0.25 --out model.pt   # 0.75 A + 0.25 B\n"
        "  ferkit export --interpolate runs/a,runs/b,runs/c --out soup.pt                  # the mean of the three",
    )
    add_model(p)
    p.add_argument("--format", "-f", dest="fmt", choices=("onnx", "torchscript", "checkpoint"),
                   help="output format (checkpoint: an inference-only ferkit .pt file, e.g. of an ensemble); if not "
                        "given, onnx (checkpoint with --interpolate)")
    p.add_argument("--out", "-o", required=True, help="output file, e.g. model.onnx or model.pt")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--member-weights", metavar="W,W,...",
                   help="with --format checkpoint and an ensemble: each member's weight in the average, e.g. 0.75,0.25")
    w = p.add_argument_group("weight interpolation and soups (writes a checkpoint; --model is not used)")
    w.add_argument("--interpolate", metavar="A,B[,C...]",
                   help="average the weights of these models (same architecture, classes and input): with --alpha, "
                        "(1 - alpha) A + alpha B; without, the plain mean of all (a uniform soup). The result keeps the "
                        "last model's preprocessing and config")
    w.add_argument("--alpha", type=probability, metavar="W",
                   help="with two models: the weight of the SECOND (B); 0 gives A's weights, 1 B's, e.g. 0.25 for a "
                        "model mostly A, moved a quarter of the way towards its fine-tune B")
    w.add_argument("--half", action="store_true",
                   help="store the weights as float16 (as the shipped default.pt): with --interpolate or --format checkpoint")
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

    if args.interpolate or args.alpha is not None or (args.half and args.fmt != "checkpoint"):
        return run_interpolate(args)
    args.fmt = args.fmt or "onnx"
    out = Path(args.out)
    if out.is_dir():
        raise FileExistsError(f"{out}: is a folder; give a file name such as {out / ('model.onnx' if args.fmt == 'onnx' else 'model.pt')}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out}: already exists; use --force to overwrite it")
    if args.int8:
        if args.fmt != "onnx":
            raise ValueError("--int8 works with --format onnx only")
        from ferkit.engine.classify import ModelRef
        from ferkit.engine.export import export_onnx_int8

        ref = ModelRef.resolve(args.model)  # once, for the calibration data and the export
        export_onnx_int8(ref, out, calibration_images(args, ref), args.calib_method, reduce_range=args.weight_bits == 7)
    elif args.member_weights:
        from ferkit.engine.export import export_checkpoint
        from ferkit.errors import UsageError

        if args.fmt != "checkpoint":
            raise UsageError("--member-weights works with --format checkpoint; export that file to ONNX afterwards")
        try:
            weights = [float(w) for w in args.member_weights.split(",")]
        except ValueError:
            raise UsageError(f"--member-weights {args.member_weights}: expected numbers joined by commas") from None
        export_checkpoint(args.model, out, weights, half=args.half)
    elif args.fmt == "checkpoint":
        from ferkit.engine.export import export_checkpoint

        export_checkpoint(args.model, out, half=args.half)  # a run folder's best weights as one file
    else:
        export_model(args.model, out, args.fmt)
    print(f"wrote {args.fmt}{' int8' if args.int8 else ''} model to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def run_interpolate(args) -> int:
    """``--interpolate A,B --alpha W`` (or ``A,B,C...`` without: their mean) into the checkpoint ``--out``."""
    from ferkit.engine.checkpoint import ensemble_members, export_weights, interpolate_checkpoints, soup_checkpoints
    from ferkit.engine.classify import ModelRef
    from ferkit.errors import UsageError

    if not args.interpolate:
        raise UsageError("--alpha goes with --interpolate A,B, and --half with --interpolate or --format checkpoint")
    if args.fmt not in (None, "checkpoint"):
        raise UsageError(f"--interpolate writes a checkpoint, not {args.fmt}; export that file to {args.fmt} afterwards")
    if args.model != "default":
        raise UsageError("--interpolate names the models to average; --model is not used with it")
    if args.int8 or args.member_weights:
        raise UsageError("--interpolate writes a float checkpoint; --int8 and --member-weights do not apply")
    try:
        specs = ensemble_members(args.interpolate)
    except ValueError:
        specs = None
    if not specs:
        raise UsageError(f"--interpolate {args.interpolate}: expected two or more models joined by commas, e.g. A.pt,B.pt")
    if args.alpha is not None and len(specs) != 2:
        raise UsageError(f"--alpha weighs the second of two models; --interpolate gives {len(specs)} (without "
                         "--alpha, several models are averaged uniformly)")
    out = Path(args.out)
    if out.is_dir():
        raise FileExistsError(f"{out}: is a folder; give a file name such as {out / 'model.pt'}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out}: already exists; use --force to overwrite it")
    ckpts = [ModelRef.resolve(s).checkpoint for s in specs]
    if any(out.exists() and out.resolve() == Path(c["path"]).resolve() for c in ckpts):
        raise FileExistsError(f"{out}: is one of the models being averaged; write the result to a new file")
    merged = interpolate_checkpoints(*ckpts, args.alpha) if args.alpha is not None else soup_checkpoints(ckpts)
    export_weights(merged, out, half=args.half)
    how = (f"(1 - {args.alpha:g}) {specs[0]} + {args.alpha:g} {specs[1]}" if args.alpha is not None
           else f"the mean of {len(specs)} models")
    print(f"wrote {how} to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def calibration_images(args, ref):
    """uint8 images for int8 calibration: a seeded random sample of ``--calib-split`` of ``--calib`` (else of the
    dataset ``ref`` was trained on)."""
    import numpy as np

    from ferkit.data.dataset import canonical_split
    from ferkit.data.readers import load_dataset
    from ferkit.engine.evaluate import trained_dataset

    data = args.calib or trained_dataset(ref.config, ref.spec, option="--calib")
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
