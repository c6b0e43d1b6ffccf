"""``ferkit models``: the model zoo as a table (size, cost, description)."""

from __future__ import annotations

import json


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "models",
        help="list the model zoo: input size, parameters, FLOPs",
        formatter_class=formatter,
        description="List every registered model with its family, input size, parameter count (millions) and "
        "forward cost per image (GFLOPs, counted as 2 x multiply-adds, for 7 classes; grey input for the "
        "48x48 models, RGB for the ImageNet backbones). Train one with\n  ferkit train model=NAME ...",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="only these models (default: all)")
    p.add_argument("--json", action="store_true", help="print the table as JSON (params and flops as plain counts)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ferkit.models.summary import model_table

    rows = model_table(args.names or None)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("model", "family", "input", "params (M)", "GFLOPs", "description")
    table = [(r["name"], r["family"], f"{r['input_size']}x{r['input_size']}x{r['in_chans']}", f"{r['params'] / 1e6:.2f}",
              f"{r['flops'] / 1e9:.3f}", r["description"]) for r in rows]
    widths = [max(len(str(row[i])) for row in (header, *table)) for i in range(len(header) - 1)]
    for row in (header, *table):
        # Name and family left-aligned, numbers right-aligned; the description runs to the end of the line.
        cells = [str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells + [row[-1]]))
    return 0
