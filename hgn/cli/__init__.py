"""The ``hgn`` command line. Each command group lives in a module of this package and
adds its sub-commands through ``register(subparsers)``; every command is a function
``(args) -> None`` stored as ``args.func``.

User mistakes surface as :class:`hgn.utils.UserError` and are printed as one line with
exit status 2; nothing else is caught, so genuine bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import NoReturn

from hgn import __version__
from hgn.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line ``hgn: error: ...`` (exit 2) like every
    other bad input, instead of a usage block followed by the message. Sub-command
    parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        where = "" if self.prog == "hgn" else f"{self.prog}: "  # bare hgn: not "hgn: hgn:"
        self.exit(2, f"hgn: error: {where}{message} (see {self.prog} --help)\n")


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
