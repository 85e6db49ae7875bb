"""Training throughput of the `small` profile's default model against the conv HGN of the
same profile (`--model hgn`), on the same CPU threads, and of this code against an
earlier commit's.

Both models train on random frames of their own window shape (HGN++: 65 frames, 5 read
and 60 targets; conv HGN: 31 frames), with their warm-ups (and HGN++'s horizon
curriculum) switched off so that the steady-state cost (full-length rollouts, the full
KL) is what is timed. The steps are interleaved in rounds (A, B, A, B, ...) so that load
from other processes on a shared machine falls on both alike; the median over rounds is
reported. Steps/s is what a wall-clock training budget buys; trained frames/s counts the
rolled-out states a step is trained on (its horizon), the better measure of how much
dynamics a second teaches (HGN++ decodes only ``decode_frames`` of them per sequence).

With ``--before COMMIT`` the ``hgn`` package of that commit (read from git) and of the
working tree each run in a worker process of their own, and the rounds alternate between
them (old HGN++, new HGN++, old HGN, new HGN, ...): the table then has a row per model
and code, and each model's speed-up paired within every round (median and range), the
figure the load on a shared machine moves least.

    .venv/bin/python benchmarks/bench_dynamics.py [--rounds 5] [--steps 3] [--threads 1]
        [--before 800dc23]

The wall time each needs to reach the issue-10 targets comes from the training runs
recorded in docs/RESULTS.md ("Learned dynamics and extrapolation (HGN++)"), not from
this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = (None, "hgn")
"""The profile's default model (HGN++) and the conv HGN."""


def trainer(model_name: str | None, profile: str) -> tuple[str, Callable[[], None], int, int]:
    """(label, one training step, batch size, trained frames per sequence)."""
    from hgn.models import get_model
    from hgn.training.config import resolve

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


def worker(profile: str, threads: int) -> None:
    """Serve timing requests on stdin: ``INDEX STEPS`` → the seconds per step of model
    ``INDEX`` of :data:`MODELS` over ``STEPS`` steps; the first line out describes them."""
    torch.set_num_threads(threads)
    runs = [trainer(name, profile) for name in MODELS]
    for _, step, *_ in runs:
        step()  # untimed: allocator, first-call overheads
    print(";".join(f"{name},{batch},{horizon}" for name, _, batch, horizon in runs), flush=True)
    for line in sys.stdin:
        index, steps = map(int, line.split())
        step = runs[index][1]
        start = time.perf_counter()
        for _ in range(steps):
            step()
        print((time.perf_counter() - start) / steps, flush=True)


class Worker:
    """A worker process running the ``hgn`` package found at ``root``."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        env = {**os.environ, "PYTHONPATH": str(root)}
        command = [sys.executable, __file__, "--worker", "--profile", args.profile]
        command += ["--threads", str(args.threads)]
        self.process = subprocess.Popen(
            command, cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        described = self.process.stdout.readline().strip().split(";")
        self.models = [(name, int(b), int(h)) for name, b, h in (d.split(",") for d in described)]

    def time(self, index: int, steps: int) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{index} {steps}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def checkout(commit: str) -> Path:
    """The ``hgn`` package of ``commit``, extracted from git into a temporary folder."""
    archive = subprocess.run(
        ["git", "archive", commit, "hgn"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix=f"hgn-{commit}-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def compare(args: argparse.Namespace) -> None:
    """Old code against new, rounds alternating between the two worker processes."""
    workers = {args.before: Worker(checkout(args.before), args), "now": Worker(ROOT, args)}
    models = workers["now"].models
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for index in range(len(models)):
            for label, w in workers.items():
                times.setdefault((label, index), []).append(w.time(index, args.steps))
    for w in workers.values():
        w.close()
    print(f"torch {torch.__version__}, CPU threads {args.threads}, profile {args.profile}")
    print(f"{args.rounds} rounds of {args.steps} steps, alternating {args.before} and now")
    print("| model | code | s/step (median) | steps/s | speed-up, paired per round |")
    print("|---|---|---|---|---|")
    for index, (name, _, _) in enumerate(models):
        old, new = times[(args.before, index)], times[("now", index)]
        paired = [a / b for a, b in zip(old, new, strict=True)]
        for label, seconds in ((args.before, old), ("now", new)):
            median = statistics.median(seconds)
            ratio = (
                f"**{statistics.median(paired):.2f}×** [{min(paired):.2f}–{max(paired):.2f}]"
                if label == "now"
                else ""
            )
            print(f"| {name} | {label} | {median:.3f} | {1 / median:.2f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--before", help="compare against this commit's hgn package")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.profile, args.threads)
        return
    if args.before:
        compare(args)
        return
    torch.set_num_threads(args.threads)
    runs = [trainer(name, args.profile) for name in MODELS]
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
