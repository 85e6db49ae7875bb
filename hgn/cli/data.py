"""`hgn data generate | presets | import | show | info`: pixel datasets."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hgn import data
from hgn.cli import add_progress_flag, deprecated_alias, frames_option, warn_deprecated
from hgn.data.presets import PRESETS, preset
from hgn.physics.systems import STYLES, SYSTEMS
from hgn.utils import UserError

GENERATE_DEFAULTS: dict[str, Any] = {
    "system": "pendulum",
    "n_train": 50_000,
    "n_test": 10_000,
    "steps": 30,
    "dt": 0.125,
    "size": 64,
    "noise": None,
    "style": "paper",
}
"""What `generate` uses for an option given neither on the command line nor by a preset
(argparse's own defaults are None, so that a preset can tell what the user set)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    group = sub.add_parser("data", help="generate, import and inspect pixel datasets")
    commands = group.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    _add_generate(commands)
    presets = commands.add_parser("presets", help="list the named dataset settings")
    presets.set_defaults(func=_presets)
    _add_import(commands)
    _add_show(commands)
    info = commands.add_parser("info", help="print a dataset's metadata")
    info.add_argument("path", metavar="DIR", help="dataset directory or URL")
    info.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    info.set_defaults(func=_info)


def _add_generate(commands: argparse._SubParsersAction) -> None:
    d = GENERATE_DEFAULTS
    gen = commands.add_parser(
        "generate",
        help="simulate a system and render its trajectories",
        description="Simulate trajectories, add observation noise and render them as "
        "RGB frames into a compressed zarr store (the paper's pendulum with no options; "
        "see `hgn data presets` for named settings, whose values stand in for the "
        "defaults below). Prints the estimated size on disk before starting. OUT may be "
        "a directory or an fsspec URL (s3://, gs://, memory://, file://).",
    )
    gen.add_argument("--preset", default=None, help="named settings (hgn data presets)")
    gen.add_argument(
        "--system", default=None, help=f"one of: {', '.join(SYSTEMS)} (default: {d['system']})"
    )
    gen.add_argument(
        "--train", dest="n_train", type=int, default=None, metavar="N",
        help=f"training trajectories (default: {d['n_train']})",
    )  # fmt: skip
    gen.add_argument(
        "--test", dest="n_test", type=int, default=None, metavar="N",
        help=f"test trajectories (default: {d['n_test']})",
    )  # fmt: skip
    gen.add_argument(
        "--frames", type=int, default=None,
        help=f"frames per trajectory, the first included (default: {d['steps'] + 1})",
    )  # fmt: skip
    deprecated_alias(gen, "--steps", "--frames", lambda t: t + 1, " (--steps T is --frames T+1)")
    gen.add_argument(
        "--dt", type=float, default=None, help=f"time between frames (default: {d['dt']})"
    )
    gen.add_argument(
        "--size", type=int, default=None,
        help=f"image height and width, one of {', '.join(map(str, data.SIZES))} "
        f"(default: {d['size']})",
    )  # fmt: skip
    gen.add_argument("--seed", type=int, default=0, help="seed of everything random")
    gen.add_argument(
        "--noise", type=float, default=None,
        help="observation noise std (default: the system's)",
    )  # fmt: skip
    gen.add_argument(
        "--style", default=None, choices=STYLES, help=f"pictures (default: {d['style']})"
    )
    _variant_args(gen)
    gen.add_argument(
        "--shard", default=None, metavar="I/N", help="write only shard I of N (0-based)"
    )
    gen.add_argument(
        "--out", default=None,
        help="dataset directory or URL to write (required; left out, data/PRESET or "
        "data/SYSTEM is still written, with a deprecation line)",
    )  # fmt: skip
    gen.add_argument(
        "--overwrite", action="store_true", help="replace a different hgn dataset at --out"
    )
    add_progress_flag(gen)
    gen.set_defaults(func=_generate)


def _variant_args(gen: argparse.ArgumentParser) -> None:
    """``generate``'s options that change the physics or the pictures per trajectory."""
    gen.add_argument(
        "--set",
        dest="constants",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a constant, e.g. --set l=2, --set friction=0.05 (not Hamiltonian), "
        "--set offset=0.3 (random canvas shift); repeatable",
    )
    gen.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="NAME=LOW:HIGH",
        help="draw a constant per trajectory from a range, e.g. --vary l=0.5:1; repeatable",
    )
    gen.add_argument(
        "--random-colors",
        dest="random_colours",
        action="store_true",
        default=None,
        help="random body colors per trajectory (as the *-colors presets)",
    )
    deprecated_alias(gen, "--random-colours", "--random-colors")


