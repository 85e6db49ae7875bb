"""`hgn flow ...`: train, evaluate, sample and plot Neural Hamiltonian Flows; compare them
with zuko's RealNVP and NSF. Parsing and validation only; the work is in
:mod:`hgn.flows.train`, :mod:`hgn.flows.compare` and :mod:`hgn.flows.plots`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

from hgn.cli import add_progress_flag, deprecated_alias, warn_deprecated
from hgn.errors import UserError

DEFAULT_THREADS = 1


def _model_args(p: argparse.ArgumentParser) -> None:
    from hgn.flows.nhf import PRIORS, NHFConfig

    d = NHFConfig(dim=1)
    g = p.add_argument_group("NHF architecture")
    g.add_argument("--flow-steps", type=int, default=d.flow_steps, help="T Hamiltonians")
    g.add_argument(
        "--leapfrog-steps", type=int, default=d.leapfrog_steps,
        help="leapfrog sub-steps per flow step (compare's NHF-LF<k> sets k)",
    )  # fmt: skip
    g.add_argument("--hidden", type=int, default=d.hidden, help="K and V MLP width")
    g.add_argument("--layers", type=int, default=d.layers, help="K and V hidden layers")
    g.add_argument("--dt", type=float, default=d.dt, help="initial time per flow step")
    g.add_argument("--fixed-dt", action="store_true", help="do not learn the step sizes")
    g.add_argument(
        "--quadratic-kinetic", action=argparse.BooleanOptionalAction,
        default=d.quadratic_kinetic, help="K(p) = |p|²/2 + MLP(p)",
    )  # fmt: skip
    g.add_argument(
        "--quadratic-potential", action=argparse.BooleanOptionalAction,
        default=d.quadratic_potential, help="V(q) = |q|²/2 + MLP(q)",
    )  # fmt: skip
    g.add_argument("--prior", choices=PRIORS, default=d.prior, help="prior on (q0, p0)")
    g.add_argument("--sigma", type=float, default=d.sigma, help="soft-uniform width")
    g.add_argument("--beta", type=float, default=d.beta, help="soft-uniform sharpness")
    g.add_argument(
        "--posterior-hidden", type=int, default=d.posterior_hidden,
        help="width of f_psi(p | q)",
    )  # fmt: skip


def _model_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "kind": "nhf",
        "flow_steps": args.flow_steps,
        "leapfrog_steps": args.leapfrog_steps,
        "hidden": args.hidden,
        "layers": args.layers,
        "dt": args.dt,
        "learn_dt": not args.fixed_dt,
        "quadratic_kinetic": args.quadratic_kinetic,
        "quadratic_potential": args.quadratic_potential,
        "prior": args.prior,
        "sigma": args.sigma,
        "beta": args.beta,
        "posterior_hidden": args.posterior_hidden,
    }


def _train_args(p: argparse.ArgumentParser, with_steps: bool) -> None:
    from hgn.flows.train import COMPILE_MIN_STEPS, DEFAULT_MINUTES, FlowTrainConfig

    d = FlowTrainConfig()
    g = p.add_argument_group("training")
    if with_steps:  # compare sets each model's steps from its time budget
        g.add_argument(
            "--steps", type=int, default=None,
            help="optimiser steps: train exactly this many (the schedule follows the "
            "steps: reproducible to the bit) (default: a time budget, --minutes, "
            f"{DEFAULT_MINUTES:g} if neither is given; on --resume, the run's own)",
        )  # fmt: skip
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    g.add_argument(
        "--warmup", type=float, default=d.warmup,
        help="fraction of the run spent warming the learning rate up",
    )  # fmt: skip
    g.add_argument("--clip", type=float, default=d.clip, help="gradient-norm clip")
    g.add_argument(
        "--momentum-samples", dest="n_samples", type=int, default=d.n_samples, metavar="K",
        help="K, momentum samples per point in NHF's training objective (config key "
        "train.n_samples); a step costs "
        "about K times one sample's, so in many dimensions 1 trains further in a fixed time "
        "(digits, 2.5 minutes: -91.8 nats with 1 against -90.2 with 4)",
    )  # fmt: skip
    deprecated_alias(p, "--n-samples", "--momentum-samples")
    g.add_argument(
        "--objective", choices=("iwae", "elbo"), default=d.objective,
        help="NHF's training objective: the importance-weighted bound or the ELBO",
    )  # fmt: skip
    g.add_argument(
        "--logit", type=float, default=None, metavar="ALPHA",
        help="map data in [0, 1] through logit(ALPHA + (1 - 2 ALPHA) x) before standardising "
        "(densities stay those of x); 0: none (default: the target's own: digits 1e-6, "
        "else none)",
    )  # fmt: skip
    g.add_argument("--seed", type=int, default=d.seed, help="seed of everything random")
    g.add_argument(
        "--compile", action=argparse.BooleanOptionalAction,
        default=d.compile if with_steps else False,
        help="train through torch.compile: ~15%% faster steps after a 15-50 s compilation "
        "at the start, eager if compiling fails or the first compiled gradient differs "
        "from eager's (default: "
        + (
            f"only runs on the clock or of {COMPILE_MIN_STEPS:,} steps or more)"
            if with_steps
            else "no: each model trains on its own minutes, which a compilation would use)"
        ),
    )  # fmt: skip
    g.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS,
        help="torch CPU threads (these small networks gain little from more)",
    )  # fmt: skip


def _train_config(args: argparse.Namespace, **override: Any) -> Any:
    from hgn.flows.train import FlowTrainConfig

    steps = getattr(args, "steps", None)
    return FlowTrainConfig(
        **{
            "steps": FlowTrainConfig.steps if steps is None else steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "warmup": args.warmup,
            "clip": args.clip,
            "n_samples": args.n_samples,
            "objective": args.objective,
            "seed": args.seed,
            "compile": args.compile,
            "max_minutes": getattr(args, "max_minutes", None),
            **override,
        }
    )


def _threads(args: argparse.Namespace) -> None:
    from hgn.flows.nhf import check_int

    torch.set_num_threads(check_int(args.threads, "--threads", 1, 1024))


def _target_help() -> str:
    from hgn.flows.targets import TARGET_NAMES

    return f"target name ({', '.join(TARGET_NAMES)}) or a .npy file of shape (N, d) or (N, H, W)"


SETTINGS = {
    **{key: "model" for key in (
        "flow_steps", "leapfrog_steps", "hidden", "layers", "dt", "fixed_dt",
        "quadratic_kinetic", "quadratic_potential", "prior", "sigma", "beta",
        "posterior_hidden",
    )},
    **{key: "train" for key in (
        "batch_size", "lr", "warmup", "clip", "n_samples", "objective", "seed", "compile",
    )},
    "target": "", "standardise": "", "logit": "",
}  # fmt: skip
"""The ``flow train`` options that are config values, by the section they set (``""``:
the run's own keys); ``--steps`` and ``--minutes`` are budgets, not settings."""


def _given(args: argparse.Namespace) -> set[str]:
    """The destinations of the options the user typed (not left at their defaults)."""
    typed = [token.split("=", 1)[0] for token in getattr(args, "argv", [])]
    return {
        action.dest
        for action in args.parser._actions
        if any(option in typed for option in action.option_strings)
    }


def _flow_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run's config: defaults ← ``--config`` ← the options typed ← ``--set``."""
    from hgn.flows.train import resolve_config

    model, train = _model_config(args), dataclasses.asdict(_train_config(args))
    base = {"target": args.target, "standardise": args.standardise, "logit": args.logit}
    flat = {**base, "model": model, "train": train}
    typed, budgets = _given(args) & set(SETTINGS), _given(args) & {"steps", "max_minutes"}
    given: dict[str, Any] = {"model": {}, "train": {key: train[key] for key in budgets}}
    for dest in typed:
        section, key = SETTINGS[dest], "learn_dt" if dest == "fixed_dt" else dest
        if section:
            given[section][key] = flat[section][key]
        else:
            given[dest] = flat[dest]
    if args.resume:
        _check_resume(args, typed, given)
    defaults = {**base, "model": model, "train": train}
    return resolve_config(defaults, args.config, given, args.sets)


def _check_resume(args: argparse.Namespace, typed: set[str], given: dict[str, Any]) -> None:
    """A resumed run trains with its saved config: refuse, in one line, any option typed
    with another value than the run's (it used to be ignored silently), and --config or
    --set; the same value typed again changes nothing and passes."""
    from hgn.runs import FLOW, read

    if not args.out or not Path(args.out, "checkpoint.pt").is_file():
        return  # the trainer says there is nothing to resume
    try:
        saved = read(args.out)
    except UserError:
        return  # not a flow run: the trainer refuses it in its own words
    if saved["kind"] != FLOW:
        return
    saved = saved["config"]
    changed = []
    for dest in typed - {"target"}:  # the target has its own check, with its own message
        section = SETTINGS[dest]
        if not section:
            now, before = given[dest], saved.get(dest)
        else:
            key = "learn_dt" if dest == "fixed_dt" else dest
            now, before = given[section][key], saved.get(section, {}).get(key, given[section][key])
        if now != before:
            changed.append(dest)
    shown = sorted(_option(args.parser, dest) for dest in changed)
    shown += ["--config"] * bool(args.config) + ["--set"] * bool(args.sets)
    if shown:
        raise UserError(
            "--resume continues a run with its saved config; drop the overrides "
            f"({', '.join(shown)}), or train a new run"
        )


def _option(parser: argparse.ArgumentParser, dest: str) -> str:
    """The option that sets ``dest``, as ``--help`` spells it (not an old spelling, not
    the config key: ``n_samples`` is ``--momentum-samples``)."""
    return next(
        a.option_strings[0]
        for a in parser._actions
        if a.dest == dest and a.option_strings and a.help is not argparse.SUPPRESS
    )


def cmd_train(args: argparse.Namespace) -> None:
    from hgn.flows.train import FlowTrainConfig, dump_config, train

    config = _flow_config(args)
    if args.print_config:
        sys.stdout.write(dump_config(config))
        return
    if not config["target"] or not args.out:
        raise UserError("hgn flow train needs --target (or target in --config) and --out")
    _threads(args)
    result = train(
        config["target"],
        args.out,
        config["model"],
        FlowTrainConfig(**config["train"]),
        resume=args.resume,
        keep_steps=args.steps is None,
        standardise=config["standardise"],
        logit=config["logit"],
        tensorboard=not args.no_tensorboard,
        progress=args.progress,
    )
    done = result.step - result.start
    print(
        f"trained {done} steps in this run, {result.step} in all, {result.seconds:.0f} s "
        f"({result.stopped_by} budget)"
    )
    print(f"wrote {args.out}; next: hgn flow evaluate {args.out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from hgn.flows.train import evaluate

    _threads(args)
    r = evaluate(
        args.run, args.target, args.n_importance, args.n_test, args.progress,
        seed=args.seed, out=args.out, overwrite=args.overwrite,
    )  # fmt: skip
    se = f" ± {r['nll_se']:.4f}" if r["nll_se"] is not None else ""
    line = f"{r['target']}: test NLL {r['nll']:.4f}{se} nats"
    if r["dim"] > 1:
        line += f" ({r['nats_per_dim']:.4f} nats/dim)"
    line += f" ({r['n_test']} points"
    line += f", IWAE K={r['n_importance']})" if r["n_importance"] else ")"
    if r["entropy"] is not None:
        line += f"; entropy {r['entropy']:.4f}, gap {r['gap']:.4f}"
    print(line)
    if not r["written"]:
        print("did not write eval.json (not a run directory); pass --out FILE")
        return
    note = ""
    if r["replaced"]:
        note = " (replaced the earlier file)" if args.out else " (replaced the run's earlier one)"
    print(f"wrote {r['written']}{note}")


def cmd_sample(args: argparse.Namespace) -> None:
    from hgn.flows.train import sample

    _threads(args)
    print(f"wrote {sample(args.run, args.n, args.out, args.seed, args.overwrite)}")


def cmd_plot(args: argparse.Namespace) -> None:
    from hgn.flows.nhf import NHF
    from hgn.flows.plots import plot_run
    from hgn.flows.targets import check_points
    from hgn.flows.train import run_data, run_file
    from hgn.plots import check_output

    _threads(args)
    model, data = run_data(args.run, args.target)
    reference = check_points(data.reference(100_000), model.dim, f"data of {data.name}")
    if args.out is not None:
        out = check_output(args.out, (".png",), args.overwrite)
    else:
        figure9 = isinstance(model, NHF) and model.dim == 2 and data.image_shape is None
        name = "figure9.png" if figure9 else "plot.png"
        found = run_file(args.run, name)
        if found is None:
            raise UserError(f"cannot write {name} beside {args.run}; pass --out FILE.png")
        out = found
    path = plot_run(
        model, reference, data.image_shape, out, title=f"{Path(args.run).name} on {data.name}",
        step=args.step, n_importance=args.n_importance, progress=args.progress,
    )  # fmt: skip
    print(f"wrote {path}")


def cmd_compare(args: argparse.Namespace) -> None:
    from hgn.flows.compare import compare, compare_markdown

    _threads(args)
    if args.out is None:  # the old default: a guessed place for minutes of work per model
        args.out = f"compare-{Path(args.target).stem}"
        warn_deprecated("hgn flow compare without --out", f"--out DIR (writing {args.out})")
    out = Path(args.out)
    table = compare(
        args.target,
        out,
        args.minutes,
        _model_config(args),
        _train_config(args, steps=1),  # compare sets each model's steps from its time budget
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        n_importance=args.n_importance,
        n_test=args.n_test,
        curve_points=args.curve_points,
        reference=args.reference,
        progress=args.progress,
        logit=args.logit,
    )
    print(compare_markdown(table))
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'} and {out / 'figure10.png'}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``flow`` group and its sub-commands to the top-level parser."""
    flow = sub.add_parser("flow", help="Neural Hamiltonian Flows: density estimation")
    fsub = flow.add_subparsers(dest="flow_command", required=True, metavar="COMMAND")
    _add_train(fsub)
    _add_evaluate(fsub)
    _add_sample(fsub)
    _add_plot(fsub)
    _add_compare(fsub)


def _add_train(fsub: argparse._SubParsersAction) -> None:
    from hgn.flows.train import DEFAULT_MINUTES

    p = fsub.add_parser(
        "train",
        help="train an NHF on a target density or a .npy array",
        description="Settings are layered as hgn train's: the defaults, then --config FILE "
        "(YAML with model, train, target, standardise, logit; what --print-config writes "
        "and every run keeps as config.yaml), then the options given here, then --set "
        "section.key=value. --resume continues a run with its own saved config.",
    )
    p.add_argument("--target", default=None, help=_target_help() + " (or in --config)")
    p.add_argument("--out", default=None, help="run directory to create or resume (required)")
    p.add_argument(
        "--minutes", dest="max_minutes", type=float, default=None, metavar="M",
        help="wall-clock budget of this invocation, compilation included; without --steps "
        "the learning-rate schedule follows the clock and ends with it (default: "
        f"{DEFAULT_MINUTES:g} when --steps is not given either; on --resume, what is "
        "left of the run's saved budget)",
    )  # fmt: skip
    deprecated_alias(p, "--max-minutes", "--minutes")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--standardise", action=argparse.BooleanOptionalAction, default=True,
        help="standardise the data to zero mean, unit variance",
    )  # fmt: skip
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    p.add_argument("--config", default=None, help="YAML config file (see --print-config)")
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="override one config value, e.g. --set model.hidden=32 (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    add_progress_flag(p)
    _model_args(p)
    _train_args(p, with_steps=True)
    p.set_defaults(parser=p)
    p.set_defaults(func=cmd_train)


def _add_evaluate(fsub: argparse._SubParsersAction) -> None:
    p = fsub.add_parser("evaluate", help="test NLL (nats) with its standard error")
    p.add_argument("run", help="run directory (or a checkpoint file)")
    p.add_argument("--target", default=None, help="default: the run's own; " + _target_help())
    p.add_argument("--n-importance", type=int, default=128, help="K of the IWAE bound")
    p.add_argument(
        "--n-test", type=int, default=None,
        help="use only the first N test points (default: all)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    p.add_argument(
        "--out", default=None, help="JSON file to write (default: RUN/eval.json, the run's own)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    add_progress_flag(p)
    p.set_defaults(func=cmd_evaluate)


def _add_sample(fsub: argparse._SubParsersAction) -> None:
    p = fsub.add_parser("sample", help="draw samples into a .npy array or a .png picture")
    p.add_argument("run", help="run directory (or a checkpoint file)")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="FILE.npy or FILE.png")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    p.set_defaults(func=cmd_sample)


def _add_plot(fsub: argparse._SubParsersAction) -> None:
    p = fsub.add_parser(
        "plot",
        help="Figure 9 for a 2-D NHF; a grid of samples for image data; 2-D marginals else",
    )
    p.add_argument("run", help="run directory (or a checkpoint file)")
    p.add_argument(
        "--out", default=None,
        help="PNG file to write (default: RUN/figure9.png for a 2-D NHF, else RUN/plot.png)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--target", default=None, help="target to draw (default: the run's own)")
    p.add_argument(
        "--step", type=int, default=-1, help="flow step whose K, V to draw (-1: the last)"
    )
    p.add_argument("--n-importance", type=int, default=32, help="K for the density")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    add_progress_flag(p)
    p.set_defaults(func=cmd_plot)


def _add_compare(fsub: argparse._SubParsersAction) -> None:
    from hgn.flows.compare import DEFAULT_MODELS

    p = fsub.add_parser(
        "compare",
        help="NHF against zuko's RealNVP and NSF at equal time and matched parameters: "
        "final NLL, NLL against wall-clock time, time to a common NLL (Figure 10)",
    )
    p.add_argument("--target", required=True, help=_target_help())
    p.add_argument(
        "--out", default=None,
        help="results directory to write (required; left out, compare-TARGET is still "
        "written, with a deprecation line)",
    )  # fmt: skip
    p.add_argument(
        "--minutes", type=float, default=2.0, metavar="M", help="wall-clock budget per model"
    )
    p.add_argument(
        "--models", default=",".join(DEFAULT_MODELS),
        help="comma-separated: NHF (the architecture options below), NHF-LF<k>, "
        "RealNVP-<k>, NSF-<k>",
    )  # fmt: skip
    p.add_argument(
        "--reference", default="RealNVP-3",
        help="model whose final NLL is the common level",
    )  # fmt: skip
    p.add_argument(
        "--curve-points", type=int, default=8,
        help="moments of training at which test NLL is measured",
    )  # fmt: skip
    p.add_argument("--n-importance", type=int, default=128, help="K of NHF's bound")
    p.add_argument("--n-test", type=int, default=2000, help="test points")
    add_progress_flag(p)
    _model_args(p)
    _train_args(p, with_steps=False)
    p.set_defaults(func=cmd_compare)
