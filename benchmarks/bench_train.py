"""Training-step throughput and peak memory of the `paper` and `small` HGN profiles.

Each profile runs in a fresh subprocess (so peak memory is its own): a full training
step (forward, backward through the whole 30-step rollout, Adam; the model's warm-up
is switched off so the steady-state cost is timed) on random frames of the profile's
shape, one untimed step, then ``--steps`` timed steps. Prints a Markdown table.

    .venv/bin/python benchmarks/bench_train.py [--profiles paper small] [--steps 3]
        [--threads 1] [--device cpu]
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


def measure(profile: str, steps: int, threads: int, device: str) -> dict[str, float]:
    """Time ``steps`` training steps of ``profile`` in this process."""
    from hgn.models import get_model
    from hgn.training.config import resolve

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = resolve(profile, model="hgn")  # the conv HGN the recorded figures measured
    # time the full 30-step rollout, not the short ones of the warm-up phase
    model_config = dataclasses.replace(config.model, warmup=0)
    model = get_model(config.name)(model_config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    size, frames, batch = config.model.image_size, config.model.frames, config.train.batch_size
    x = torch.rand(batch, frames, 3, size, size, device=device)

    def step() -> None:
        loss, _ = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up: allocator, kernels
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB
    seconds = (time.perf_counter() - start) / steps
    return {
        "profile": profile,
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
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one profile
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.threads, args.device)))
        return
    print(f"torch {torch.__version__}, device {args.device}, threads {args.threads}")
    print("| profile | image | frames | batch | params | s/step | sequences/s | peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for profile in args.profiles:
        child = [sys.executable, __file__, "--one", profile, "--steps", str(args.steps)]
        child += ["--threads", str(args.threads), "--device", args.device]
        r = json.loads(subprocess.run(child, check=True, capture_output=True).stdout)
        print(
            f"| {r['profile']} | {r['size']}×{r['size']} | {r['frames']} | {r['batch']} "
            f"| {r['params']:,} | {r['s_per_step']:.2f} | {r['seq_per_s']:.2f} "
            f"| {r['peak_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
