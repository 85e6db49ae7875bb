"""`hgn flow ...`: train, evaluate, sample and plot Neural Hamiltonian Flows; compare them
with RealNVP. Parsing and validation only; the work is in :mod:`hgn.flows.train`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from hgn.flows.targets import TARGETS

DEFAULT_THREADS = 1


def _model_args(p: argparse.ArgumentParser, leapfrog: bool = True) -> None:
    from hgn.flows.nhf import PRIORS, NHFConfig

    d = NHFConfig(dim=1)
    g = p.add_argument_group("NHF architecture")
    g.add_argument(
        "--flow-steps", type=int, default=d.flow_steps, help="T Hamiltonians (%(default)s)"
    )
    if leapfrog:  # compare varies it itself
        g.add_argument(
            "--leapfrog-steps", type=int, default=d.leapfrog_steps,
            help="leapfrog sub-steps per flow step (%(default)s)",
        )  # fmt: skip
    g.add_argument("--hidden", type=int, default=d.hidden, help="K and V MLP width (%(default)s)")
    g.add_argument(
        "--layers", type=int, default=d.layers, help="K and V hidden layers (%(default)s)"
    )
    g.add_argument(
        "--dt", type=float, default=d.dt, help="initial time per flow step (%(default)s)"
    )
    g.add_argument("--fixed-dt", action="store_true", help="do not learn the step sizes")
    g.add_argument("--prior", choices=PRIORS, default=d.prior, help="prior on (q0, p0)")
    g.add_argument("--sigma", type=float, default=d.sigma, help="soft-uniform width (%(default)s)")
    g.add_argument(
        "--beta", type=float, default=d.beta, help="soft-uniform sharpness (%(default)s)"
    )
    g.add_argument(
        "--posterior-hidden", type=int, default=d.posterior_hidden,
        help="width of f_psi(p | q) (%(default)s)",
    )  # fmt: skip


def _model_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "kind": "nhf",
        "flow_steps": args.flow_steps,
        "leapfrog_steps": getattr(args, "leapfrog_steps", 1),
        "hidden": args.hidden,
        "layers": args.layers,
        "dt": args.dt,
        "learn_dt": not args.fixed_dt,
        "prior": args.prior,
        "sigma": args.sigma,
        "beta": args.beta,
        "posterior_hidden": args.posterior_hidden,
    }


def _train_args(p: argparse.ArgumentParser, with_steps: bool) -> None:
    from hgn.flows.train import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("training")
    if with_steps:  # compare sets each model's steps from its time budget
        g.add_argument("--steps", type=int, default=d.steps, help="training steps (%(default)s)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="(%(default)s)")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (%(default)s)")
    g.add_argument(
        "--n-samples", type=int, default=d.n_samples,
        help="momentum samples per point in the ELBO (%(default)s)",
    )  # fmt: skip
    g.add_argument("--seed", type=int, default=0, help="seed of everything random (%(default)s)")
    g.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS,
        help="torch CPU threads (%(default)s: these small networks gain little from more)",
    )  # fmt: skip


def _train_config(args: argparse.Namespace, **override: Any) -> Any:
    from hgn.flows.train import TrainConfig

    return TrainConfig(
        **{
            "steps": getattr(args, "steps", TrainConfig.steps),
            "batch_size": args.batch_size,
            "lr": args.lr,
            "n_samples": args.n_samples,
            "seed": args.seed,
            "max_minutes": getattr(args, "max_minutes", None),
            **override,
        }
    )


def _threads(args: argparse.Namespace) -> None:
    from hgn.utils import positive_int

    torch.set_num_threads(min(2, positive_int(args.threads, "--threads")))


def _target_help() -> str:
    return f"target name ({', '.join(TARGETS)}) or a .npy file of shape (N, d)"


def cmd_train(args: argparse.Namespace) -> None:
    from hgn.flows.train import train

    _threads(args)
    result = train(
        args.target,
        args.out,
        _model_config(args),
        _train_config(args),
        resume=args.resume,
        standardise=args.standardise,
        tensorboard=not args.no_tensorboard,
    )
    print(f"trained {result.step} steps in {result.seconds:.0f} s ({result.stopped_by} budget)")
    print(f"run saved in {args.out}; next: hgn flow evaluate {args.out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from hgn.flows.train import EVAL_FILE, evaluate

    _threads(args)
    r = evaluate(args.run, args.target, args.n_importance, args.n_test)
    line = f"{r['target']}: test NLL {r['nll']:.4f} ± {r['nll_se']:.4f} nats ({r['n_test']} points"
    line += f", IWAE K={r['n_importance']})" if r["n_importance"] else ")"
    if r["entropy"] is not None:
        line += f"; entropy {r['entropy']:.4f}, gap {r['gap']:.4f}"
    print(line)
    print(f"written {Path(args.run) / EVAL_FILE}")


def cmd_sample(args: argparse.Namespace) -> None:
    from hgn.flows.train import sample

    _threads(args)
    print(f"written {sample(args.run, args.n, args.out, args.seed)}")


def cmd_plot(args: argparse.Namespace) -> None:
    from hgn.flows.nhf import load
    from hgn.flows.plots import figure9
    from hgn.flows.targets import data_source
    from hgn.flows.train import is_nhf, run_config

    _threads(args)
    config = run_config(args.run)
    model = is_nhf(load(args.run))
    data = data_source(args.target or config["target"], config["train"]["seed"])
    out = args.out or Path(args.run) / "figure9.png"
    path = figure9(
        model, data.reference(100_000), out, step=args.step, n_importance=args.n_importance
    )
    print(f"written {path}")


def cmd_compare(args: argparse.Namespace) -> None:
    from hgn.flows.train import compare, compare_markdown

    _threads(args)
    out = Path(args.out or f"compare-{Path(args.target).stem}")
    table = compare(
        args.target,
        out,
        args.minutes,
        _model_config(args),
        _train_config(args, steps=1),  # compare sets each model's steps from its time budget
        n_importance=args.n_importance,
        n_test=args.n_test,
    )
    print(compare_markdown(table))
    print(f"written {out / 'compare.md'}, {out / 'compare.json'} and {out / 'figure10.png'}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``flow`` group and its sub-commands to the top-level parser."""
    flow = sub.add_parser("flow", help="Neural Hamiltonian Flows: density estimation")
    fsub = flow.add_subparsers(dest="flow_command", required=True, metavar="COMMAND")

    p = fsub.add_parser("train", help="train an NHF on a target density or a .npy array")
    p.add_argument("--target", required=True, help=_target_help())
    p.add_argument("--out", required=True, help="run directory (checkpoint, TensorBoard)")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--standardise", action=argparse.BooleanOptionalAction, default=True,
        help="standardise the data to zero mean, unit variance (default: yes)",
    )  # fmt: skip
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    _model_args(p)
    _train_args(p, with_steps=True)
    p.set_defaults(func=cmd_train)

    p = fsub.add_parser("evaluate", help="test NLL (nats) with its standard error")
    p.add_argument("run", help="run directory")
    p.add_argument("--target", default=None, help="default: the run's own; " + _target_help())
    p.add_argument(
        "--n-importance", type=int, default=128, help="K of the IWAE bound (%(default)s)"
    )
    p.add_argument("--n-test", type=int, default=None, help="use only the first N test points")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    p.set_defaults(func=cmd_evaluate)

    p = fsub.add_parser("sample", help="draw samples into a .npy array or a .png plot")
    p.add_argument("run", help="run directory")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="FILE.npy or FILE.png")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (%(default)s)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    p.set_defaults(func=cmd_sample)

    p = fsub.add_parser("plot", help="Figure 9: densities, K(p), V(q), leapfrog field, paths")
    p.add_argument("run", help="run directory of a 2-D NHF")
    p.add_argument("--out", default=None, help="PNG path (default RUN/figure9.png)")
    p.add_argument("--target", default=None, help="target to draw (default: the run's own)")
    p.add_argument("--step", type=int, default=-1, help="flow step whose K, V to draw (last)")
    p.add_argument("--n-importance", type=int, default=32, help="K for the density (%(default)s)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    p.set_defaults(func=cmd_plot)

    p = fsub.add_parser("compare", help="Figure 10: NHF (1-3 leapfrog steps) vs RealNVP (2, 3)")
    p.add_argument("--target", required=True, help=_target_help())
    p.add_argument("--out", default=None, help="output directory (default compare-TARGET)")
    p.add_argument("--minutes", type=float, default=2.0, help="budget per model (%(default)s)")
    p.add_argument("--n-importance", type=int, default=128, help="K of NHF's bound (%(default)s)")
    p.add_argument("--n-test", type=int, default=2000, help="test points (%(default)s)")
    _model_args(p, leapfrog=False)
    _train_args(p, with_steps=False)
    p.set_defaults(func=cmd_compare)
