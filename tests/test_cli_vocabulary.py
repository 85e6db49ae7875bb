"""One vocabulary across the ``hgn`` commands (issue 24, item 8): every default shown in
``--help``, old spellings still working with one deprecation line, and no command
growing a retired spelling again. Walks the real parser, so a new command is checked
without being listed here."""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hgn import data
from hgn.cli import _DeprecatedAlias, build_parser, main, shown_default

RETIRED = {
    "--max-minutes": "--minutes",
    "--random-colours": "--random-colors",
    "--n-samples": "--momentum-samples",
}
"""Old spellings that no command may define except as a deprecated alias."""

STEPS_MEAN_OPTIMISER_STEPS = {"hgn train", "hgn flow train"}
"""``--steps`` counts optimiser steps, and only there; lengths are ``--frames``."""


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub-)command's parser, by its prog (``hgn flow train``)."""
    todo = [build_parser()]
    while todo:
        parser = todo.pop()
        yield parser.prog, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())


def options() -> Iterator[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    for prog, parser in parsers():
        for action in parser._actions:
            if action.option_strings and action.help is not argparse.SUPPRESS:
                yield prog, parser, action


def help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The text ``--help`` prints for ``action``, on one line."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def shows_default(action: argparse.Action) -> bool:
    """Whether ``action`` has a default worth printing: not None, not a flag that is off
    unless given, not a list that starts empty."""
    flag = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
    return not (action.default in (None, argparse.SUPPRESS, []) or flag or action.required)


def test_every_default_is_in_the_help_once() -> None:
    checked = 0
    for prog, parser, action in options():
        text = help_of(parser, action)
        name = f"{prog} {action.option_strings[0]}"
        assert text.count("(default:") <= 1, f"{name} prints its default twice: {text}"
        if shows_default(action):
            expected = f"(default: {shown_default(action.default).replace('%%', '%')}"
            assert expected in text, f"{name}: {text!r} lacks {expected!r}"
            checked += 1
    assert checked > 60  # the walk found the commands


def test_help_texts_state_defaults_one_way() -> None:
    """``(default: X)``, not ``[X]``, ``(X)`` from %(default)s, or ``default X``."""
    for prog, parser, action in options():
        text = help_of(parser, action)
        assert not re.search(r"\[[^\]]*\]$|\(default [^:]|; default:", text), (prog, text)


def test_no_command_defines_a_retired_spelling() -> None:
    for prog, parser in parsers():
        for option, action in parser._option_string_actions.items():
            deprecated = isinstance(action, _DeprecatedAlias)
            if option in RETIRED:
                assert deprecated, f"{prog} defines {option}; use {RETIRED[option]}"
                assert action.target.option_strings[0] == RETIRED[option]
            if option == "--steps" and prog not in STEPS_MEAN_OPTIMISER_STEPS:
                assert deprecated and action.target.option_strings[0] == "--frames", prog
            if option == "--size" and prog == "hgn benchmark":
                assert deprecated, "benchmark's tiers are --profile, as reproduce's"


def test_every_alias_is_hidden_and_points_to_a_shown_option() -> None:
    for prog, parser in parsers():
        shown = parser.format_help()
        for option, action in parser._option_string_actions.items():
            if isinstance(action, _DeprecatedAlias):
                assert re.search(rf"{re.escape(option)}\b", shown) is None, (prog, option)
                assert action.target.option_strings[0] in shown, (prog, option)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (["train", "--max-minutes", "5"], ["train", "--minutes", "5"]),
        (["flow", "train", "--max-minutes", "5"], ["flow", "train", "--minutes", "5"]),
        (["flow", "train", "--n-samples", "2"], ["flow", "train", "--momentum-samples", "2"]),
        (["flow", "compare", "--target", "t", "--n-samples", "2"],
         ["flow", "compare", "--target", "t", "--momentum-samples", "2"]),
        (["data", "generate", "--steps", "30"], ["data", "generate", "--frames", "31"]),
        (["data", "generate", "--random-colours"], ["data", "generate", "--random-colors"]),
        (["rollout", "r", "--data", "d", "--out", "o.gif", "--steps", "6"],
         ["rollout", "r", "--data", "d", "--out", "o.gif", "--frames", "7"]),
        (["sample", "r", "--out", "o.gif", "--steps", "4"],
         ["sample", "r", "--out", "o.gif", "--frames", "5"]),
        (["benchmark", "--out", "b", "--size", "small"],
         ["benchmark", "--out", "b", "--profile", "small"]),
    ],
)  # fmt: skip
def test_an_old_spelling_parses_as_the_new_one(
    old: list[str], new: list[str], capsys: pytest.CaptureFixture
) -> None:
    """The alias sets what the new option sets (``--steps T`` as ``--frames T+1``), so
    the command behaves identically, and says so in exactly one line."""

    def parsed(argv: list[str]) -> dict[str, object]:
        found = vars(build_parser().parse_args(argv))
        found.pop("parser", None)  # flow train keeps its own parser, a new one each time
        return found

    assert parsed(old) == parsed(new)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    spelling = next(token for token in old if token not in new)
    assert err[0].startswith(f"hgn: warning: {spelling} is deprecated; use --"), err


