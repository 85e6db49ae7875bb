"""Training-step throughput and peak memory of the `paper` and `small` profiles.

Each (profile, model, amp) runs in a fresh subprocess (so peak memory is its own): the
trainer's step (forward, backward through the whole rollout, clipping, Adam, the
weights' average where the profile keeps one; warm-ups and curricula switched off so
the steady-state cost is timed) on random frames of the profile's shape, one untimed
step, then ``--steps`` timed steps. Prints a Markdown table; a combination that fails
(e.g. bf16 on a CPU, out of memory) gets a row saying so.

    .venv/bin/python benchmarks/bench_train.py [--profiles paper small] [--models hgn hgn++]
        [--amp off bf16] [--steps 3] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time

import torch


def measure(
    profile: str, model_name: str, amp: str, steps: int, threads: int, device: str
) -> dict[str, float]:
    """Time ``steps`` of the trainer's steps (:class:`hgn.training.train.TrainStep`:
    forward, backward, clipping, Adam, the average where the profile keeps one) of
    ``model_name`` at ``profile`` in this process, with ``amp`` (``train.amp``)."""
    from hgn.models import get_model
    from hgn.training import train as training
    from hgn.training.config import resolve

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = resolve(profile, model=model_name)
    # time the full rollout, not the short ones of the warm-up phase or the curriculum
    steady = {"warmup": 0, "grow_below": 0.0}
    names = {f.name for f in dataclasses.fields(config.model)}
    model_config = dataclasses.replace(
        config.model, **{k: v for k, v in steady.items() if k in names}
    )
    dev = torch.device(device)
    model = get_model(config.name)(model_config).to(dev)
    tc = dataclasses.replace(config.train, amp=amp, prioritize=0.0)
    size, frames, batch = model_config.image_size, model_config.frames, tc.batch_size
    x = torch.rand(batch, frames, 3, size, size, device=dev)
    opt = training.SkippingAdam(model.parameters(), lr=tc.lr)
    average = training.Average(model, tc.ema) if tc.ema else None
    step = training.TrainStep(model, model, opt, lambda k: x, tc, dev, average)
    step(0)  # warm-up: allocator, kernels
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for k in range(steps):
        metrics = step(k)
    float(metrics["loss"])  # waits for the device
    seconds = (time.perf_counter() - start) / steps
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB
    return {
        "profile": profile,
        "model": config.name,
        "amp": amp,
        "batch": batch,
        "frames": frames,
        "size": size,
        "params": sum(p.numel() for p in model.parameters()),
        "s_per_step": seconds,
        "seq_per_s": batch / seconds,
        "peak_mib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["small", "paper"])
    parser.add_argument("--models", nargs="+", default=["hgn"], help="e.g. hgn hgn++")
    parser.add_argument("--amp", nargs="+", default=["off"], help="train.amp: off, bf16")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # child: profile model amp
    args = parser.parse_args()
    if args.one:
        profile, model, amp = args.one
        result = measure(profile, model, amp, args.steps, args.threads, args.device)
        print(json.dumps(result))
        return
    print(f"torch {torch.__version__}, device {args.device}, threads {args.threads}")
    print("| profile | model | amp | image | frames | batch | params | s/step | steps/s "
          "| sequences/s | peak MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for profile in args.profiles:
        for model in args.models:
            for amp in args.amp:
                child = [sys.executable, __file__, "--one", profile, model, amp]
                child += ["--steps", str(args.steps), "--threads", str(args.threads)]
                child += ["--device", args.device]
                done = subprocess.run(child, capture_output=True, text=True)
                if done.returncode:
                    tail = done.stderr.strip().splitlines()[-1:] or ["(no message)"]
                    print(f"| {profile} | {model} | {amp} | failed: {tail[0]} |", flush=True)
                    continue
                r = json.loads(done.stdout)
                print(
                    f"| {r['profile']} | {r['model']} | {r['amp']} | {r['size']}×{r['size']} "
                    f"| {r['frames']} | {r['batch']} | {r['params']:,} | {r['s_per_step']:.3f} "
                    f"| {1 / r['s_per_step']:.2f} | {r['seq_per_s']:.1f} | {r['peak_mib']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
