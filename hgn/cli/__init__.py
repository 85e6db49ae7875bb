"""The ``hgn`` command line. Each command group lives in a module of this package and
adds its sub-commands through ``register(subparsers)``; every command is a function
``(args) -> None`` stored as ``args.func``.

User mistakes surface as :class:`hgn.utils.UserError` and are printed as one line with
exit status 2; nothing else is caught, so genuine bugs keep their traceback.

One vocabulary, in every command (issue 24, item 8):

* ``--steps`` counts optimiser steps (``train``, ``flow train``) and nothing else; a
  length in time is ``--frames``, the frames a user sees, the first included
  (``data generate``, ``rollout``, ``sample``, as ``data import`` and ``data show``).
* ``--n`` is how many things a command draws or shows; counts of something else name
  it (``--n-importance``, ``--n-test``, ``--momentum-samples``).
* ``--minutes`` is a wall-clock budget; ``--profile`` a named size of a whole setup
  (``train``, ``reproduce``, ``benchmark``); US spelling where a word has two
  (``--random-colors``, as the ``*-colors`` presets).
* ``--out`` is required where a command makes something new (a dataset, a run, a
  results directory, a picture or array file); it has a default only where the output
  is a report on one input and lives inside it (``flow evaluate`` and ``flow plot``:
  the run; ``data show``: the dataset). Every command ends with ``wrote PATH``.
* Every default is in ``--help`` (:class:`_HelpFormatter`). Old spellings stay, hidden,
  with one deprecation line (:func:`deprecated_alias`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from hgn import __version__
from hgn.errors import UserError


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's default at the end of its help, as ``(default: VALUE)``, so that a
    user never has to read the code to learn what an option they left out does. A help
    that states its default itself (an option whose default is computed, with None as
    argparse's default) keeps its own words; flags that are off unless given, lists that
    start empty and required options say nothing. Booleans read ``yes``/``no``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "(default:" in text
            or default is None
            or default is argparse.SUPPRESS
            or default == []
            or action.required
            or (action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction))
        ):
            return text
        return f"{text} (default: {shown_default(default)})".lstrip()


def shown_default(default: object) -> str:
    """How ``--help`` writes a default: booleans as yes/no, the rest as str (with the %
    that argparse's help expansion would read as a format escaped)."""
    shown = ("yes" if default else "no") if isinstance(default, bool) else str(default)
    return shown.replace("%", "%%")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line ``hgn: error: ...`` (exit 2) like every
    other bad input, instead of a usage block followed by the message; and every help
    shows its defaults (:class:`_HelpFormatter`). Sub-command parsers inherit both."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        where = "" if self.prog == "hgn" else f"{self.prog}: "  # bare hgn: not "hgn: hgn:"
        self.exit(2, f"hgn: error: {where}{message} (see {self.prog} --help)\n")


def warn_deprecated(old: str, new: str) -> None:
    """The one deprecation line, on stderr: ``hgn: warning: OLD is deprecated; use NEW``.
    Old spellings keep working (scripts and notes of earlier versions still run), but
    every use says what to write instead."""
    print(f"hgn: warning: {old} is deprecated; use {new}", file=sys.stderr)


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: hidden from ``--help``, warns once per command line
    (:func:`warn_deprecated`), then does exactly what the new option does with the value
    (passed through ``convert`` where the old spelling counted differently)."""

    def __init__(
        self,
        option_strings: list[str],
        dest: str,
        target: argparse.Action,
        convert: Callable[[Any], Any] | None = None,
        note: str = "",
        **kwargs: Any,
    ) -> None:
        kwargs.update(nargs=target.nargs, type=target.type, choices=target.choices)
        kwargs.update(metavar=target.metavar, default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.target, self.convert, self.note, self.warned = target, convert, note, False

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        new = self.target.option_strings[0]
        if not self.warned:
            warn_deprecated(option_string or self.option_strings[0], new + self.note)
            self.warned = True
        if self.convert is not None:
            values = self.convert(values)
        self.target(parser, namespace, values, new)


def deprecated_alias(
    parser: argparse.ArgumentParser,
    old: str,
    new: str,
    convert: Callable[[Any], Any] | None = None,
    note: str = "",
) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of ``parser``'s option ``new``
    (added before): the one place where renamed options keep working, so that every
    command retires its old spellings the same way. ``convert`` maps an old value to
    the new option's unit (``--steps T`` is ``--frames T+1``); ``note`` says how."""
    target = parser._option_string_actions[new]
    parser.add_argument(
        old, dest=target.dest, action=_DeprecatedAlias, target=target, convert=convert, note=note
    )


def frames_option(value: int, option: str = "--frames", most: int | None = None) -> int:
    """The steps between ``value`` frames (``value - 1``), with ``value`` checked: a
    sequence or picture has its first frame and at least one step. ``--frames`` counts
    what the user sees (``hgn data info`` and ``hgn data presets`` print frames); the
    code underneath counts the steps between them."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise UserError(f"{option} must be an integer of at least 2, got {value!r}")
    if most is not None and value > most:
        raise UserError(f"{option} must be at most {most}, got {value!r}")
    return value - 1


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` (sets ``args.progress`` to False), one definition for every
    command that draws a progress bar, so that the flag reads and behaves the same
    everywhere: logs and scripts turn the bars off without learning a variant."""
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (for logs and scripts)",
    )


def command_line(words: list[str], options: dict[str, object], out: object) -> str:
    """The shell command that reproduces a run, recorded with its results: ``words``,
    then each option whose value is not None, then ``--out``."""
    for flag, value in options.items():
        if value is not None:
            words = [*words, flag, str(value)]
    return shlex.join([*words, "--out", str(out)])


def build_parser() -> argparse.ArgumentParser:
    from hgn.cli import benchmark, completion, data, flow, info, model, reproduce

    parser = _Parser(
        prog="hgn",
        description="Hamiltonian Generative Networks and Neural Hamiltonian Flows.",
    )
    parser.add_argument("--version", action="version", version=f"hgn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data.register(sub)
    model.register(sub)
    flow.register(sub)
    reproduce.register(sub)
    benchmark.register(sub)
    info.register(sub)
    completion.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given in (["--version"], ["-V"]):  # before the parser, whose commands import torch
        print(f"hgn {__version__}")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(given)  # what the user typed: which options they set themselves
    try:
        args.func(args)
    except BrokenPipeError:  # `hgn data info D | head -3`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would raise again
        return 0
    except UserError as exc:
        print(f"hgn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hgn: interrupted; the last checkpoint (if any) is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
