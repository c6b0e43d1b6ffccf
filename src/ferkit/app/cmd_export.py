"""``ferkit export``: a model as ONNX or TorchScript, with its preprocessing stored inside the file."""

from __future__ import annotations

from pathlib import Path

from ferkit.app.args import add_model


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or TorchScript (dynamic batch, preprocessing stored in the file)",
        formatter_class=formatter,
        description="Export a trained model for deployment, e.g.\n"
        "  ferkit export --model runs/vgg9 --format onnx --out vgg9.onnx\n"
        "Input: float (N, C, S, S), normalised as the model's preprocessing says; output: logits (N, K).\n"
        "The preprocessing (input size, channels, mean/std, face-crop margin, label names) is stored as JSON:\n"
        "in ONNX metadata_props under 'ferkit.preprocess', in TorchScript's extra file 'ferkit_preprocess.json'.\n"
        "Use an ONNX file with  ferkit.Recognizer(model='vgg9.onnx')  (ONNX Runtime backend).",
    )
    add_model(p)
    p.add_argument("--format", "-f", dest="fmt", choices=("onnx", "torchscript"), default="onnx", help="output format")
    p.add_argument("--out", "-o", required=True, help="output file, e.g. model.onnx or model.pt")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    from ferkit.infer.export import export_model

    out = Path(args.out)
    if out.is_dir():
        raise FileExistsError(f"{out}: is a folder; give a file name such as {out / ('model.onnx' if args.fmt == 'onnx' else 'model.pt')}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out}: already exists; use --force to overwrite it")
    export_model(args.model, out, args.fmt)
    print(f"wrote {args.fmt} model to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
