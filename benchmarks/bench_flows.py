"""Speed of Neural Hamiltonian Flows against zuko's RealNVP and NSF at matched parameters.

Prints, from one process (same machine state for every row; rounds interleave the
variants so that a burst of load on a shared machine hits them alike):

1. one NHF training step (loss, backward, Adam), at two configurations: the one before
   issue 13 (8 flow steps x 2 leapfrog sub-steps, ELBO with 1 momentum sample, 75,276
   parameters on 2-D data) and the ``hgn flow train`` defaults (6 x 1, IWAE bound with
   K = 4); at each, every way of integrating and differentiating the flow on the same
   weights and batch:
   the implementation before issue 13 (joint ``grad_fn`` leapfrog, ∇K recomputed at the
   start of every sub-step; closed-form ∇E with an autograd backward; foreach Adam),
   ``torch.func.grad`` on K + V, then cumulatively: the first-same-as-last leapfrog, the
   closed-form backward of ∇E, fused Adam (these four run ``hgn/nn.py`` as of commit
   :data:`BEFORE`, read from git), every product in BLAS's fast layout with an in-place
   backward (what ``hgn flow train --no-compile`` runs) and, with ``--compile``, two ways of
   ``torch.compile``: deriving the backward of plain ∇E algebra (what ``--compile`` did
   before) and tracing the closed-form one (``hgn flow train``'s default); their
   compilation times are printed too;
2. per model (NHF before issue 13 and at its defaults; zuko's RealNVP and NSF with 2 and
   3 layers, widths matched to the NHF defaults' parameter count): parameters, training
   steps/s (each at its own objective), samples/s and log_prob/s (NHF's
   log_prob is the importance-weighted bound: K = 1 is the ELBO, K = 128 what ``hgn flow
   evaluate`` reports).

Usage: .venv/bin/python benchmarks/bench_flows.py [--threads 1] [--batch-size 512]
       [--rounds 7] [--compile]
Timings: per round the best of 3 calls, then the median over rounds; the training-step
table adds each variant's speed-up over the first row within every round (median, and
the least and most over the rounds), the figure that load changes least.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hgn.flows import NHF, NHFConfig, build, n_parameters
from hgn.flows.compare import matched, throughput, time_per_call
from hgn.flows.nhf import DensityModel, HamiltonianStep
from hgn.flows.targets import DataSource, data_source
from hgn.flows.train import FlowTrainConfig, optimiser
from hgn.physics.integrators import grad_of, leapfrog, leapfrog_separable

Integrate = Callable[[HamiltonianStep, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

BEFORE = "dbc2d2e"
"""The commit whose ``hgn/nn.py`` the "main before" rows run: the state of the code when
the work on the ∇E layouts started (23.4 steps/s recorded at the old configuration)."""


def _load_before() -> Any:
    """``hgn/nn.py`` as of :data:`BEFORE`, read from git and imported as its own module,
    so that the old code is timed in this process beside the new, not remembered."""
    text = subprocess.run(
        ["git", "show", f"{BEFORE}:hgn/nn.py"], capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "nn_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("nn_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nn_before"] = module
    spec.loader.exec_module(module)
    return module


OLD = _load_before()


def _before(step: HamiltonianStep, q: Tensor, p: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """hgn before issue 13: the joint-gradient leapfrog with a memo that skipped repeated
    ∇V but recomputed ∇K at the start of every sub-step (a third of the forward work),
    ∇E as plain algebra (the old layouts) differentiated by autograd."""
    memo: dict[str, tuple[Tensor, Tensor]] = {}

    def grad_fn(q_: Tensor, p_: Tensor) -> tuple[Tensor, Tensor]:
        if memo.get("q", (None,))[0] is not q_:
            memo["q"] = (q_, OLD.EnergyMLP.grad_autograd(step.potential, q_))
        if memo.get("p", (None,))[0] is not p_:
            memo["p"] = (p_, OLD.EnergyMLP.grad_autograd(step.kinetic, p_))
        return memo["q"][1], memo["p"][1]

    h = dt / step.substeps
    for _ in range(step.substeps):
        q, p = leapfrog(grad_fn, q, p, h)
    return q, p


def _functorch(step: HamiltonianStep, q: Tensor, p: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.func.grad`` of K(p) + V(q), joint leapfrog."""
    grad_fn = grad_of(lambda q_, p_: step.kinetic(p_) + step.potential(q_))
    h = dt / step.substeps
    for _ in range(step.substeps):
        q, p = leapfrog(grad_fn, q, p, h)
    return q, p


