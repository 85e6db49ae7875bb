"""Training throughput of the `small` profile's default model against the conv HGN of the
same profile (`--model hgn`), in one process, on the same CPU threads.

Both models train on random frames of their own window shape (HGN++: 65 frames, 5 read
and 60 targets; conv HGN: 31 frames), with their warm-ups (and HGN++'s horizon
curriculum) switched off so that the steady-state cost (full-length rollouts, the full
KL) is what is timed. The steps are interleaved in rounds (A, B, A, B, ...) so that load
from other processes on a shared machine falls on both alike; the median over rounds is
reported. Steps/s is what a wall-clock training budget buys; trained frames/s counts the
rolled-out states a step is trained on (its horizon), the better measure of how much
dynamics a second teaches (HGN++ decodes only ``decode_frames`` of them per sequence).

    .venv/bin/python benchmarks/bench_dynamics.py [--rounds 5] [--steps 3] [--threads 1]

The wall time each needs to reach the issue-10 targets comes from the training runs
recorded in docs/RESULTS.md ("Learned dynamics and extrapolation (HGN++)"), not from
this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

from hgn.models import get_model
from hgn.training.config import DEFAULT_PROFILE, resolve


def trainer(model_name: str | None, profile: str) -> tuple[str, Callable[[], None], int, int]:
    """(label, one training step, batch size, trained frames per sequence)."""
    torch.manual_seed(0)
    config = resolve(profile, model=model_name)
    steady = {"warmup": 0, "grow_below": 0.0}  # full horizon: no warm-up, no curriculum
    names = {f.name for f in dataclasses.fields(config.model)}
    model_config = dataclasses.replace(
        config.model, **{k: v for k, v in steady.items() if k in names}
    )
    model = get_model(config.name)(model_config)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    size, frames, batch = model_config.image_size, model_config.frames, config.train.batch_size
    x = torch.rand(batch, frames, 3, size, size)
    horizon = getattr(model_config, "target_steps", frames - 1) + 1  # rolled-out states

    def step() -> None:
        loss, _ = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return config.name, step, batch, horizon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [trainer(None, args.profile), trainer("hgn", args.profile)]
    times: dict[str, list[float]] = {name: [] for name, *_ in runs}
    for _, step, *_ in runs:
        step()  # untimed: allocator, first-call overheads
    for _ in range(args.rounds):
        for name, step, *_ in runs:
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    print(f"torch {torch.__version__}, CPU threads {args.threads}, profile {args.profile}")
    print("| model | batch | trained frames/seq | s/step (median) | steps/s | trained frames/s |")
    print("|---|---|---|---|---|---|")
    for name, _, batch, horizon in runs:
        seconds = statistics.median(times[name])
        print(
            f"| {name} | {batch} | {horizon} | {seconds:.3f} | {1 / seconds:.2f} "
            f"| {batch * horizon / seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
