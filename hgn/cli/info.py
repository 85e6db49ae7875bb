"""``hgn info RUN``: what a run is, its data, its steps and its last metrics."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "info",
        help="what a run is: its kind, model, data, steps and last metrics",
        description="Print what a run directory holds (either kind: hgn train or hgn flow "
        "train), read from its checkpoint and metrics log; nothing is written.",
    )
    parser.add_argument("run", help="a run directory (or a checkpoint file)")
    parser.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> None:
    from hgn.runs import describe

    print("\n".join(describe(args.run)))
