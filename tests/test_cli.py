"""The ``ferkit`` command line as a whole: every command's --help, shared options, which errors are one line."""

from __future__ import annotations

import re

import pytest

from ferkit.app.cli import COMMANDS, build_parser, main
from ferkit.errors import UsageError

DATA_TOOLS = ("stats", "split", "balance", "relabel", "convert")


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.unit  # no data from ../shared
def test_every_help_states_each_default_once_and_never_none(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # one line per option, so a default cannot wrap onto the next line
    pages = {name: _help(capsys, name) for name in COMMANDS}
    pages.update({f"data {tool}": _help(capsys, "data", tool) for tool in DATA_TOOLS})
    for name, text in pages.items():
        assert "(default: None)" not in text, name
        assert "(default: False)" not in text, name  # flags
        for line in text.splitlines():
            assert line.count("(default") <= 1, (name, line)
    # Required options state no default; options with a real default state it once.
    assert re.search(r"--out OUT, -o OUT +output file, e\.g\. model\.onnx or model\.pt\n", pages["export"])
    assert pages["report"].count("(default: FOLDER/report.html)") == 1
    assert "(default: test)" in pages["eval"] and "'all': every image" in pages["eval"]
    # explain runs where every other command runs: auto.
    assert re.search(r"--device DEVICE +auto .*\(default: auto\)", pages["explain"])


@pytest.mark.unit  # no data from ../shared
def test_shared_options_have_one_definition(monkeypatch):
    """--threads, --device, --model, --split, --detector, --backend and --no-progress read the same in every command."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    parsers = {name: sub[name] for name in COMMANDS}
    seen: dict[str, set] = {}
    for name, p in parsers.items():
        for action in p._actions:
            for opt in ("--threads", "--device", "--split", "--detector", "--yunet", "--backend", "--no-progress"):
                if opt in action.option_strings:
                    seen.setdefault(opt, set()).add((action.help, action.default, action.type))
    for opt, forms in seen.items():
        assert len(forms) == 1, (opt, forms)
    assert {"--threads", "--device", "--split", "--detector", "--backend", "--no-progress"} <= set(seen)
    threads = [n for n, p in parsers.items() if any("--threads" in a.option_strings for a in p._actions)]
    assert {"predict", "serve", "bench-models"} <= set(threads)


@pytest.mark.unit  # no data from ../shared
def test_user_errors_are_one_line_and_bugs_keep_their_traceback(capsys, monkeypatch):
    import ferkit.models.summary as summary

    def mistake(names=None):
        raise UsageError("no such thing; try another")

    monkeypatch.setattr(summary, "model_table", mistake)
    assert main(["models"]) == 1
    assert capsys.readouterr().err == "ferkit models: error: no such thing; try another\n"

    def bug(names=None):
        return {}["width"]  # a KeyError is a bug, not a user error: it must not be reduced to one line

    monkeypatch.setattr(summary, "model_table", bug)
    with pytest.raises(KeyError, match="width"):
        main(["models"])
    monkeypatch.setattr(summary, "model_table", lambda names=None: (_ for _ in ()).throw(RuntimeError("internal")))
    with pytest.raises(RuntimeError, match="internal"):
        main(["models"])
