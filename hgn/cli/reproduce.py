"""`hgn reproduce`: the paper's comparison (Tables 1–2, Figures 6–8) in one command."""

from __future__ import annotations

import argparse

from hgn.cli import add_progress_flag, command_line


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hgn reproduce`` to the top-level parser."""
    from hgn.experiments.reproduce import MODEL_ORDER, PROFILES, SYSTEM_ORDER

    cmd = sub.add_parser(
        "reproduce",
        help="train and evaluate HNN and the HGN variants on the four systems, on noisy and "
        "clean data; write tables, figures and report.html",
        description="Generate (or reuse) the datasets (the paper's noisy data, the same "
        "without noise, clean long test sets, and clean long training sets for HGN++'s own "
        "run), train every model on every system on both regimes (HGN++ also on its long "
        "clean data, for the extrapolation and samples tables), evaluate them, run the "
        "extrapolation protocol, and write results.json, "
        "table1.md, table2.md, extrapolation.md, samples.md, figures/ and a static "
        "report.html into --out. Rerunning resumes: finished cells are kept. "
        "Profiles: " + "; ".join(f"{name}: {p.description}" for name, p in PROFILES.items()),
    )
    cmd.add_argument("--profile", default="smoke", help=f"one of: {', '.join(PROFILES)}")
    cmd.add_argument(
        "--systems",
        default=None,
        help=f"comma-separated subset of: {','.join(SYSTEM_ORDER)} (default: all)",
    )
    cmd.add_argument(
        "--models",
        default=None,
        help=f"comma-separated subset of: {','.join(MODEL_ORDER)} (default: all)",
    )
    cmd.add_argument("--out", required=True, metavar="DIR", help="results directory")
    cmd.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="where datasets are generated or reused (default: DIR/data): SYSTEM (the "
        "paper's noisy data), SYSTEM-clean, SYSTEM-clean-long and (for hgn++) "
        "SYSTEM-clean-hgnpp; a complete dataset "
        "already there (hgn data generate --preset, hgn data import, an older .npy "
        "layout) is used as it is",
    )
    cmd.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    cmd.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch: this workload is many small convolutions, which run "
        "fastest single-threaded on a few shared cores (default: 1 on CPU)",
    )
    cmd.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells trained at once, each in its own process (use the number of cores: "
        "2 on a 2-core machine); their output goes to cells/SYSTEM/MODEL/log.txt",
    )
    add_progress_flag(cmd)
    cmd.set_defaults(func=_reproduce)


def _reproduce(args: argparse.Namespace) -> None:
    from hgn.experiments.reproduce import reproduce

    reproduce(
        args.out,
        profile=args.profile,
        systems=args.systems,
        models=args.models,
        data_root=args.data_root,
        device=args.device,
        threads=args.threads,
        jobs=args.jobs,
        command=_command(args),
        progress=args.progress,
    )


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run, recorded with the results."""
    options = {
        "--systems": args.systems,
        "--models": args.models,
        "--data-root": args.data_root,
        "--device": None if args.device == "cpu" else args.device,
        "--threads": args.threads,
        "--jobs": None if args.jobs == 1 else args.jobs,
    }
    return command_line(["hgn", "reproduce", "--profile", args.profile], options, args.out)