def _fsal_autograd(
    step: HamiltonianStep, q: Tensor, p: Tensor, dt: Tensor
) -> tuple[Tensor, Tensor]:
    """First same as last, closed-form ∇E (the old layouts), autograd differentiating it."""
    return leapfrog_separable(
        lambda p_: OLD.EnergyMLP.grad_autograd(step.kinetic, p_),
        lambda q_: OLD.EnergyMLP.grad_autograd(step.potential, q_),
        q, p, dt, 1, substeps=step.substeps, all_states=False,
    )  # fmt: skip


def _main_before(step: HamiltonianStep, q: Tensor, p: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """First same as last, closed-form ∇E and backward as of :data:`BEFORE`."""
    return leapfrog_separable(
        lambda p_: OLD.EnergyMLP.grad(step.kinetic, p_),
        lambda q_: OLD.EnergyMLP.grad(step.potential, q_),
        q, p, dt, 1, substeps=step.substeps, all_states=False,
    )  # fmt: skip


def _default(step: HamiltonianStep, q: Tensor, p: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """What hgn.flows runs: first same as last, closed-form ∇E and backward, every
    product in the layout BLAS is fastest at (:func:`hgn.nn._mm`)."""
    return leapfrog_separable(
        step.kinetic.grad, step.potential.grad, q, p, dt, 1,
        substeps=step.substeps, all_states=False,
    )  # fmt: skip


def _autograd_new(step: HamiltonianStep, q: Tensor, p: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """First same as last, ∇E as plain algebra (new layouts), autograd differentiating it:
    what ``--compile`` traced before (the compiler derives the backward itself)."""
    return leapfrog_separable(
        step.kinetic.grad_autograd, step.potential.grad_autograd, q, p, dt, 1,
        substeps=step.substeps, all_states=False,
    )  # fmt: skip


Optimiser = Callable[[torch.nn.Module], torch.optim.Optimizer]


def _foreach_adam(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters())


VARIANTS: dict[str, tuple[Integrate, Optimiser]] = {
    "before issue 13 (joint leapfrog, ∇K twice a sub-step)": (_before, _foreach_adam),
    "torch.func.grad of K + V, joint leapfrog": (_functorch, _foreach_adam),
    "first-same-as-last, closed-form ∇E, autograd backward": (_fsal_autograd, _foreach_adam),
    "+ closed-form backward of ∇E": (_main_before, _foreach_adam),
    f"+ fused Adam (main at {BEFORE})": (_main_before, optimiser),
    "+ BLAS layouts, in-place backward (--no-compile)": (_default, optimiser),
}

COMPILED: dict[str, Integrate] = {
    "torch.compile, autograd-derived backward": _autograd_new,
    "torch.compile, closed-form backward (the default)": _default,
}
"""Ways of running ``hgn flow train``'s compiled step (its default): the compiler deriving
the backward of plain ∇E algebra, or tracing :class:`hgn.nn._EnergyGrad`'s hand-written
one."""


def _use(integrate: Integrate) -> None:
    """Make every HamiltonianStep integrate with ``integrate`` (benchmark only)."""

    def forward(
        self: HamiltonianStep,
        q: Tensor,
        p: Tensor,
        reverse: bool = False,
        substeps: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        return integrate(self, q, p, -self.dt if reverse else self.dt)

    HamiltonianStep.forward = forward  # type: ignore[method-assign]


def seconds_per_step(
    model: DensityModel,
    data: DataSource,
    batch_size: int,
    n_samples: int = 1,
    rounds: int = 5,
    iwae: bool = False,
) -> float:
    """Wall time of one training step (loss, backward, fused Adam) on a throwaway
    optimiser, after two warm-up steps: the median over ``rounds`` of the best of 3."""
    opt = optimiser(model)

    def one() -> None:
        loss = model.loss(data.sample_train(batch_size), n_samples, iwae)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    one(), one()
    return float(np.median([time_per_call(one) for _ in range(rounds)]))


def training_step_variants(
    config: NHFConfig, x: Tensor, rounds: int, compile_too: bool, n_samples: int, iwae: bool
) -> dict[str, tuple[float, np.ndarray]]:
    """Per variant: the median (over rounds) of the best-of-3 seconds per training step,
    and each round's speed-up over the first variant, timed in the same round (paired:
    on this shared machine the load moves by ±10 % between rounds, and a ratio within a
    round cancels most of it)."""
    torch.manual_seed(0)
    model = NHF(config)
    original = HamiltonianStep.forward

    def make_step(
        loss_fn: Callable[[Tensor, int, bool], Tensor], make: Optimiser
    ) -> Callable[[], None]:
        opt = make(model)

        def one() -> None:
            torch.manual_seed(1)
            loss = loss_fn(x, n_samples, iwae)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return one

    steps = {
        name: (integrate, make_step(model.loss, make))
        for name, (integrate, make) in VARIANTS.items()
    }
    for name, integrate in COMPILED.items() if compile_too else ():
        _use(integrate)  # as hgn flow train (compiled by default) does it
        compiled = make_step(torch.compile(model.loss, dynamic=False), optimiser)
        t0 = time.perf_counter()
        compiled()
        print(f"   {name}: first step (compilation) {time.perf_counter() - t0:.1f} s")
        steps[name] = (integrate, compiled)
    times: dict[str, list[float]] = {name: [] for name in steps}
    try:
        for _ in range(rounds):
            for name, (integrate, one) in steps.items():
                _use(integrate)
                one()  # warm-up after switching
                times[name].append(time_per_call(one))
    finally:
        HamiltonianStep.forward = original  # type: ignore[method-assign]
    first = np.asarray(next(iter(times.values())))
    return {name: (float(np.median(t)), first / np.asarray(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="8gaussians")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=4096, help="points per throughput measurement")
    parser.add_argument("--compile", action="store_true", help="time torch.compile as well")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = data_source(args.target)
    config = NHFConfig(data.dim)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, ", end="")
    print(f"{torch.get_num_threads()} thread(s), target {args.target}, batch {args.batch_size}")

    x = data.sample_train(args.batch_size)
    train = FlowTrainConfig()  # the defaults' objective: IWAE with K = 4
    before = NHFConfig(data.dim, flow_steps=8, leapfrog_steps=2)
    configs = {
        "before issue 13: 8 flow steps x 2 leapfrog, ELBO K=1": (before, 1, False),
        f"defaults: {config.flow_steps} flow steps x {config.leapfrog_steps} leapfrog, "
        f"{train.objective.upper()} K={train.n_samples}": (
            config,
            train.n_samples,
            train.objective == "iwae",
        ),
    }
    for i, (label, (cfg, n_samples, iwae)) in enumerate(configs.items(), 1):
        n = n_parameters(NHF(cfg))
        print(f"\n1.{i} one NHF training step, {label}, batch {args.batch_size}, {n} params:")
        times = training_step_variants(cfg, x, args.rounds, args.compile, n_samples, iwae)
        base = next(iter(times.values()))[0]
        print(f"   {'':<58} {'':>7}     {'':>6}          median  paired per round")
        for name, (seconds, paired) in times.items():
            print(
                f"   {name:<58} {1e3 * seconds:7.1f} ms  {1 / seconds:6.1f} steps/s  "
                f"{base / seconds:5.2f}x  {np.median(paired):5.2f}x "
                f"[{paired.min():.2f}-{paired.max():.2f}]"
            )

    nhf = {"kind": "nhf", **asdict(config)}
    n_nhf = n_parameters(build(nhf))
    models = {
        "NHF 8x2 ELBO K=1": ({"kind": "nhf", **asdict(before)}, 1, False),
        "NHF defaults": (nhf, train.n_samples, train.objective == "iwae"),
    }
    for kind, label in (("realnvp", "RealNVP"), ("nsf", "NSF")):
        models |= {f"{label}-{k}": (matched(kind, k, n_nhf, data.dim), 1, False) for k in (2, 3)}
    points = data.test_set()[: args.n]
    print(f"\n2. models at matched parameter counts ({args.n} points per throughput call)")
    print(f"   {'model':<34}{'params':>8}{'train steps/s':>15}{'samples/s':>12}{'log_prob/s':>14}")
    for name, (model_config, n_samples, iwae) in models.items():
        torch.manual_seed(0)
        model = build(model_config)
        steps = 1.0 / seconds_per_step(
            model, data, args.batch_size, n_samples, args.rounds, iwae=iwae
        )
        for k in (1, 128) if model_config["kind"] == "nhf" else (1,):
            xs = points if k == 1 else points[: args.n // 16]
            speed = throughput(model, xs, k, args.n)
            label = name + (f", log_prob K={k}" if model_config["kind"] == "nhf" else "")
            print(
                f"   {label:<34}{n_parameters(model):>8}{steps:>15.1f}"
                f"{speed['samples_per_s']:>12.0f}{speed['log_prob_per_s']:>14.0f}"
            )


if __name__ == "__main__":
    main()