def test_old_spellings_end_to_end(capsys: pytest.CaptureFixture) -> None:
    """Through main: the resolved config takes the old spellings' values, each old
    spelling warns once (given twice, too), and nothing else reaches stderr."""
    argv = ["flow", "train", "--print-config", "--n-samples", "2", "--max-minutes", "3"]
    assert main([*argv, "--max-minutes", "4"]) == 0
    out, err = capsys.readouterr()
    train = yaml.safe_load(out)["train"]
    assert (train["n_samples"], train["max_minutes"]) == (2, 4.0)
    assert err.splitlines() == [
        "hgn: warning: --n-samples is deprecated; use --momentum-samples",
        "hgn: warning: --max-minutes is deprecated; use --minutes",
    ]


def test_the_new_spellings_say_nothing(capsys: pytest.CaptureFixture) -> None:
    argv = ["flow", "train", "--print-config", "--momentum-samples", "2", "--minutes", "3"]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


def test_generate_with_old_spellings_and_no_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``--steps 2`` still makes 3 frames, ``--random-colours`` still colours, and the
    old default ``--out`` (data/SYSTEM) still works: each with its one deprecation line."""
    monkeypatch.chdir(tmp_path)
    argv = ["data", "generate", "--system", "mass-spring", "--train", "1", "--test", "1"]
    argv += ["--size", "16", "--no-progress", "--steps", "2", "--random-colours"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    meta = data.info(tmp_path / "data" / "mass-spring")
    assert meta["steps"] + 1 == 3 and meta["variant"]["random_colours"] is True
    warnings = [line for line in err.splitlines() if line.startswith("hgn: warning:")]
    assert warnings == [
        "hgn: warning: --steps is deprecated; use --frames (--steps T is --frames T+1)",
        "hgn: warning: --random-colours is deprecated; use --random-colors",
        "hgn: warning: hgn data generate without --out is deprecated; use --out DIR "
        "(writing data/mass-spring)",
    ]
    assert out.strip() == "wrote data/mass-spring"


def test_compare_without_out_still_writes_its_old_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    compare = importlib.import_module("hgn.flows.compare")  # hgn.flows.compare: a function
    written: list[Path] = []
    monkeypatch.setattr(compare, "compare", lambda target, out, *a, **k: written.append(out))
    monkeypatch.setattr(compare, "compare_markdown", lambda table: "")
    monkeypatch.chdir(tmp_path)
    assert main(["flow", "compare", "--target", "moons", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert written == [Path("compare-moons")]
    assert err.splitlines() == [
        "hgn: warning: hgn flow compare without --out is deprecated; use --out DIR "
        "(writing compare-moons)"
    ]
    assert out.splitlines()[-1].startswith("wrote compare-moons")


def test_commands_say_wrote() -> None:
    """One word for a file made: ``wrote PATH`` (was ``written``, ``saved in``,
    ``dataset at``)."""
    source = "".join(p.read_text() for p in Path(main.__code__.co_filename).parent.glob("*.py"))
    assert not re.search(r"print\(f?\"(written|.*saved in|dataset at)", source)
