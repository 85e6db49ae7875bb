"""Dataset generation and reading speed: hgn's CLI against a SciPy + NumPy reference,
the size on disk, and the loader against the training step.

    .venv/bin/python benchmarks/bench_data.py                 # 10,000 trajectories + loader
    .venv/bin/python benchmarks/bench_data.py --full          # + the paper-scale 60,000
    .venv/bin/python benchmarks/bench_data.py --full --dir /work/data

1. **Generation.** The reference integrates each pendulum trajectory with ``solve_ivp``
   (DOP853, rtol = atol = 1e-9) and draws its frames with NumPy over the full image,
   keeping them in memory (it writes nothing). It runs on ``--ref-n`` trajectories (its
   rate per trajectory does not depend on how many); the script first checks on the same
   initial states and noise that hgn's frames agree with it. hgn is timed end to end as a
   user runs it: ``python -m hgn data generate --train N --test 1 --size 64`` in a child
   process, start-up, simulation, rendering, compression and writing included. Both
   rates, wall and CPU, are printed side by side with their ratio.
2. **Reading.** On the store just written: decoding a whole split (what ``hgn train``
   does when a split fits in memory) and random batches of 16 sequences through the
   trainer's own ``Batches`` with the in-memory path switched off (what it does for a
   larger split), next to the training step's consumption (sequences per second of the
   ``small`` and ``paper`` profiles on this CPU, from ``benchmarks/bench_train.py``).
3. **``--loader STORE``** (alone): random batches of 16 from a store read as one larger
   than memory, the trainer's random rows on the training thread against its
   chunk-aware order with background decoding (:func:`loader`), and the memory held.
4. **``--full``**: the paper-scale pendulum (50,000 + 10,000 trajectories, 31 frames,
   64×64) with the CLI into ``--dir``: wall time, the child's peak resident memory
   (VmHWM, polled) and the size on disk against the raw 22.9 GB. The store is deleted
   afterwards (only the temporary folder the script made).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

from hgn import data
from hgn.physics.systems import BACKGROUND, get_system, one_thread

STEPS, DT, SIZE, SEED = 30, 0.125, 64, 0
ROOT = Path(__file__).resolve().parents[1]


def reference(
    system, q0: np.ndarray, p0: np.ndarray, noise: np.ndarray, images: np.ndarray
) -> tuple:
    """One solve_ivp per trajectory, then NumPy discs drawn over whole frames."""
    g, m, length = (system.constants[k] for k in ("g", "m", "l"))
    factor = system.constants["factor"]
    info = system.render_info()
    extent, radius = info["extent"], info["radius"]
    scale = SIZE / (2 * extent)
    colour = np.array(info["colours"][0]) * 255.0
    background = np.array(BACKGROUND) * 255.0
    centres = np.arange(SIZE) + 0.5
    times = np.arange(STEPS + 1) * DT

    def field(_t: float, y: np.ndarray) -> list[float]:
        return [y[1] / (m * length**2), -factor * m * g * length * np.sin(y[0])]

    states = np.empty((len(q0), STEPS + 1))
    for k in range(len(q0)):
        sol = solve_ivp(
            field, (0.0, times[-1]), [q0[k], p0[k]], "DOP853", t_eval=times, rtol=1e-9, atol=1e-9
        )
        states[k] = sol.y[0]
        angle = (sol.y[0] + noise[k]).astype(np.float32).astype(np.float64)
        cx = (length * np.sin(angle) + extent) * scale
        cy = (extent + length * np.cos(angle)) * scale
        dist = np.sqrt(
            (centres[None, :, None] - cy[:, None, None]) ** 2
            + (centres[None, None, :] - cx[:, None, None]) ** 2
        )
        alpha = np.clip(radius * scale + 0.5 - dist, 0.0, 1.0)[..., None]
        images[k] = (background + alpha * (colour - background) + 0.5).astype(np.uint8)
    return states, images


def timed(fn, *args, **kwargs) -> tuple[tuple[float, float], object]:
    """((wall seconds, CPU seconds of this process), result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return (time.perf_counter() - wall, time.process_time() - cpu), result


def machine() -> str:
    return f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def peak_rss_kib(pid: int) -> int:
    """The child's own high-water resident memory (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:  # the child just exited
        pass
    return 0


def cli(args: list[str]) -> dict[str, float]:
    """Run ``python -m hgn ARGS``: wall and CPU seconds (the child's user + system) and
    its peak resident memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "hgn", *args], stderr=subprocess.PIPE)
    peak = 0
    while child.poll() is None:
        peak = max(peak, peak_rss_kib(child.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode:
        raise SystemExit(f"hgn {' '.join(args)} failed ({child.returncode}): {err}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "peak_mib": peak / 1024, "stderr": err.strip()}


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def generation(n: int, ref_n: int, out: Path) -> None:
    """Reference and CLI rates, side by side, after checking they draw the same."""
    system = get_system("pendulum")
    print(f"machine: {machine()}, torch {torch.__version__} (shared: see load average)")
    rng = np.random.default_rng(SEED)
    with one_thread():
        q, p = system.sample_trajectories(ref_n, rng, DT, STEPS)
        noise = system.noise * rng.standard_normal((ref_n, STEPS + 1, 1))
        q_noisy = (q + torch.from_numpy(noise)).float()
        check = min(ref_n, 200)
        hgn_frames = system.render(q_noisy[:check], SIZE).numpy()
    frames = np.zeros((ref_n, STEPS + 1, SIZE, SIZE, 3), np.uint8)  # pages touched up front
    t_ref, (states, ref_frames) = timed(
        reference, system, q[:, 0, 0].numpy(), p[:, 0, 0].numpy(), noise[..., 0], frames
    )
    worst = np.abs(states - q[..., 0].numpy()).max()
    diff = np.abs(ref_frames[:check].astype(np.int16) - hgn_frames)
    print(
        f"agreement on {check} trajectories: states to {worst:.1e}, images within "
        f"{diff.max()} grey level(s), {int((diff > 1).sum())} values off by more than 1"
    )
    del frames, ref_frames, hgn_frames
    args = ["data", "generate", "--system", "pendulum", "--train", str(n), "--test", "1"]
    args += ["--size", str(SIZE), "--seed", str(SEED), "--out", str(out), "--no-progress"]
    run = cli(args)
    print(f"command: hgn {' '.join(args)}")
    print(f"  {run['stderr']}")
    raw = (n + 1) * (STEPS + 1) * SIZE * SIZE * 3
    print(
        f"  {disk_bytes(out) / 1e6:.1f} MB on disk, raw frames {raw / 1e9:.2f} GB "
        f"(1/{raw / disk_bytes(out):.0f}); peak RSS {run['peak_mib']:.0f} MiB"
    )
    rows = [
        (f"reference (solve_ivp + NumPy), {ref_n} traj", ref_n, t_ref[0], t_ref[1]),
        (f"hgn data generate (CLI, end to end), {n + 1} traj", n + 1, run["wall"], run["cpu"]),
    ]
    print(f"{'':52s} {'wall traj/s':>12s} {'CPU traj/s':>12s}   (seconds: wall, CPU)")
    for name, count, wall, cpu in rows:
        print(f"{name:52s} {count / wall:12.1f} {count / cpu:12.1f}   ({wall:.2f}, {cpu:.2f})")
    (_, rn, rw, rc), (_, hn, hw, hc) = rows
    print(
        f"speed-up of the CLI: {(hn / hw) / (rn / rw):.1f}x wall, {(hn / hc) / (rn / rc):.1f}x CPU"
    )


def train_rate(profile: str) -> float:
    """Sequences per second one training step of ``profile`` consumes (bench_train)."""
    child = [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--one", profile]
    child += ["--steps", "2"]
    result = json.loads(subprocess.run(child, check=True, capture_output=True).stdout)
    return float(result["seq_per_s"])


def reading(path: Path, batches: int = 40) -> None:
    """Whole-split decode and random training batches against the training step."""
    import hgn.training.train as training

    split = data.load(path)
    (wall, _), whole = timed(np.asarray, split.images)
    print(
        f"whole split into memory: {len(split)} sequences in {wall:.2f} s "
        f"({len(split) / wall:,.0f} seq/s, {whole.nbytes / wall / 1e9:.1f} GB/s decoded)"
    )
    del whole
    training.IN_MEMORY_BYTES = 0  # the path of a split larger than memory
    torch.manual_seed(0)
    frames = split.meta["steps"] + 1
    draw = training.Batches(data.load(path), frames, 16, torch.device("cpu"))
    draw()
    (wall, _), _ = timed(lambda: [draw() for _ in range(batches)])
    loader = batches * 16 / wall
    print(
        f"random batches of 16 (Batches, lazy path, to float frames): {loader:,.0f} seq/s "
        f"({wall / batches * 1e3:.1f} ms a batch)"
    )
    for profile in ("small", "paper"):
        rate = train_rate(profile)
        print(
            f"  training step, profile {profile} on this CPU: {rate:.2f} seq/s -> loader is "
            f"{loader / rate:,.0f}x faster"
        )


def rss_mib() -> tuple[float, float]:
    """This process's resident memory now and at its peak, MiB (Linux)."""
    status = Path("/proc/self/status").read_text()
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    values = {key: value.split()[0] for key, value in values.items() if value.split()}
    return int(values["VmRSS"]) / 1024, int(values["VmHWM"]) / 1024


def loader(path: Path, rounds: int, batches: int) -> None:
    """Random batches of 16 from a store larger than memory: the trainer's ``Batches``
    with uniformly random rows read on the calling thread (the path before issue 27,
    still taken without a step number) against its chunk-aware order with background
    decoding, rounds alternating; memory held by the new path, against the raw size."""
    import hgn.training.train as training

    training.IN_MEMORY_BYTES = 0  # the path of a split larger than memory
    split = data.load(path)
    frames = split.meta["steps"] + 1
    raw = int(np.prod(split.images.shape))
    print(
        f"store {path}: {len(split):,} sequences of {frames} frames at "
        f"{split.meta['size']}×{split.meta['size']}, raw {raw / 1e9:.1f} GB, "
        f"{split.images.rows} per chunk; machine: {machine()}",
        flush=True,
    )
    old = training.Batches(split, frames, 16, torch.device("cpu"), seed=0)
    new = training.Batches(split, frames, 16, torch.device("cpu"), seed=0)
    before, _ = rss_mib()
    rates: dict[str, list[float]] = {
        "random rows, training thread": [],
        "chunk-aware, prefetched": [],
    }
    for r in range(rounds):
        # each round's steps far from the last round's: the new path starts cold (no
        # batch built ahead while the old one ran), so its rate is not flattered
        first = r * 1_000_000
        for name, draw in zip(rates, (lambda k: old(), new), strict=True):
            start = time.perf_counter()
            for step in range(first, first + batches):
                torch.manual_seed(step)
                draw(step)
            rates[name].append(batches * 16 / (time.perf_counter() - start))
    now, peak = rss_mib()
    new.close()
    for name, values in rates.items():
        print(f"  {name}: {np.median(values):,.0f} seq/s (median of {rounds} rounds of {batches})")
    first, second = rates.values()
    paired = np.asarray(second) / np.asarray(first)
    spread = f"[{paired.min():.1f}-{paired.max():.1f}]"
    print(f"  speed-up, paired per round: {np.median(paired):.1f}x {spread}")
    print(
        f"  resident memory: {before:,.0f} MiB before, {now:,.0f} MiB after, peak {peak:,.0f} "
        f"MiB (raw frames {raw / 2**20:,.0f} MiB)"
    )


def full(out_dir: Path) -> None:
    """The paper-scale pendulum through the CLI."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = 60_000 * (STEPS + 1) * SIZE * SIZE * 3
    free = shutil.disk_usage(out_dir).free
    print(f"paper scale: raw frames {raw / 1e9:.1f} GB, {free / 1e9:.0f} GB free in {out_dir}")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix="bench-data-") as tmp:
        target = Path(tmp) / "pendulum"
        args = ["data", "generate", "--system", "pendulum", "--train", "50000"]
        args += ["--test", "10000", "--size", str(SIZE), "--out", str(target), "--no-progress"]
        print(f"command: hgn {' '.join(args)}  (machine: {machine()})")
        run = cli(args)
        size = disk_bytes(target)
    print(f"  {run['stderr']}")
    print(
        f"  60,000 trajectories in {run['wall']:.1f} s wall, {run['cpu']:.1f} s CPU "
        f"({60_000 / run['wall']:,.0f} traj/s); {size / 1e9:.2f} GB on disk = 1/"
        f"{raw / size:.0f} of raw; peak RSS {run['peak_mib']:.0f} MiB; load average after "
        f"{os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="trajectories for the CLI run")
    parser.add_argument("--ref-n", type=int, default=1_000, help="trajectories for the reference")
    parser.add_argument("--full", action="store_true", help="also the 60,000-trajectory run")
    parser.add_argument("--dir", default="/work/data", help="where --full writes")
    parser.add_argument("--loader", type=Path, help="only the loader comparison, on this store")
    parser.add_argument("--rounds", type=int, default=5, help="--loader: rounds")
    parser.add_argument("--batches", type=int, default=20, help="--loader: batches a round")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.loader:
        loader(args.loader, args.rounds, args.batches)
        return
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        out = Path(tmp) / "pendulum"
        generation(args.n, args.ref_n, out)
        reading(out)
    if args.full:
        full(Path(args.dir))


if __name__ == "__main__":
    main()
