"""The ``ferkit`` command line: a thin shell over the Python API.

Each sub-command lives in its own module ``ferkit.app.cmd_<name>`` exposing
``register(subparsers)``; the module imports heavy libraries only when run, so
``ferkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Sub-command modules, in the order ``ferkit --help`` lists them.
COMMANDS = ("predict", "serve", "train", "eval", "sweep", "explain", "report", "data", "models", "bench-models", "export")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferkit",
        description="Facial-expression recognition: datasets, training, evaluation and recognition in photos and videos.",
        formatter_class=_Formatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="show warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"ferkit.app.cmd_{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ferkit.app.cmd_{name.replace('-', '_')}":
                raise
            continue
        module.register(sub, _Formatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s" if level > logging.INFO else "%(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, RuntimeError) as exc:
        # Expected user errors: one clear line, no traceback (use -v for one).
        if args.verbose:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"ferkit {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
