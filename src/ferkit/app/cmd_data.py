"""``ferkit data stats|split|balance|relabel|convert``: dataset tools (logic in :mod:`ferkit.data.tools`)."""

from __future__ import annotations

from ferkit.app.args import add_no_progress

_GUARANTEES = (
    "Output always goes to a new folder: a non-empty folder, or one inside the input, is refused. The input is\n"
    "never modified. Files with the same name in one output folder are all kept (the later ones as <stem>-1.<ext>,\n"
    "...). Unreadable files are reported by path and skipped."
)
_DATA_HELP = "fer2013.csv (emotion,pixels,Usage) or image folder (root/<split>/<class>/* or root/<class>/*)"


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "data",
        help="dataset tools: class counts, split, balance, relabel, convert CSV <-> folders",
        formatter_class=formatter,
        description="Dataset tools, e.g.\n"
        "  ferkit data stats ../shared/data/fer2013\n"
        "  ferkit data split my_faces/ --out my_faces_split --val 0.1 --test 0.1 --seed 0\n"
        "  ferkit data balance fer2013/ --out fer2013_balanced --target max\n"
        "  ferkit data relabel fer2013/ --to fer5 --out fer5/\n"
        "  ferkit data convert fer2013.csv --out fer2013_images/\n\n" + _GUARANTEES,
    )
    tools = p.add_subparsers(dest="tool", metavar="TOOL", required=True)

    s = tools.add_parser("stats", help="class counts per split (table, optional CSV and bar chart)", formatter_class=formatter,
                         description="Print the number of images per class and split.")
    s.add_argument("data", help=_DATA_HELP)
    s.add_argument("--to", help="first map classes by name onto a label set: fer5, ferplus, fer2013 or a comma list")
    s.add_argument("--csv", help="also write the table to this CSV file (must not exist)")
    s.add_argument("--plot", help="also write a bar chart to this PNG file (must not exist)")
    s.set_defaults(func=run)

    s = tools.add_parser("split", help="stratified, seeded train/val/test split", formatter_class=formatter,
                         description="Deal the samples of DATA out per class into OUT/train|val|test/<class>/ (files copied\n"
                         "unchanged; CSV rows written as PNG). A Kaggle FER2013 name whose prefix names another split\n"
                         "(PublicTest_1.jpg dealt to train) gets the new split in front (train_PublicTest_1.jpg).\n\n"
                         + _GUARANTEES)
    s.add_argument("data", help=_DATA_HELP)
    _add_out(s)
    s.add_argument("--val", type=float, default=0.1, help="fraction of each class for val")
    s.add_argument("--test", type=float, default=0.1, help="fraction of each class for test")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same split)")
    s.add_argument("--from", dest="from_splits", action="append", metavar="SPLIT",
                   help="re-split only the samples of this input split (repeatable); others keep their split. "
                   "If not given, every sample is pooled")
    s.set_defaults(func=run)

    s = tools.add_parser("balance", help="oversample small classes of the train split with augmented copies",
                         formatter_class=formatter,
                         description="Copy DATA and add augmented copies (<stem>_aug001.png, ...) of the train split's\n"
                         "smaller classes until each has TARGET x MULTIPLIER files. val/test are copied unchanged.\n\n"
                         + _GUARANTEES)
    s.add_argument("data", help=_DATA_HELP)
    _add_out(s)
    s.add_argument("--target", default="max", help="files per class: 'max' (the largest class) or a number")
    s.add_argument("--multiplier", type=float, default=1.0, help="scales every class's target, e.g. 2 doubles the data")
    s.add_argument("--seed", type=int, default=0, help="random seed of the augmentation")
    s.set_defaults(func=run)

    s = tools.add_parser("relabel", help="new class labels from a CSV or a class mapping", formatter_class=formatter,
                         description="Copy DATA with new labels, keeping its split layout. Applied in order: --labels,\n"
                         "--map, --to. Example:\n"
                         "  ferkit data relabel affectnet8/ --map contempt=disgust --to fer2013 --out affect7/\n\n"
                         + _GUARANTEES)
    s.add_argument("data", help=_DATA_HELP)
    _add_out(s)
    s.add_argument("--labels", help="CSV with columns file,label (file relative to DATA, or a unique file name)")
    s.add_argument("--map", action="append", metavar="OLD=NEW", help="rename or merge a class (repeatable)")
    s.add_argument("--to", help="keep only these classes, by name: fer5, ferplus, fer2013 or a comma list")
    s.set_defaults(func=run)

    s = tools.add_parser("convert", help="FER2013 CSV -> image folder, or image folder -> FER2013 CSV",
                         formatter_class=formatter,
                         description="A CSV input becomes a Kaggle-layout folder (train/<class>/Training_<row>.png,\n"
                         "test/<class>/PublicTest_<row>.png, test/<class>/PrivateTest_<row>.png). A folder input becomes a\n"
                         "CSV in the original format (emotion,pixels,Usage; SIZE x SIZE grey; other images converted, with\n"
                         "a notice). --out: a .csv file name, or a new folder that receives fer2013.csv.\n\n" + _GUARANTEES)
    s.add_argument("data", help=_DATA_HELP)
    _add_out(s)
    s.add_argument("--classes", default="fer2013",
                   help="label set the CSV's emotion column indexes: fer2013 (0 angry ... 6 neutral), ferplus or a comma list")
    s.add_argument("--size", type=int, default=48, help="image side in the CSV (folder -> CSV)")
    s.set_defaults(func=run)


def _add_out(p) -> None:
    p.add_argument("--out", "-o", required=True, help="new output folder (must not exist or be empty)")
    add_no_progress(p)


def _parse_target(text: str) -> int | str:
    if text == "max":
        return text
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"--target {text!r}: expected 'max' or a number of images per class") from None
    return n


def run(args) -> int:
    from functools import partial

    from ferkit.data import tools as T

    if args.tool == "stats":
        st = T.dataset_stats(args.data, labels=args.to, csv_path=args.csv, plot_path=args.plot)
        print(st.format())
        for what, path in (("table", args.csv), ("bar chart", args.plot)):
            if path:
                print(f"wrote {what} to {path}")
        return 0

    progress = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        progress = partial(tqdm, unit="file", leave=False, dynamic_ncols=True, disable=None)  # no bar when not a terminal
    tools = {
        "split": lambda: T.split_dataset(args.data, args.out, val=args.val, test=args.test, seed=args.seed,
                                         from_splits=args.from_splits, progress=progress),
        "balance": lambda: T.balance_dataset(args.data, args.out, target=_parse_target(args.target),
                                             multiplier=args.multiplier, seed=args.seed, progress=progress),
        "relabel": lambda: T.relabel_dataset(args.data, args.out, labels_csv=args.labels, mapping=args.map, to=args.to,
                                             progress=progress),
        "convert": lambda: T.convert_dataset(args.data, args.out, classes=args.classes, size=args.size, progress=progress),
    }
    rep = tools[args.tool]()
    print(rep.format())
    return 0
