"""The ``ferkit`` command line: a thin shell over the Python API.

Each sub-command lives in its own module ``ferkit.app.cmd_<name>`` exposing
``register(subparsers)``; the module imports heavy libraries only when run, so
``ferkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import signal
import sys
import threading

from ferkit.errors import UsageError

# Sub-command modules, in the order ``ferkit --help`` lists them.
COMMANDS = ("predict", "serve", "train", "eval", "calibrate", "sweep", "explain", "report", "data", "models", "bench-models", "export")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Adds "(default: X)" to an option's help, only where X says something.

    Left out: options whose default is None or empty (the help says what happens then),
    flags (store_true and the like), required options, and helps that state their default already.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "(default" in text or default is None or default is argparse.SUPPRESS
                or action.required or action.nargs == 0 or (isinstance(default, (list, tuple, str)) and not default)
                or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        return text + " (default: %(default)s)"


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


# What to do about the file-system errors a user meets, by errno.
_OS_HINTS = {
    errno.EACCES: "check the permissions, or choose another folder",
    errno.EPERM: "check the permissions, or choose another folder",
    errno.EROFS: "a read-only file system: choose another folder",
    errno.ENOSPC: "the disk is full: free some space or choose another folder",
    errno.ENOTDIR: "a part of this path is a file, not a folder: choose another path",
    errno.EISDIR: "a folder where a file was expected: choose another path",
    errno.EEXIST: "something of this name is in the way: choose another path",
}


def _describe(exc: BaseException) -> str:
    """One line for an error: ferkit's own message, or for an operating-system error (errno and file name
    set) the path, the reason and what to do, without Python's ``[Errno 13]`` wrapping."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
        where = str(exc.filename) if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        hint = _OS_HINTS.get(exc.errno)
        return f"{where}: {exc.strerror or exc}" + (f" ({hint})" if hint else "")
    return str(exc)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout``, Docker and systemd send), raised in the main thread as Ctrl-C's KeyboardInterrupt
    is: a command stops the same way, finishing or removing what it was writing."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a command runs, SIGTERM raises :class:`Terminated`. Main thread only (Python's rule for handlers);
    the handler in place before is put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s" if level > logging.INFO else "%(message)s")
    try:
        with _sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except (ValueError, OSError, UsageError) as exc:
        # Mistakes the user can fix: one clear line, no traceback (use -v for one). OSError too: a folder that
        # cannot be written, a full disk, a path through a file are the user's to fix. Anything else is a bug
        # (a KeyError, a RuntimeError from a library) and keeps its traceback, so it gets reported.
        if args.verbose:
            raise
        print(f"ferkit {args.command}: error: {_describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            print("terminated", file=sys.stderr)
            return 128 + exc.signum
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
