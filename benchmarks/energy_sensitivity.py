"""How precisely must a model infer a sequence's energy for the extrapolation protocol's
valid prediction time to last? An oracle, no model involved.

For each test sequence of a generated dataset (one that stores its states), the true
state at the window's first frame is changed so that its energy moves by a relative
``delta`` (the momenta scaled, positions kept: every built-in system's kinetic energy is
a quadratic form in p), simulated forward with the dataset's own physics, rendered with
its own renderer, and scored exactly as ``hgn evaluate --protocol extrapolate`` scores a
model's forward rollout: each frame's MSE against the true frame, the valid time the
steps before it first exceeds ½ × that frame's mean-image MSE. ``delta = 0`` checks the
re-simulation (it must be valid throughout).

A learned model whose state is right except for an energy error of ``delta`` can do no
better than the oracle's row for that ``delta``: this bounds what the valid-time target
asks of the encoder (docs/RESULTS.md, "Learned dynamics and extrapolation (HGN++)").

    .venv/bin/python benchmarks/energy_sensitivity.py --data data/pendulum90 \\
        [--start 30] [--steps 60] [--deltas 0,1e-4,3e-4,1e-3,3e-3,1e-2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from hgn.data import dataset as D
from hgn.evaluation.metrics import valid_prediction_time, vpt_threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a generated dataset with states")
    parser.add_argument("--start", type=int, default=30, help="the window's first frame")
    parser.add_argument("--steps", type=int, default=60, help="forward steps scored")
    parser.add_argument("--deltas", default="0,1e-4,3e-4,1e-3,3e-3,1e-2")
    parser.add_argument("--show", type=int, default=5, help="highest-energy sequences listed")
    args = parser.parse_args()
    torch.set_num_threads(1)

    split, train = D.load(args.data, "test"), D.load(args.data, "train")
    if split.q is None or split.p is None:
        raise SystemExit(f"{args.data} stores no states: this oracle needs a generated dataset")
    system = D.system_of(split.meta)
    frames = split.meta["steps"] + 1
    if args.start + args.steps >= frames:
        raise SystemExit(f"{args.data} has {frames} frames: --start + --steps must be fewer")
    mean = D.mean_frame(train if len(train) else split).numpy()
    cut = slice(args.start, args.start + args.steps + 1)
    truth = D.to_frames(np.array(split.images[:, cut]), "cpu").numpy()
    limit = vpt_threshold(((truth - mean) ** 2).mean((2, 3, 4)), 0.0, 0.5)
    q = torch.as_tensor(np.array(split.q[:, args.start]), dtype=torch.float64)
    p = torch.as_tensor(np.array(split.p[:, args.start]), dtype=torch.float64)
    energy = system.hamiltonian(q, p)
    kinetic = energy - system.hamiltonian(q, torch.zeros_like(p))
    order = torch.argsort(energy).numpy()
    print(
        f"{args.data}: {len(q)} sequences, energies {float(energy.min()):.3f} to "
        f"{float(energy.max()):.3f}; forward {args.steps} steps from frame {args.start}"
    )
    print("| relative energy error | valid time, mean | all steps valid | "
          f"the {args.show} highest energies |")  # fmt: skip
    print("|---|---|---|---|")
    for delta in (float(d) for d in args.deltas.split(",")):
        # K' = K + delta·E by scaling p (K is quadratic in p); K = 0 (a turning point) stays
        scale = ((kinetic + delta * energy).clamp_min(0) / kinetic.clamp_min(1e-12)).sqrt()
        scale = torch.where(kinetic > 1e-12, scale, torch.ones_like(scale))
        qs, _ = system.simulate(q, p * scale[:, None], split.meta["dt"], args.steps)
        drawn = D.to_frames(system.render(qs.numpy(), split.meta["size"]), "cpu").numpy()
        mse = ((drawn - truth) ** 2).mean((2, 3, 4))
        vpt = valid_prediction_time(mse, 1, limit[:, 1:])  # step 0 is the start state
        top = ", ".join(str(int(v)) for v in vpt[order[-args.show :]][::-1])
        print(
            f"| {delta:+.4%} | {vpt.mean():.1f} of {args.steps} | "
            f"{(vpt == args.steps).mean():.0%} | {top} |"
        )


if __name__ == "__main__":
    main()
