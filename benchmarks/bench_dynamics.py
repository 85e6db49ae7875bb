"""Training throughput of the `small` profile's default model against the conv HGN of the
same profile (`--model hgn`), on the same CPU threads, and of this code against an
earlier commit's.

Both models train on random frames of their own window shape (HGN++: 65 frames, 5 read
and 60 targets; conv HGN: 31 frames), with their warm-ups (and HGN++'s horizon
curriculum) switched off so that the steady-state cost (full-length rollouts, the full
KL) is what is timed. The steps are interleaved in rounds (A, B, A, B, ...) so that load
from other processes on a shared machine falls on both alike; the median over rounds is
reported. The step timed is the trainer's (clipping, Adam, the weights' average: see
:func:`trainer`). Steps/s is what a wall-clock training budget buys; trained frames/s counts the
rolled-out states a step is trained on (its horizon), the better measure of how much
dynamics a second teaches (HGN++ decodes only ``decode_frames`` of them per sequence).

With ``--before COMMIT`` the ``hgn`` package of that commit (read from git) and of the
working tree each run in a worker process of their own, and the rounds alternate between
them (old HGN++, new HGN++, old HGN, new HGN, ...): the table then has a row per model
and code, and each model's speed-up paired within every round (median and range), the
figure the load on a shared machine moves least.

    .venv/bin/python benchmarks/bench_dynamics.py [--rounds 5] [--steps 3] [--threads 1]
        [--before 800dc23] [--profile-steps 5]

``--profile-steps N`` prints, per model, where a step's time goes (:func:`breakdown`);
``PYTHONPATH=DIR`` runs it on another checkout's ``hgn``.

The wall time each needs to reach the issue-10 targets comes from the training runs
recorded in docs/RESULTS.md ("Learned dynamics and extrapolation (HGN++)"), not from
this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("hgn++", "hgn")
"""HGN++ and the conv HGN (``--models`` chooses)."""


def trainer(
    model_name: str | None, profile: str, built: list[Any] | None = None
) -> tuple[str, Callable[[], None], int, int]:
    """(label, one training step, batch size, trained frames per sequence).

    The step is the trainer's (``hgn train``): forward, backward, gradient clipping with
    its finiteness check, Adam and the weights' moving average where the profile keeps
    one, on a fixed batch (``train.prioritize``'s bookkeeping left out). Code that has
    :class:`hgn.training.train.TrainStep` runs it; older code runs the step it had, the
    closure inside ``train``, written out here."""
    from hgn.models import get_model
    from hgn.training import train as training
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
    if built is not None:
        built.append(model)
    tc = dataclasses.replace(config.train, prioritize=0.0)
    size, frames, batch = model_config.image_size, model_config.frames, tc.batch_size
    x = torch.rand(batch, frames, 3, size, size)
    horizon = getattr(model_config, "target_steps", frames - 1) + 1  # rolled-out states
    average = training.Average(model, tc.ema) if tc.ema else None
    if hasattr(training, "TrainStep"):
        opt = training.SkippingAdam(model.parameters(), lr=tc.lr)
        cpu = torch.device("cpu")
        train_step = training.TrainStep(model, model, opt, lambda step: x, tc, cpu, average)
        return config.name, lambda: train_step(0) and None, batch, horizon
    adam = torch.optim.Adam(model.parameters(), lr=tc.lr)

    def step() -> None:  # the step_fn of train() before issue 27
        loss, _ = model(x)
        if not torch.isfinite(loss.detach()):
            return
        adam.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip))
        if math.isfinite(norm):
            adam.step()
            if average is not None:
                average.update(model)

    return config.name, step, batch, horizon


def worker(profile: str, threads: int, models: list[str]) -> None:
    """Serve timing requests on stdin: ``INDEX STEPS`` → the seconds per step of model
    ``INDEX`` of ``models`` over ``STEPS`` steps; the first line out describes them."""
    torch.set_num_threads(threads)
    runs = [trainer(name, profile) for name in models]
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
        command += ["--threads", str(args.threads), "--models", *args.models]
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
    old = checkout(args.before)
    workers = {args.before: Worker(old, args), "now": Worker(ROOT, args)}
    models = workers["now"].models
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for index in range(len(models)):
            for label, w in workers.items():
                times.setdefault((label, index), []).append(w.time(index, args.steps))
    for w in workers.values():
        w.close()
    shutil.rmtree(old)
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


EVALUATE = "autograd::engine::evaluate_function: "
"""How the profiler names a backward node's whole evaluation (its children included)."""

PHASES = {
    "posterior": "encoder",
    "train_rollout": "rollout",
    "rollout": "rollout",
    "decode": "decoder",
    "_consistency": "consistency term (a second encoder pass)",
}
"""The model methods whose wall time the step breakdown reports (where a model has them;
HGN++ rolls out by ``train_rollout``, the conv HGN by ``rollout``)."""


def breakdown(profile: str, steps: int, models: list[str]) -> None:
    """Where a training step's time goes, per model: the forward pass's parts by the wall
    time of the methods in :data:`PHASES`, the backward pass, the rest (clipping, Adam,
    the average, the loss's own arithmetic); then ``torch.profiler``'s split by kind of
    operation, forward and backward together."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    spent: dict[str, float] = {}
    inside: list[str] = []  # a phase called within another counts as that one

    def timed(label: str, fn: Callable) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            if inside:
                return fn(*args, **kwargs)
            inside.append(label)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - start
                inside.pop()

        return run

    backward = torch.Tensor.backward
    torch.Tensor.backward = timed("backward", backward)  # type: ignore[method-assign]
    for name in models:
        built: list[Any] = []
        label, step, *_ = trainer(name, profile, built)
        model = built[0]
        done: set[str] = set()
        for method, phase in PHASES.items():
            if hasattr(model, method) and phase not in done:
                setattr(model, method, timed(phase, getattr(model, method)))
                done.add(phase)
        step()
        spent.clear()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        total = (time.perf_counter() - start) / steps
        print(f"\n{label}: {1e3 * total:.0f} ms a step (wall, {steps} steps)")
        forward = sum(v for k, v in spent.items() if k != "backward") / steps
        parts = {k: v / steps for k, v in spent.items()}
        parts["rest (loss arithmetic, clipping, Adam, average)"] = (
            total - forward - parts["backward"]
        )
        for key, seconds in parts.items():
            print(f"  {key:50s} {1e3 * seconds:7.1f} ms {100 * seconds / total:5.1f} %")
        with profiler(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        kinds = {"convolutions": 0.0, "energy gradient (closed form)": 0.0}
        all_self = 0.0
        for event in prof.key_averages():
            all_self += event.self_cpu_time_total
            if event.key in ("aten::mkldnn_convolution", "aten::convolution_backward"):
                kinds["convolutions"] += event.self_cpu_time_total
            if event.key in (
                "_EnergyGrad",
                "autograd::engine::evaluate_function: _EnergyGradBackward",
                "_EnergyLeapfrog",
                "autograd::engine::evaluate_function: _EnergyLeapfrogBackward",
            ):
                kinds["energy gradient (closed form)"] += event.cpu_time_total
        print("  by operation (profiler, CPU time):")
        for key, us in kinds.items():
            print(f"    {key:48s} {100 * us / all_self:5.1f} %")
    torch.Tensor.backward = backward  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--before", help="compare against this commit's hgn package")
    parser.add_argument(
        "--profile-steps", type=int, default=0, help="print where a step's time goes"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_steps:
        torch.set_num_threads(args.threads)
        breakdown(args.profile, args.profile_steps, args.models)
        return
    if args.worker:
        worker(args.profile, args.threads, args.models)
        return
    if args.before:
        compare(args)
        return
    torch.set_num_threads(args.threads)
    runs = [trainer(name, args.profile) for name in args.models]
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
