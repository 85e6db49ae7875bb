"""``hgn completion SHELL``: the shell's tab completion of every hgn command and option,
generated from the parser itself (shtab), so it never falls behind the commands."""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "tcsh")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "completion",
        help="print tab completion for your shell",
        description="Print a completion script for SHELL. bash: "
        "`hgn completion bash > ~/.local/share/bash-completion/completions/hgn`; "
        'zsh: `hgn completion zsh > "${fpath[1]}/_hgn"`.',
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    parser.set_defaults(func=_completion)


def _completion(args: argparse.Namespace) -> None:
    import shtab

    from hgn.cli import build_parser

    print(shtab.complete(build_parser(), shell=args.shell))
