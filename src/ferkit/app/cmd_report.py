"""``ferkit report``: one self-contained HTML file for a run folder or a sweep folder."""

from __future__ import annotations

from ferkit.app.args import add_dataset


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run or sweep folder",
        formatter_class=formatter,
        description="Write one HTML file (images embedded, no network needed) for a run folder from 'ferkit train'\n"
        "(curves, confusion matrix, per-class table, saliency / Grad-CAM, config, environment) or a sweep folder\n"
        "from 'ferkit sweep' (summary table, comparison plots, runs), e.g.\n"
        "  ferkit report runs/vgg9                 # -> runs/vgg9/report.html\n"
        "  ferkit report runs/sweeps/optimizers --out optimizers.html\n"
        "A run without an evaluation of the split is evaluated first (into RUN/eval_<split>/).",
    )
    p.add_argument("folder", metavar="RUN_DIR|SWEEP_DIR", help="a run folder or a sweep folder")
    p.add_argument("--out", "-o", help="HTML file to write (default: FOLDER/report.html)")
    add_dataset(p)  # of a run report
    p.add_argument("--n", type=int, default=8, help="images in the saliency grid of a run report")
    p.set_defaults(func=run)


def run(args) -> int:
    from ferkit.report.html import write_report

    path = write_report(args.folder, args.out, data=args.data, split=args.split, n=args.n)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB); open it in a browser: file://{path.resolve()}")
    return 0