def _add_import(commands: argparse._SubParsersAction) -> None:
    imp = commands.add_parser(
        "import",
        help="make a dataset from your own image sequences",
        description="Import image sequences: an .npy/.npz array (N, T, H, W, C) or "
        "(N, T, C, H, W), a folder of sub-folders of frames, a folder of frames, videos "
        "(one per sequence, or one long video cut with --frames/--stride). Frames are "
        "centre-cropped to a square and area-resampled; the dataset has no states.",
    )
    imp.add_argument("source", metavar="SOURCE", help="array file, folder or videos")
    imp.add_argument("--out", required=True, help="dataset directory or URL to write")
    imp.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"one of {', '.join(map(str, data.SIZES))} (default: the largest within the frames)",
    )
    imp.add_argument(
        "--test-fraction", type=float, default=0.1, help="share of the sequences held out"
    )
    imp.add_argument(
        "--frames", type=int, default=None,
        help="cut windows of this many frames (default: whole sequences)",
    )  # fmt: skip
    imp.add_argument(
        "--stride", type=int, default=None, help="frames between windows (default: --frames)"
    )
    imp.add_argument("--dt", type=float, default=None, help="time between frames (default: 1/fps)")
    imp.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    imp.add_argument("--overwrite", action="store_true", help="replace an hgn dataset at --out")
    add_progress_flag(imp)
    imp.set_defaults(func=_import)


def _add_show(commands: argparse._SubParsersAction) -> None:
    show = commands.add_parser("show", help="write a PNG grid and a GIF of some trajectories")
    show.add_argument("path", metavar="DIR", help="dataset directory or URL")
    show.add_argument("--split", default="train", choices=data.SPLITS, help="which split")
    show.add_argument("--n", type=int, default=6, help="trajectories to show")
    show.add_argument("--frames", type=int, default=10, help="frames per row of the grid")
    show.add_argument(
        "--out",
        default=None,
        metavar="PREFIX",
        help="write PREFIX.png and PREFIX.gif (default: DIR/preview-SPLIT)",
    )
    show.add_argument("--overwrite", action="store_true", help="replace existing PREFIX files")
    show.set_defaults(func=_show)


def _pairs(pairs: list[str], option: str, form: str) -> dict[str, str]:
    found = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"{option} expects {form}, got {pair!r}")
        found[name] = value
    return found


def _constants(pairs: list[str]) -> dict[str, float]:
    constants = {}
    for name, value in _pairs(pairs, "--set", "NAME=VALUE").items():
        try:
            constants[name] = float(value)
        except ValueError:
            raise UserError(f"--set {name}: {value!r} is not a number") from None
    return constants


