"""Speed of Neural Hamiltonian Flows against zuko's RealNVP at matched parameter counts.

Prints, from one process (same machine state for every row):

1. the cost of the Hamiltonian gradient inside one flow step (forward + backward of
   T leapfrog steps): the closed-form EnergyMLP gradient used by hgn.flows against
   ``hgn.physics.integrators.grad_of`` (torch.func) on the same networks;
2. per model (NHF with the ``hgn flow train`` defaults, RealNVP with 2 and 3 coupling
   layers of matched size): parameters, training steps/s, samples/s and log_prob/s
   (NHF's log_prob is the importance-weighted bound: K = 1 is the ELBO, K = 128 what
   ``hgn flow evaluate`` reports).

Usage: .venv/bin/python benchmarks/bench_flows.py [--threads 1] [--batch-size 512]
Timings are best-of-3 wall times; on a shared machine, compare rows of the same run only.
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import asdict

import torch

from hgn.flows import NHF, NHFConfig, build, n_parameters
from hgn.flows.targets import data_source
from hgn.flows.train import (
    TrainConfig,
    _time_per_call,
    matched_realnvp,
    seconds_per_step,
    throughput,
)
from hgn.physics.integrators import grad_of, leapfrog


def gradient_cost(config: NHFConfig, batch: int) -> tuple[float, float]:
    """Seconds per forward+backward through all flow steps: closed form vs torch.func."""
    model = NHF(config)
    q, p = torch.randn(batch, config.dim), torch.randn(batch, config.dim)

    def closed_form() -> None:
        q_t, p_t = model.transform(q, p)
        (q_t.square().sum() + p_t.square().sum()).backward()

    def functorch() -> None:
        q_t, p_t = q, p
        for step in model.steps:
            grad_fn = grad_of(lambda q_, p_, s=step: s.kinetic(p_) + s.potential(q_))
            h = step.dt / step.substeps
            for _ in range(step.substeps):
                q_t, p_t = leapfrog(grad_fn, q_t, p_t, h)
        (q_t.square().sum() + p_t.square().sum()).backward()

    closed_form(), functorch()
    return _time_per_call(closed_form), _time_per_call(functorch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="8gaussians")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--n", type=int, default=4096, help="points per throughput measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = data_source(args.target)
    nhf_config = NHFConfig(data.dim)
    cfg = TrainConfig(batch_size=args.batch_size)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, ", end="")
    print(f"{torch.get_num_threads()} thread(s), target {args.target}, batch {args.batch_size}")

    closed, func = gradient_cost(nhf_config, args.batch_size)
    steps = f"{nhf_config.flow_steps} flow steps x {nhf_config.leapfrog_steps} leapfrog"
    print(f"\n1. NHF forward+backward, {steps}, batch {args.batch_size}:")
    print(f"   closed-form EnergyMLP gradient (hgn.flows): {1e3 * closed:8.1f} ms")
    print(f"   torch.func grad_of on K + V:                {1e3 * func:8.1f} ms")
    print(f"   speed-up: {func / closed:.2f}x")

    nhf = {"kind": "nhf", **asdict(nhf_config)}
    n_nhf = n_parameters(build(nhf))
    models = {"NHF (defaults)": nhf}
    models |= {f"RealNVP-{k}": matched_realnvp(k, n_nhf, data.dim) for k in (2, 3)}
    x = data.test_set()[: args.n]
    print(f"\n2. models at matched parameter counts ({args.n} points per throughput call)")
    print(f"{'model':<16}{'params':>8}{'train steps/s':>15}{'samples/s':>12}{'log_prob/s':>14}")
    for name, config in models.items():
        model = build(config)
        steps = 1.0 / seconds_per_step(model, data, cfg)
        ks = (1, 128) if config["kind"] == "nhf" else (None,)
        for k in ks:
            speed = throughput(model, x if k != 128 else x[: args.n // 16], k, args.n)
            label = f"{name}" + (f" K={k}" if k else "")
            print(
                f"{label:<16}{n_parameters(model):>8}{steps:>15.1f}"
                f"{speed['samples_per_s']:>12.0f}{speed['log_prob_per_s']:>14.0f}"
            )


if __name__ == "__main__":
    main()
