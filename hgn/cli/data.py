"""`hgn data generate | show | merge | info`: pixel datasets of the physical systems."""

from __future__ import annotations

import argparse
import json

from hgn import data
from hgn.physics.systems import SYSTEMS
from hgn.utils import UserError


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    group = sub.add_parser("data", help="generate, inspect and merge pixel datasets")
    commands = group.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate",
        help="simulate a system and render its trajectories",
        description="Simulate trajectories, add observation noise and render them as "
        "RGB frames (the paper's datasets with the default settings).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    gen.add_argument("--system", default="pendulum", help=f"one of: {', '.join(SYSTEMS)}")
    gen.add_argument("--train", type=int, default=50_000, help="training trajectories")
    gen.add_argument("--test", type=int, default=10_000, help="test trajectories")
    gen.add_argument("--steps", type=int, default=30, help="steps per trajectory (T)")
    gen.add_argument("--dt", type=float, default=0.125, help="time between frames")
    gen.add_argument("--size", type=int, default=64, help="image height and width")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--noise", type=float, default=None, help="observation noise std (system's default)"
    )
    gen.add_argument(
        "--set",
        dest="constants",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a constant of the system, e.g. --set l=2 (repeatable)",
    )
    gen.add_argument(
        "--shard", default=None, metavar="I/N", help="generate only shard I of N (0-based)"
    )
    gen.add_argument("--out", default=None, help="output directory (default: data/SYSTEM)")
    gen.add_argument(
        "--overwrite", action="store_true", help="replace a different dataset at --out"
    )
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(func=_generate)

    show = commands.add_parser("show", help="write a PNG grid and a GIF of some trajectories")
    show.add_argument("path", metavar="DIR")
    show.add_argument("--split", default="train", choices=data.SPLITS)
    show.add_argument("--n", type=int, default=6, help="trajectories to show")
    show.add_argument("--frames", type=int, default=10, help="frames per row of the grid")
    show.add_argument(
        "--out",
        default=None,
        metavar="PREFIX",
        help="write PREFIX.png and PREFIX.gif (default: DIR/preview-SPLIT)",
    )
    show.set_defaults(func=_show)

    merge = commands.add_parser("merge", help="join the shards in DIR into one dataset")
    merge.add_argument("path", metavar="DIR")
    merge.add_argument("--out", default=None, help="write here instead of replacing DIR")
    merge.set_defaults(func=_merge)

    info = commands.add_parser("info", help="print a dataset's metadata")
    info.add_argument("path", metavar="DIR")
    info.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    info.set_defaults(func=_info)


def _constants(pairs: list[str]) -> dict[str, float]:
    constants = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--set expects NAME=VALUE, got {pair!r}")
        try:
            constants[name] = float(value)
        except ValueError:
            raise UserError(f"--set {name}: {value!r} is not a number") from None
    return constants


def _generate(args: argparse.Namespace) -> None:
    out = data.generate(
        args.out or f"data/{args.system}",
        system=args.system,
        n_train=args.train,
        n_test=args.test,
        steps=args.steps,
        dt=args.dt,
        size=args.size,
        seed=args.seed,
        noise=args.noise,
        shard=args.shard,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        **_constants(args.constants),
    )
    print(f"dataset at {out}")


def _show(args: argparse.Namespace) -> None:
    png, gif = data.show(args.path, split=args.split, n=args.n, frames=args.frames, out=args.out)
    print(f"wrote {png} and {gif}")


def _merge(args: argparse.Namespace) -> None:
    print(f"merged dataset at {data.merge(args.path, args.out)}")


def _info(args: argparse.Namespace) -> None:
    meta = data.info(args.path)
    if args.json:
        print(json.dumps(meta, indent=2))
        return
    constants = ", ".join(f"{k}={v:g}" for k, v in meta["constants"].items())
    splits = ", ".join(f"{name} {s['n']}" for name, s in meta["splits"].items())
    shard = meta["shard"]
    lines = [
        f"system:     {meta['system']} ({constants})",
        f"noise std:  {meta['noise']:g}",
        f"trajectories: {splits}"
        + (f" (shard {shard['index']}/{shard['count']})" if shard else ""),
        f"frames:     {meta['steps'] + 1} (dt={meta['dt']:g}, {meta['integrator']['method']} "
        f"with {meta['integrator']['substeps']} sub-steps)",
        f"images:     {meta['size']}x{meta['size']} RGB uint8",
        f"state:      q, p of {meta['dof']} dims (clean and noisy)",
        f"seed:       {meta['seed']}",
        f"version:    hgn {meta['version']}",
    ]
    print("\n".join(lines))
