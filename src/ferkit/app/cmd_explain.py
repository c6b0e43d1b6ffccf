"""``ferkit explain``: saliency / Grad-CAM grids and prediction galleries of a trained model."""

from __future__ import annotations

from ferkit.app.args import add_dataset, add_device, add_model


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "explain",
        help="what a model looks at: saliency and Grad-CAM grids, galleries of right and wrong predictions",
        formatter_class=formatter,
        description="Show what a trained model looks at, e.g.\n"
        "  ferkit explain --model runs/vgg9 --data ../shared/data/fer2013 --split test --out runs/vgg9/explain\n"
        "  ferkit explain --model runs/vgg9 --images face1.jpg face2.png --out explain/\n"
        "Writes saliency.png (per image: original | vanilla-gradient saliency | Grad-CAM overlay, with true and\n"
        "predicted labels) and, for a dataset split, gallery_correct.png, gallery_wrong.png (most confident\n"
        "right and wrong predictions per class), gallery_confused.png (the most confused class pairs) and\n"
        "galleries.csv. --images are face crops: each is resized to the model's input as a whole.\n"
        "The galleries score the split as `ferkit eval` does (the labels the model was trained with, FER+ votes\n"
        "included); an .onnx model gets galleries but no saliency grid (ONNX Runtime gives no gradients).",
    )
    add_model(p)
    add_dataset(p)
    p.add_argument("--images", nargs="+", metavar="IMAGE", help="explain these face-crop image files (no dataset galleries "
                   "unless --data is also given)")
    p.add_argument("--n", type=int, default=8, help="images in the saliency grid (from the split) and per gallery row")
    p.add_argument("--pairs", type=int, default=4, help="most confused class pairs shown")
    p.add_argument("--limit", type=int, default=0, help="score a stratified subset of this many split images (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the images picked from the split")
    p.add_argument("--ferplus", metavar="CSV", help="FER+ votes (fer2013new.csv): galleries against FER+ labels of the "
                   "FER2013 --data, as in `ferkit eval --ferplus`")
    p.add_argument("--ferplus-mode", choices=("majority", "soft", "off"),
                   help="how FER+ votes become labels, as in `ferkit eval`; if not given, as in training")
    p.add_argument("--join-csv", metavar="CSV", help="the image -> FER+ row table for a FER2013 image folder")
    p.add_argument("--out", "-o", required=True, help="output folder")
    add_device(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from ferkit.engine.classify import ModelRef
    from ferkit.errors import UsageError
    from ferkit.report.saliency import explain_images, save_explanation_grid

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    out = Path(args.out)
    written = []
    ref = ModelRef.resolve(args.model)  # once: the galleries and the saliency grid use the same model
    no_saliency = f"{ref.path}: saliency needs gradients, which an ONNX file run by ONNX Runtime does not give"
    if args.images:
        from ferkit.imageio import read_image
        from ferkit.runtime import select_device

        if ref.kind == "onnx":
            raise UsageError(f"{no_saliency}; explain the checkpoint it was exported from")
        model, pre = ref.build(select_device(args.device))
        images = [read_image(p) for p in args.images]  # raises naming an unreadable file
        ex = explain_images(model, pre, images, names=[str(p) for p in args.images])
        written.append(save_explanation_grid(ex, out / "saliency.png", title=f"{Path(args.model).name}: saliency and Grad-CAM"))
    if not args.images or args.data:
        from ferkit.engine.evaluate import predict_split
        from ferkit.report.galleries import write_galleries

        sp = predict_split(ref, args.data, args.split, device=args.device, ferplus_mode=args.ferplus_mode,
                           ferplus=args.ferplus, join_csv=args.join_csv, limit=args.limit, seed=args.seed)
        if not args.images and ref.kind == "onnx":
            print(f"no saliency.png: {no_saliency}")
        elif not args.images:
            part = sp.part
            rng = np.random.default_rng(args.seed)
            # round-robin over classes, so the grid shows several expressions
            per_class = [rng.permutation(np.where(part.labels == c)[0]) for c in range(len(sp.pre.label_names))]
            pick = [int(ix[r]) for r in range(max(map(len, per_class))) for ix in per_class if r < len(ix)][: args.n]
            ex = explain_images(sp.model, sp.pre, part.images[pick], labels=part.labels[pick], names=list(part.sources[pick]))
            acc = float((sp.probs["none"].argmax(1) == part.labels).mean())
            # Name the images this grid and the galleries come from: with --limit a sample, not the whole split.
            title = (f"saliency: {len(pick)} images, one per class in turn (seed {args.seed}), from {sp.subset}\n"
                     f"accuracy on those {len(part):,}: {100 * acc:.2f} %")
            written.append(save_explanation_grid(ex, out / "saliency.png", title=title))
        written += list(write_galleries(sp, out, n=args.n, pairs=args.pairs).values())
    for p in written:
        print(f"wrote {p}")
    return 0
