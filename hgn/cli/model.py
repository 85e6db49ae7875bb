"""`hgn train | evaluate | rollout | sample`: thin wrappers over training and evaluation."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch

from hgn.checks import check_range
from hgn.cli import add_progress_flag, deprecated_alias, frames_option
from hgn.utils import (
    UserError,
    check_memory,
    check_output_dir,
    load_checkpoint,
    max_threads,
    positive_int,
)

MAX_PICTURE_FRAMES = 10_001
"""The most frames a rollout or sample picture may take: 10,000,001 ran for more than
five minutes before it ran out of memory, and no animation needs more."""
MAX_TRAIN_STEPS = 10**9
"""The most optimisation steps ``--steps`` may ask for (a count beyond it is a typo)."""
MAX_SPEED = 100.0
"""The fastest ``rollout --speed``: the integrator's sub-steps grow with it, and a speed
of 2^63 ran for good."""
MAX_SAMPLES = 1_000
"""The most trajectories ``hgn sample`` draws into one picture (``--n 100000000`` grew to
23 GB before the kernel killed it)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
    _add_train(sub)
    _add_evaluate(sub)
    _add_rollout(sub)
    _add_sample(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from hgn.models import MODELS, get_model
    from hgn.training.config import DEFAULT_PROFILE, PROFILES

    get_model("hgn")  # registers the baselines too, so --help lists every model
    p = sub.add_parser(
        "train",
        help="train an HGN (or a baseline) on a dataset",
        description="Train a sequence model. Config layers: --profile, then --config FILE.yaml, "
        "then --model, then --set section.key=value (repeatable). Checkpoints and the full "
        "config go to --out; --resume continues a stopped run exactly.",
    )
    p.add_argument("--data", help="dataset directory (hgn data generate)")
    p.add_argument("--out", help="run directory to create or resume (required)")
    p.add_argument(
        "--profile",
        choices=list(PROFILES),
        help=f"built-in config to start from (default: {DEFAULT_PROFILE})",
    )
    p.add_argument("--config", help="YAML file with 'model:' and 'train:' sections")
    p.add_argument(
        "--model",
        choices=list(MODELS),
        help="model to train (default: the profile's; small: hgn++, paper: hgn)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=1e-3 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--steps", type=int, help="optimiser steps in all (default: the config's train.steps)"
    )
    p.add_argument(
        "--minutes",
        dest="max_minutes",
        type=float,
        metavar="M",
        help="wall-clock budget counted from the start of this command (default: the "
        "config's train.max_minutes; on --resume, what is left of the run's saved budget)",
    )
    deprecated_alias(p, "--max-minutes", "--minutes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (1 is fastest on shared cores: HGN's many tiny ops "
        "each wait for every descheduled worker)",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    add_progress_flag(p)
    p.set_defaults(func=_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="per-step MSE, mean-image baseline, energy, valid prediction time",
        description="Evaluate a run on the train and test splits; writes EVAL/metrics.json, "
        "EVAL/metrics.md and plots.",
    )
    p.add_argument("run", help="run directory (hgn train --out)")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--out", required=True, metavar="EVAL", help="directory to write")
    p.add_argument("--max-sequences", type=int, default=1000, help="per split")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    p.add_argument(
        "--vpt-fraction",
        type=float,
        default=0.5,
        help="valid-prediction threshold: noise floor + this fraction of (mean-image MSE "
        "- noise floor), in (0, 1]",
    )
    p.add_argument(
        "--protocol",
        choices=["tables", "extrapolate"],
        default="tables",
        help="tables: the paper's Tables 1-2 on both splits (metrics.*); extrapolate: on a "
        "long test set, infer the state at --start and roll forward, backward, at 2x and "
        "1/2 speed against the simulator (extrapolate.md, .json and pictures)",
    )
    _extrapolate_args(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_progress_flag(p)
    p.set_defaults(func=_evaluate)


def _extrapolate_args(p: argparse.ArgumentParser) -> None:
    """The options of ``evaluate --protocol extrapolate`` (refused with ``tables``)."""
    from hgn.evaluation.extrapolate import DEFAULT_START

    p.add_argument(
        "--start",
        type=int,
        help=f"extrapolate: first frame of the window the model reads (default: {DEFAULT_START})",
    )
    p.add_argument(
        "--backward-start",
        metavar="FRAME|end",
        help="extrapolate: the backward rollout reads a window of its own from FRAME, or "
        "from the last window of the test set with 'end', and rolls back to frame 0 (how "
        "a long test set is rolled far backwards) (default: --start's window)",
    )
    p.add_argument(
        "--align",
        choices=["start", "state"],
        help="extrapolate: start every rollout at the window's first frame (start: a model "
        "whose state sits later in its window, like HGN++, is first taken back there with "
        "its own dynamics, so all models are scored on the same frames) or at the frame of "
        "the inferred state (state: no frame the encoder read is scored) (default: start)",
    )
    p.add_argument(
        "--oracle",
        action="store_true",
        help="extrapolate, generated data: add the oracle's row (the true physics from the "
        "state fitted to the same frames), the model's valid time as a fraction of it, and "
        "the oracle's valid time against a relative state error (0.01 %% to 3 %%)",
    )


def _add_rollout(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollout",
        help="animate a rollout next to the ground truth",
        description="Infer the state of one sequence and roll it out, faster/slower (--speed) "
        "or backwards (--backward); the ground truth is shown where the data has a frame.",
    )
    p.add_argument("run", help="run directory (hgn train --out)")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--split", default="test", choices=["train", "test"], help="which split")
    p.add_argument("--index", type=int, default=0, help="sequence index in the split")
    _frames_arg(p)
    p.add_argument("--speed", type=float, default=1.0, help="multiplies dt")
    p.add_argument("--backward", action="store_true", help="negate dt: run back in time")
    _picture_args(p, "(a strip)")
    p.set_defaults(func=_rollout)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="new trajectories from the model's prior or aggregate posterior",
        description="Sample initial states and roll them out (paper Fig. 8); says what it "
        "samples from.",
    )
    p.add_argument("run", help="run directory (hgn train --out)")
    p.add_argument("--n", type=int, default=8, help="trajectories to draw")
    _frames_arg(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the initial states")
    _picture_args(p, "(one row per sample)")
    p.set_defaults(func=_sample)


def _frames_arg(p: argparse.ArgumentParser) -> None:
    """``--frames`` of a rollout picture, and its old spelling ``--steps`` (the steps
    between the frames: ``--steps T`` is ``--frames T+1``)."""
    p.add_argument(
        "--frames", type=int, default=31, help="frames of each rollout, the first included"
    )
    deprecated_alias(p, "--steps", "--frames", lambda t: t + 1, " (--steps T is --frames T+1)")


def _picture_args(p: argparse.ArgumentParser, png: str) -> None:
    """What ``rollout`` and ``sample`` share: they write one picture, so they take it and
    its options alike (read back by :func:`_picture_options`)."""
    p.add_argument("--fps", type=int, default=8, help="frames per second of a .gif/.mp4")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", required=True, help=f".gif, .mp4 or .png {png}")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it exists (refused otherwise: hgn cannot tell its own "
        "earlier picture from a file of yours)",
    )


def _picture_options(args: argparse.Namespace, n: int = 1) -> dict[str, Any]:
    """The options of :func:`_picture_args` and ``--frames``, checked, as keyword
    arguments (``steps``: the steps between the frames); with the memory the ``n``
    rollouts take checked too, before the model is loaded (frames of the run's image
    size, several float copies of each)."""
    steps = frames_option(args.frames, most=MAX_PICTURE_FRAMES)
    checkpoint = os.path.join(args.run, "checkpoint.pt")
    if os.path.isfile(checkpoint):
        model = load_checkpoint(checkpoint)["config"].get("model", {})
        size = model.get("image_size", 64) if isinstance(model, dict) else 64
        size = size if isinstance(size, int) and 0 < size <= 4096 else 64
        frames = 2 * n * (steps + 1) * 3 * size * size
        check_memory(frames * 4 * 4, f"{n} rollout(s) of {steps + 1} frames", "ask for fewer")
    return {
        "steps": steps,
        "fps": positive_int(args.fps, "--fps", most=100),
        "device": args.device,
        "overwrite": args.overwrite,
    }


def check_seed(seed: int, option: str = "--seed") -> int:
    """A seed torch accepts (0 ≤ seed < 2^63), or one line: torch raises on others."""
    if not 0 <= seed < 2**63:
        raise UserError(f"{option} must be an integer from 0 to 2^63 - 1, got {seed}")
    return seed


def _threads(requested: int = 1) -> None:
    """Set torch's CPU threads; one by default. HGN runs thousands of tiny ops (the
    Hamiltonian net on 4×4 maps), and when the cores are shared every multi-threaded op
    waits for a descheduled worker: on our 2-core machine under load, a training step
    took 20-40× longer with 2 threads than with 1 (docs/RESULTS.md, "Training speed")."""
    torch.set_num_threads(positive_int(requested, "--threads", most=max_threads()))


def _train(args: argparse.Namespace) -> None:
    from hgn.training.config import DEFAULT_PROFILE, dump_yaml, resolve
    from hgn.training.train import train

    if args.steps is not None:
        positive_int(args.steps, "--steps", most=MAX_TRAIN_STEPS)
    check_range(args.max_minutes, "--minutes", gt=0)
    if args.print_config:
        sys.stdout.write(
            dump_yaml(
                resolve(args.profile or DEFAULT_PROFILE, args.config, args.model, args.sets),
                auto=True,
            )
        )
        return
    if not args.data or not args.out:
        raise UserError("hgn train needs --data DIR and --out RUN")
    config = None
    if args.resume:
        if args.config or args.model or args.sets or args.profile:
            raise UserError("--resume continues a run with its saved config; drop the overrides")
    else:
        config = resolve(args.profile or DEFAULT_PROFILE, args.config, args.model, args.sets)
    _threads(args.threads)
    result = train(
        args.data,
        args.out,
        config,
        resume=args.resume,
        device=args.device,
        steps=args.steps,
        max_minutes=args.max_minutes,
        progress=args.progress,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"trained {result.step} steps in {result.seconds / 60:.1f} min "
            f"(stopped by {result.stopped_by}); wrote {args.out}/checkpoint.pt"
        )
        if result.stopped_by == "time" and result.step == result.start:
            print(
                "the run's saved time budget was already spent; pass --minutes M to "
                "train M more minutes"
            )


def _evaluate(args: argparse.Namespace) -> None:
    from hgn.evaluation.commands import evaluate

    _threads()
    check_output_dir(args.out, "evaluate")  # both protocols: refused before the work
    positive_int(args.max_sequences, "--max-sequences", most=10_000_000)
    positive_int(args.batch_size, "--batch-size", most=MAX_SAMPLES)
    # what both protocols take, given once so that they cannot drift apart
    common = {
        "max_sequences": args.max_sequences,
        "batch_size": args.batch_size,
        "device": args.device,
        "vpt_fraction": args.vpt_fraction,
        "progress": args.progress,
        "warn": _warn,
    }
    if args.protocol == "extrapolate":
        _extrapolate(args, common)
        return
    if args.start is not None or args.align is not None or args.oracle or args.backward_start:
        raise UserError(
            "--start, --backward-start, --align and --oracle belong to --protocol extrapolate"
        )
    metrics = evaluate(args.run, args.data, args.out, **common)
    for name, s in metrics["splits"].items():
        print(
            f"{name}: MSE ×1e4 {s['mse']['mean_x1e4']:.2f} ± {s['mse']['std_x1e4']:.2f} "
            f"(mean image {s['baseline_mse']['mean_x1e4']:.2f}, ratio "
            f"{s['ratio_to_baseline']:.3f}); H variance ×1e4 "
            f"{s['energy']['var_mean_x1e4']:.3g}"
        )
    print(f"wrote {args.out}/metrics.md, metrics.json and plots")


def _extrapolate(args: argparse.Namespace, common: dict[str, Any]) -> None:
    from hgn.evaluation.commands import extrapolate
    from hgn.evaluation.extrapolate import DEFAULT_START
    from hgn.evaluation.reports import FILES

    start = DEFAULT_START if args.start is None else args.start
    align = "start" if args.align is None else args.align
    backward = args.backward_start
    if backward is not None and backward != "end":
        try:
            backward = int(backward)
        except ValueError:
            raise UserError(
                f"--backward-start must be a frame index or 'end', got {backward!r}"
            ) from None
    results = extrapolate(
        args.run, args.data, args.out, start=start, align=align, oracle=args.oracle,
        backward_start=backward, **common,
    )  # fmt: skip
    for name, r in results["rollouts"].items():
        if "skipped" in r:
            print(f"{name:>8}: cannot ({r['skipped']})")
            continue
        print(
            f"{name:>8}: {r['steps']} steps, ratio to mean image {r['ratio']:.3f}, valid "
            f"prediction time {r['vpt_mean']:.1f} of {r['steps']}"
        )
        if "vpt_fraction_of_oracle" in r:  # with --oracle
            o, f = results["oracle"]["rollouts"][name], r["vpt_fraction_of_oracle"]
            shown = "n/a" if f is None else f"{f:.2f}"
            print(f"{'':>8}  oracle {o['vpt_mean']:.1f} of {o['steps']}; model/oracle {shown}")
    if "skipped" in results.get("oracle", {}):
        print(f"oracle: not run ({results['oracle']['skipped']})")
    print(f"wrote {', '.join(FILES.values())} in {args.out}")


def _warn(message: str) -> None:
    print(f"hgn: warning: {message}", file=sys.stderr)


def _rollout(args: argparse.Namespace) -> None:
    from hgn.evaluation.commands import render_rollout

    _threads()
    check_range(args.speed, "--speed", gt=0, le=MAX_SPEED)
    path = render_rollout(
        args.run,
        args.data,
        args.out,
        index=args.index,
        speed=args.speed,
        backward=args.backward,
        split=args.split,
        warn=_warn,
        **_picture_options(args),
    )
    print(f"wrote {path}")


def _sample(args: argparse.Namespace) -> None:
    from hgn.evaluation.commands import render_samples

    _threads()
    n = positive_int(args.n, "--n", most=MAX_SAMPLES)
    path = render_samples(
        args.run,
        args.out,
        n=n,
        seed=check_seed(args.seed),
        say=print,
        **_picture_options(args, n=n),
    )
    print(f"wrote {path}")
