"""`hgn benchmark`: models × datasets at equal training time per cell (issue 23)."""

from __future__ import annotations

import argparse

from hgn.cli import add_progress_flag, command_line, deprecated_alias


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hgn benchmark`` to the top-level parser."""
    from hgn.experiments.benchmark import SIZES

    cmd = sub.add_parser(
        "benchmark",
        help="train models × datasets for equal minutes per cell on this machine; score "
        "DeepMind's VPT, SyMetric, extrapolation and sample physics; write benchmark.md, "
        "results.json, report.html and figures",
        description="Generate (or reuse) the datasets, train every model on every dataset "
        "for --minutes of training time (the process's CPU time on the CPU: --clock), each "
        "with its own `hgn train --profile small` settings, score DeepMind's valid "
        "prediction time, SyMetric, hgn's extrapolation protocol and sample physics, and "
        "write results.json, benchmark.md, report.html, vpt.png and strip_DATASET.png into "
        "--out. A model that cannot do what a protocol asks gets 'cannot: reason' in that "
        "cell, a metric the data cannot support 'n/a: reason'. Rerunning resumes: finished "
        "cells are kept. --tune runs the equal tuning sweep instead. Profiles: "
        + "; ".join(f"{name}: {s.description}" for name, s in SIZES.items()),
    )
    cmd.add_argument("--out", required=True, metavar="DIR", help="results directory")
    cmd.add_argument(
        "--profile",
        default="smoke",
        choices=list(SIZES),
        help="how big a benchmark: the profiles above (as hgn reproduce --profile)",
    )
    deprecated_alias(cmd, "--size", "--profile")
    _selection_args(cmd)
    cmd.add_argument("--jobs", type=int, default=1, help="cells trained at once, 1 or 2")
    _tuning_args(cmd)
    cmd.add_argument("--seed", type=int, default=0, help="training seed")
    cmd.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    cmd.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per process (default: 1 on CPU, as hgn reproduce)",
    )
    cmd.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="where datasets are generated or reused (default: DIR/data)",
    )
    add_progress_flag(cmd)
    cmd.set_defaults(func=_benchmark)


def _selection_args(cmd: argparse.ArgumentParser) -> None:
    """What a benchmark compares (rows, columns) and for how long per cell."""
    from hgn.experiments.benchmark import DATASET_ORDER, MAX_MINUTES, MODEL_ORDER

    cmd.add_argument(
        "--models",
        default=None,
        help=f"comma-separated registered models (default: those of {','.join(MODEL_ORDER)} "
        "registered in this version)",
    )
    cmd.add_argument(
        "--datasets",
        default=None,
        help="comma-separated systems, presets (`hgn data presets`) or paths of existing "
        f"datasets (e.g. from `hgn data import`) (default: {','.join(DATASET_ORDER)})",
    )
    cmd.add_argument(
        "--minutes",
        default=None,
        metavar="M",
        help=f"training minutes per cell, > 0 and ≤ {MAX_MINUTES} (default: the profile's; "
        "small: 10)",
    )


def _benchmark(args: argparse.Namespace) -> None:
    from hgn.experiments.benchmark import benchmark

    benchmark(
        args.out,
        size=args.profile,
        models=args.models,
        datasets=args.datasets,
        minutes=args.minutes,
        jobs=args.jobs,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        data_root=args.data_root,
        command=_command(args),
        progress=args.progress,
        clock=args.clock,
        tune=args.tune,
        tuned=args.tuned,
    )


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run, recorded with the results."""
    options = {
        "--models": args.models,
        "--datasets": args.datasets,
        "--minutes": args.minutes,
        "--jobs": None if args.jobs == 1 else args.jobs,
        "--clock": args.clock,
        "--tuned": args.tuned,
        "--seed": args.seed or None,
        "--device": None if args.device == "cpu" else args.device,
        "--threads": args.threads,
        "--data-root": args.data_root,
    }
    words = ["hgn", "benchmark", "--profile", args.profile, *(["--tune"] if args.tune else [])]
    return command_line(words, options, args.out)


def _tuning_args(cmd: argparse.ArgumentParser) -> None:
    """What --minutes counts, and the equal tuning sweep (docs/SCIENCE.md §7)."""
    cmd.add_argument(
        "--clock",
        default=None,
        metavar="{cpu,wall}",
        help="what --minutes counts: this process's CPU time (fair while other work shares "
        "the machine) or the wall clock (default: cpu on the CPU, wall on a GPU)",
    )
    cmd.add_argument(
        "--tune",
        action="store_true",
        help="run the tuning sweep instead of the table: each model's profile and its "
        "variants (learning rate ÷3, ×3, β ÷10, dynamics width ×2) as rows of their own, "
        "scored by the forward MSE ratio; writes tune.md and tune.json",
    )
    cmd.add_argument(
        "--tuned",
        default=None,
        metavar="DIR",
        help="a finished tuning sweep (`--tune`'s --out): train each model with the variant "
        "it chose (default: every model's profile)",
    )
