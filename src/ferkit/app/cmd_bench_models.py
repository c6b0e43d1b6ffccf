"""``ferkit bench-models``: parameters, size on disk, FLOPs, CPU latency and throughput of the zoo (and checkpoints)."""

from __future__ import annotations

from ferkit.app.args import add_dataset, add_threads


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "bench-models",
        help="compare the zoo: parameters, size, FLOPs, CPU latency (batch 1 and 64), throughput, accuracy",
        formatter_class=formatter,
        description="Measure every registered model at its input size (or --models NAME ...), e.g.\n"
        "  ferkit bench-models --threads 2 --out models.md\n"
        "  ferkit bench-models --models lenet vgg9 --checkpoint mine=runs/vgg9 --data ../shared/data/fer2013 --out t.csv\n"
        "Latency is the median forward-pass time in fp32 after warm-up runs; throughput is images/s at the\n"
        "largest batch. A checkpoint adds a row with its accuracy on --split. The 224x224 ImageNet backbones take\n"
        "minutes at batch 64 on a small CPU: --max-gflops skips their latency (they stay in the table).",
    )
    p.add_argument("--models", nargs="+", metavar="NAME", help="only these zoo models (default: every registered one); "
                   "'none' for checkpoints only")
    p.add_argument("--checkpoint", nargs="+", default=[], action="extend", metavar="NAME=PATH",
                   help="checkpoint files or run folders to add, with their accuracy")
    add_dataset(p)  # of the checkpoints' accuracy
    p.add_argument("--out", "-o", help="table file: .md, .csv or .json (always printed as Markdown too)")
    add_threads(p)
    p.add_argument("--batch-sizes", default="1,64", help="comma list of batch sizes to time")
    p.add_argument("--repeats", type=int, default=10, help="timed runs at most (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs")
    p.add_argument("--max-gflops", type=float, help="skip latency of models costing more GFLOPs per image")
    p.add_argument("--channels-last", action="store_true", help="time in channels-last memory format")
    p.add_argument("--fast", action="store_true", help="1 warm-up and at most 2 timed runs (a quick look)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ferkit.report.bench import BenchSettings, bench_markdown, bench_models, write_table

    if args.out and Path(args.out).suffix.lower() not in (".md", ".csv", ".json"):  # fail before minutes of timing
        raise ValueError(f"{args.out}: unknown table format {Path(args.out).suffix!r}; use .md, .csv or .json")
    checkpoints = {}
    for item in args.checkpoint:
        if "=" not in item:
            raise ValueError(f"--checkpoint {item!r}: expected NAME=PATH (a checkpoint file or run folder)")
        name, path = item.split("=", 1)
        checkpoints[name] = path
    try:
        sizes = tuple(int(b) for b in args.batch_sizes.split(",") if b.strip())
    except ValueError:
        raise ValueError(f"--batch-sizes {args.batch_sizes!r}: expected a comma list of integers such as 1,64") from None
    settings = BenchSettings(threads=args.threads or 0, batch_sizes=sizes, warmup=args.warmup, repeats=args.repeats,
                             max_gflops=args.max_gflops, channels_last=args.channels_last, fast=args.fast)
    names = [] if args.models == ["none"] else args.models
    from ferkit.models.registry import model_info

    for n in names or []:
        model_info(n)  # unknown names fail now, with the closest valid ones, before minutes of timing
    from tqdm.auto import tqdm

    from ferkit.models.registry import list_models

    total = len(names if names is not None else list_models()) + len(checkpoints)
    with tqdm(total=total, unit="model", leave=False, disable=None) as bar:  # no bar (no \r lines) in a log or pipe
        def progress(label: str) -> None:
            bar.set_description(label)
            bar.update()

        rows = bench_models(names, checkpoints, settings, data=args.data, split=args.split, progress=progress)
    print(bench_markdown(rows, settings))
    if args.out:
        print(f"wrote {write_table(rows, args.out, settings)}")
    return 0
