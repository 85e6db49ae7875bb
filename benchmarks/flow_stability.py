"""Stability of NHF training: seeds x the 8 FFJORD targets, short runs with the
``hgn flow train`` defaults (architecture, learning rate, batch size).

A run passes when every training loss is finite (the loop's NaN/Inf guard would stop it)
and it does not diverge: the test -ELBO at the end is below the one at initialisation.
Prints one row per target and exits non-zero if any run failed.

Usage: .venv/bin/python benchmarks/flow_stability.py [--seeds 10] [--steps 300]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from hgn.flows import NHFConfig, build, load
from hgn.flows.targets import FFJORD_TARGETS, data_source
from hgn.flows.train import FlowTrainConfig, train
from hgn.utils import UserError, derive_seed


@torch.no_grad()
def test_neg_elbo(model: torch.nn.Module, x: torch.Tensor) -> float:
    torch.manual_seed(0)
    return -model.elbo(x, 8).mean().item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--targets", nargs="*", default=list(FFJORD_TARGETS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = {"kind": "nhf", "dim": 2}
    failures = 0
    t0 = time.perf_counter()
    print(f"{args.seeds} seeds x {args.steps} steps, NHF defaults {NHFConfig(2)}")
    print(
        f"{'target':<14}{'ok':>6}{'init -ELBO':>12}{'final -ELBO (mean, worst)':>28}{'max |g|':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets:
            x = data_source(target).test_set()[:1000]
            ok, start, final, grad = 0, [], [], 0.0
            for seed in range(args.seeds):
                torch.manual_seed(derive_seed(seed, "init"))  # the weights train() starts from
                start.append(test_neg_elbo(build(config), x))
                run = Path(tmp) / f"{target}-{seed}"
                cfg = FlowTrainConfig(steps=args.steps, seed=seed)
                try:
                    result = train(
                        target, run, config, cfg, tensorboard=False, desc=f"{target}/{seed}"
                    )
                except UserError as exc:  # the NaN/Inf guard
                    print(f"  {target} seed {seed}: {exc}")
                    continue
                end = test_neg_elbo(load(run), x)
                grad = max([grad] + [h["grad_norm"] for h in result.history])
                final.append(end)
                if math.isfinite(end) and end < start[-1]:
                    ok += 1
                else:
                    print(f"  {target} seed {seed}: diverged ({start[-1]:.3f} -> {end:.3f})")
            failures += args.seeds - ok
            mean_start = sum(start) / len(start)
            mean_final = sum(final) / max(1, len(final))
            worst = max(final, default=math.nan)
            print(
                f"{target:<14}{ok:>3}/{args.seeds:<2}{mean_start:>12.3f}"
                f"{mean_final:>17.3f}, {worst:>8.3f}{grad:>10.2f}",
                flush=True,
            )
    print(f"{failures} failed runs; {time.perf_counter() - t0:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
