"""Dataset generation speed: hgn against a straightforward SciPy + NumPy reference.

    .venv/bin/python benchmarks/bench_data.py            # 2,000 pendulum trajectories
    .venv/bin/python benchmarks/bench_data.py --full     # + the paper-scale 60,000 on disk

Both sides produce the same 2,000 trajectories (31 frames, 64x64, noise 0.1) from the
same initial states and noise draws: hgn simulates them batched in float64 with RK4 and
renders anti-aliased discs patch-wise in PyTorch; the reference integrates each
trajectory with ``solve_ivp`` (DOP853, rtol = atol = 1e-9) and draws each trajectory's
frames with NumPy over the full image. The script checks that the two agree, then prints
trajectories per second of both and their ratio. hgn is timed twice: the in-memory work
the reference also does, and the whole ``hgn.data.generate`` including writing to disk.

``--full`` runs ``hgn data generate`` for 50,000 + 10,000 pendulum trajectories at 64x64
(about 23 GB) in a child process into a temporary directory (deleted afterwards) and
reports its wall time and peak resident memory (the child's VmHWM, polled).
"""

from __future__ import annotations

import argparse
import os
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

N, STEPS, DT, SIZE, SEED = 2000, 30, 0.125, 64, 0
REPEATS = 3
"""hgn is timed as the median of this many runs (the machine is shared and noisy); the
reference, at about half a minute a run, once."""


def frames_buffer(n: int = N) -> np.ndarray:
    """An output array with its pages already touched, so that neither side is timed
    on the operating system's first-touch page faults for 760 MB."""
    images = np.empty((n, STEPS + 1, SIZE, SIZE, 3), np.uint8)
    images.fill(0)
    return images


def hgn_in_memory(system, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hgn's per-block work (sampling, simulation, noise, rendering), without the disk."""
    rng = np.random.default_rng(SEED)
    n = len(images)
    with one_thread():
        q, p = system.sample_trajectories(n, rng, DT, STEPS)
        q_noisy = (q + system.noise * torch.from_numpy(rng.standard_normal(q.shape))).float()
        p_noisy = (p + system.noise * torch.from_numpy(rng.standard_normal(p.shape))).float()
        chunk = max(1, data.CHUNK_PIXELS // ((STEPS + 1) * SIZE * SIZE))
        for i in range(0, n, chunk):
            images[i : i + chunk] = system.render(q_noisy[i : i + chunk], SIZE).numpy()
    del p_noisy  # produced for parity with the reference, not compared
    return q.numpy(), p.numpy(), images


def reference(
    system, q0: np.ndarray, p0: np.ndarray, noise: np.ndarray, images: np.ndarray
) -> tuple:
    """One solve_ivp per trajectory, then NumPy discs drawn over whole frames."""
    g, m, length = (system.constants[k] for k in ("g", "m", "l"))
    info = system.render_info()
    extent, radius = info["extent"], info["radius"]
    scale = SIZE / (2 * extent)
    colour = np.array(info["colours"][0]) * 255.0
    background = np.array(BACKGROUND) * 255.0
    centres = np.arange(SIZE) + 0.5
    times = np.arange(STEPS + 1) * DT

    def field(_t: float, y: np.ndarray) -> list[float]:
        return [y[1] / (m * length**2), -2.0 * m * g * length * np.sin(y[0])]

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
    """((wall seconds, CPU seconds of this process), result). On a shared machine the
    CPU time is the steadier figure: it does not count time spent waiting for a core."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return (time.perf_counter() - wall, time.process_time() - cpu), result


def compare(system) -> None:
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared)")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    hgn_in_memory(system, frames_buffer(64))  # warm-up: first calls initialise libraries
    buffer = frames_buffer()
    runs = [timed(hgn_in_memory, system, buffer) for _ in range(REPEATS)]
    t_hgn, (q_hgn, p_hgn, img_hgn) = sorted(runs, key=lambda run: run[0][0])[REPEATS // 2]

    # the reference starts from hgn's initial states and noise draws
    rng = np.random.default_rng(SEED)
    system.sample_trajectories(N, rng, DT, STEPS)  # advance the stream identically
    noise = system.noise * rng.standard_normal((N, STEPS + 1, 1))
    t_ref, (q_ref, img_ref) = timed(
        reference, system, q_hgn[:, 0, 0], p_hgn[:, 0, 0], noise[..., 0], frames_buffer()
    )
    print(f"states agree to {np.abs(q_ref - q_hgn[..., 0]).max():.1e} (max abs)")
    diff = [np.abs(a.astype(np.int16) - b) for a, b in zip(img_ref, img_hgn, strict=True)]
    worst, off = max(d.max() for d in diff), sum(int((d > 1).sum()) for d in diff)
    print(f"images agree: max diff {worst} levels, {off} values differ by more than 1")
    del diff, img_ref, img_hgn, buffer

    disk = []
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory() as tmp:
            settings = {"n_train": N, "n_test": 1, "size": SIZE, "seed": SEED, "progress": False}
            disk.append(timed(data.generate, Path(tmp) / "d", **settings)[0])
    t_disk = sorted(disk)[REPEATS // 2]  # median by wall time
    rows = [
        ("reference (solve_ivp + NumPy)", t_ref),
        ("hgn, in memory", t_hgn),
        ("hgn data.generate, to disk", t_disk),
    ]
    print(f"{'':32s} {'wall traj/s':>12s} {'CPU traj/s':>12s}   (seconds for {N}: wall, CPU)")
    for name, (wall, cpu) in rows:
        print(f"{name:32s} {N / wall:12.1f} {N / cpu:12.1f}   ({wall:.2f}, {cpu:.2f})")
    for name, (wall, cpu) in rows[1:]:
        print(f"speed-up of {name}: {t_ref[0] / wall:.1f}x wall, {t_ref[1] / cpu:.1f}x CPU")


def full(out_dir: str) -> None:
    need = 60_000 * (STEPS + 1) * SIZE * SIZE * 3
    free = shutil.disk_usage(out_dir).free
    print(f"paper-scale pendulum: needs {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free in {out_dir}")
    if free < need * 1.05:
        print("not enough disk; measure throughput on a smaller N instead")
        return
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        command = [sys.executable, "-m", "hgn", "data", "generate", "--system", "pendulum"]
        command += ["--train", "50000", "--test", "10000", "--size", str(SIZE)]
        command += ["--out", str(Path(tmp) / "pendulum"), "--no-progress"]
        print(" ".join(command[1:]))
        start = time.perf_counter()
        child = subprocess.Popen(command)
        peak = 0
        while child.poll() is None:
            peak = max(peak, peak_rss_kib(child.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        if child.returncode:
            raise SystemExit(f"generation failed with exit status {child.returncode}")
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    print(
        f"60,000 trajectories in {seconds:.1f} s ({60_000 / seconds:.0f} traj/s), "
        f"{size / 1e9:.1f} GB written, peak RSS {peak / 1024:.0f} MiB, "
        f"load average after {os.getloadavg()[0]:.1f}"
    )


def peak_rss_kib(pid: int) -> int:
    """The child's own high-water resident memory (VmHWM). getrusage(RUSAGE_CHILDREN)
    would also count the parent's memory that the child shared before exec."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:  # the child just exited
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="also the 60,000-trajectory run")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where --full writes")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    compare(get_system("pendulum"))
    if args.full:
        full(args.dir)


if __name__ == "__main__":
    main()