def _ranges(pairs: list[str]) -> dict[str, tuple[float, float]]:
    ranges = {}
    for name, value in _pairs(pairs, "--vary", "NAME=LOW:HIGH").items():
        low, sep, high = value.partition(":")
        try:
            ranges[name] = (float(low), float(high))
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--vary {name}: expected LOW:HIGH, got {value!r}")
    return ranges


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _generate(args: argparse.Namespace) -> None:
    settings = dict(GENERATE_DEFAULTS)
    constants: dict[str, float] = {}
    if args.preset:
        chosen = preset(args.preset)
        constants = chosen.pop("constants")
        settings.update(chosen)
    given = {
        k: getattr(args, k)
        for k in ("system", "n_train", "n_test", "dt", "size", "noise", "style")
        if getattr(args, k) is not None
    }
    if args.frames is not None:
        given["steps"] = frames_option(args.frames)
    settings.update(given)
    constants.update(_constants(args.constants))
    if args.vary:
        settings["vary"] = _ranges(args.vary)
    if args.random_colours:
        settings["random_colours"] = True
    out = args.out
    if out is None:  # the old default: a guessed place for what may be hours of work
        out = f"data/{args.preset or settings['system']}"
        warn_deprecated("hgn data generate without --out", f"--out DIR (writing {out})")
    out = data.generate(
        out,
        seed=args.seed,
        shard=args.shard,
        progress=args.progress,
        overwrite=args.overwrite,
        report=_echo,
        **settings,
        **constants,
    )
    print(f"wrote {out}" + (f" (shard {args.shard})" if args.shard else ""))


def _presets(args: argparse.Namespace) -> None:
    print(f"{'name':28s} {'system':16s} {'size':>4s} {'frames':>6s} {'dt':>6s}  description")
    for name, p in PRESETS.items():
        print(
            f"{name:28s} {p['system']:16s} {p['size']:4d} {p['steps'] + 1:6d} {p['dt']:6g}  "
            f"{p['description']}"
        )


def _import(args: argparse.Namespace) -> None:
    out = data.import_sequences(
        args.source,
        args.out,
        size=args.size,
        test_fraction=args.test_fraction,
        frames=args.frames,
        stride=args.stride,
        dt=args.dt,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=args.progress,
        report=_echo,
    )
    print(f"wrote {out}")


def _show(args: argparse.Namespace) -> None:
    png, gif = data.show(
        args.path,
        split=args.split,
        n=args.n,
        frames=args.frames,
        out=args.out,
        overwrite=args.overwrite,
    )
    print(f"wrote {png} and {gif}")


def _info(args: argparse.Namespace) -> None:
    meta = data.info(args.path)
    if args.json:
        print(json.dumps(meta, indent=2))
        return
    splits = ", ".join(f"{name} {s['n']}" for name, s in meta["splits"].items())
    frames = f"{meta['steps'] + 1} (dt={meta['dt']:g}"
    if not meta.get("has_states", True):
        lines = [
            f"source:     {meta['source']} from {meta.get('imported_from')}",
            f"trajectories: {splits}",
            f"frames:     {frames})",
            f"images:     {meta['size']}x{meta['size']} RGB uint8",
            "state:      none (imported): state-based metrics are skipped",
        ]
    else:
        constants = ", ".join(f"{k}={v:g}" for k, v in meta["constants"].items())
        variant = meta.get("variant", {})
        extras = [
            f"style {variant['style']}" if variant.get("style", "paper") != "paper" else "",
            "random colors" if variant.get("random_colours") else "",
            "varying " + ", ".join(variant["vary"]) if variant.get("vary") else "",
            "not Hamiltonian (friction)" if not variant.get("hamiltonian", True) else "",
        ]
        lines = [
            f"system:     {meta['system']} ({constants})",
            f"noise std:  {meta['noise']:g}",
            f"trajectories: {splits}",
            f"frames:     {frames}, {meta['integrator']['method']} with "
            f"{meta['integrator']['substeps']} sub-steps)",
            f"images:     {meta['size']}x{meta['size']} RGB uint8",
            f"state:      q, p of {meta['dof']} dims (clean and noisy)",
        ]
        if any(extras):
            lines.append("variant:    " + "; ".join(e for e in extras if e))
    lines += [f"seed:       {meta['seed']}", f"version:    hgn {meta['version']}"]
    print("\n".join(printable(line) for line in lines))


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes: a store's metadata is input
    like any other, and terminal escape codes in it (say in ``imported_from``) must not
    reach the user's terminal raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
