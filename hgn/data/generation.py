"""Generating datasets of the physical systems into a store (see :mod:`hgn.data.store`).

Randomness is drawn per block of ``block`` consecutive trajectories from
``numpy_rng(seed, system, split, block_index)``: initial states (with any random
constants, colours and shifts of the variant), then the observation noise. A shard
(``shard=(i, n)``) generates a contiguous run of whole blocks, so its rows are bit for bit
those of the unsharded run, and since image chunks never straddle blocks, the n shard
jobs write disjoint chunks of one store: no merge step.

Writing overlaps computing: the main thread simulates a block and renders one chunk
of frames at a time into a small ring of reused buffers (fresh multi-megabyte buffers
cost more in page faults than the drawing does); a thread pool compresses and stores
them. Memory stays at a few chunks whatever the dataset's size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hgn import __version__
from hgn.data import metadata, store
from hgn.data.store import SPLITS, STATES, ArraySpec, Location
from hgn.physics.systems import System, get_system, one_thread
from hgn.utils import UserError, check_memory, numpy_rng, positive_int

BLOCK = 1024
"""Trajectories per block of randomness (and per unit of sharding)."""

SIZES = (16, 32, 64, 128)
"""Image sizes the models take: HGN's encoder and decoder need latent_size · 2^k with
the default 4×4 latent grid and 16 ≤ size ≤ 128 (HGNConfig); larger frames would only
fill the disk (``--size 4000`` once wrote 5.6 GB for 4 trajectories)."""

ESTIMATE_ROWS = 8
"""Trajectories rendered and compressed to estimate a dataset's size on disk."""

Report = Callable[[str], None]


def check_image_size(size: Any, option: str = "--size") -> int:
    """One of :data:`SIZES`, or one line saying which sizes the models take."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size not in SIZES:
        raise UserError(
            f"{option} must be one of {', '.join(map(str, SIZES))} (the image sizes the "
            f"models take), got {size!r}"
        )
    return int(size)


def generate(
    out: str | Path,
    system: str = "pendulum",
    n_train: int = 50_000,
    n_test: int = 10_000,
    steps: int = 30,
    dt: float = 0.125,
    size: int = 64,
    seed: int = 0,
    noise: float | None = None,
    shard: tuple[int, int] | str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    block: int = BLOCK,
    style: str = "paper",
    vary: Mapping[str, tuple[float, float]] | None = None,
    random_colours: bool = False,
    report: Report | None = None,
    **constants: float,
) -> str:
    """Generate a dataset (or one shard of it) at ``out`` (a path or fsspec URL) and
    return where it is.

    ``constants`` override the system's (e.g. ``l=2.0``; ``friction``, ``offset`` for
    those variants); ``vary`` draws constants per trajectory from ranges,
    ``random_colours`` gives each trajectory random body colours, ``style`` picks the
    pictures (``"paper"`` or the DeepMind suite's ``"dm"``); ``noise`` overrides the
    observation noise std (0 allowed). With ``shard=(i, n)`` or ``"i/n"`` (0-based) only
    the i-th of n contiguous runs of blocks is written; the store is complete when all n
    are. Re-running with identical settings is a no-op (an unfinished store is
    finished); an hgn dataset with other settings is replaced only with ``overwrite``;
    anything else at ``out`` is never touched. ``report`` receives the one-line size
    estimate printed before any work.
    """
    sim = get_system(
        system, noise=noise, style=style, vary=vary, random_colours=random_colours, **constants
    )
    n_train = positive_int(n_train, "--train (number of training trajectories)")
    n_test = positive_int(n_test, "--test (number of test trajectories)")
    steps = positive_int(steps, "--steps")
    block = positive_int(block, "block")
    size = sim.check_size(check_image_size(size))
    dt = float(dt)
    if not math.isfinite(dt) or dt == 0.0:
        raise UserError(f"--dt must be a non-zero finite number, got {dt}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}")
    part = parse_shard(shard) or (0, 1)
    counts = {"train": n_train, "test": n_test}
    _check_memory(sim, steps, size, block)
    _check_substeps(sim, dt)
    meta = _meta(sim, counts, steps, dt, size, int(seed), block, part[1])
    loc = store.locate(out)
    _write_shard(loc, sim, meta, part, overwrite, progress, report)
    return loc.url


def _write_shard(
    loc: Location,
    sim: System,
    meta: dict[str, Any],
    part: tuple[int, int],
    overwrite: bool,
    progress: bool,
    report: Report | None,
) -> None:
    """Write shard ``part`` of the dataset ``meta`` describes into ``loc``: nothing when
    the store already holds it; else the size estimate, then the rows, then the shard's
    record. An unsharded store this call created is removed again when the writing fails
    (a shard leaves its store to the other shards)."""
    specs = _specs(sim, meta)
    created = store.prepare(loc, meta, part, overwrite)
    if created is None:
        return
    ranges = {name: _shard_rows(meta["splits"][name]["n"], meta["block"], part) for name in SPLITS}
    _check_space(loc, sim, meta, specs, ranges, report)
    created = store.begin(loc, meta, specs, part, created)
    if created is None:
        return
    try:
        with store.terminate_cleanly(), one_thread():
            _write(loc, sim, meta, specs, ranges, progress)
    except BaseException:
        if part[1] == 1 and created:
            store.discard(loc, meta)
        raise
    record = {"index": part[0], "count": part[1], "version": __version__, "rows": ranges}
    store.finish_part(loc, meta, part[0], record)


def _meta(
    sim: System,
    counts: dict[str, int],
    steps: int,
    dt: float,
    size: int,
    seed: int,
    block: int,
    parts: int,
) -> dict[str, Any]:
    """Everything needed to regenerate the dataset, in the form it takes on disk."""
    probe = sim.sample_variant(1, np.random.default_rng(0))
    meta = {
        "format": store.FORMAT,
        "version": __version__,
        "source": "generated",
        "system": sim.name,
        "constants": sim.constants,
        "noise": sim.noise,
        "dt": dt,
        "steps": steps,
        "seed": seed,
        "size": size,
        "dof": sim.dof,
        "bodies": sim.bodies,
        "has_states": True,
        "n_train": counts["train"],
        "n_test": counts["test"],
        "block": block,
        "integrator": {"method": sim.method, "substeps": sim.substeps(dt)},
        "render": sim.render_info(),
        "variant": {
            "style": sim.style,
            "vary": {k: list(v) for k, v in sim.vary.items()},
            "random_colours": sim.random_colours,
            "friction": sim.constants["friction"],
            "offset": sim.constants["offset"],
            "hamiltonian": sim.constants["friction"] == 0,
            "values": sorted(probe),
        },
        "splits": {name: {"n": n} for name, n in counts.items()},
        "parts": parts,
        "complete": False,
    }
    return {**meta, "fingerprint": store.fingerprint(meta)}


VALUE_DIMS = {"colours": ("trajectory", "body", "rgb"), "shift": ("trajectory", "xy")}


def _specs(sim: System, meta: dict[str, Any]) -> dict[str, ArraySpec]:
    """The arrays of each split: images, states, per-trajectory values."""
    frames, size, block = meta["steps"] + 1, meta["size"], meta["block"]
    rows = store.image_rows(size * size * 3, frames, block)
    state_rows = block  # one chunk of states per block of randomness
    probe = sim.sample_variant(1, np.random.default_rng(0))
    specs = {}
    for split in SPLITS:
        n = meta["splits"][split]["n"]
        specs[f"{split}/images"] = ArraySpec(
            (n, frames, size, size, 3),
            np.dtype(np.uint8),
            rows,
            ("trajectory", "time", "y", "x", "rgb"),
            store.IMAGE_CODEC,
        )
        for name in STATES:
            specs[f"{split}/{name}"] = ArraySpec(
                (n, frames, sim.dof),
                np.dtype(np.float32),
                state_rows,
                ("trajectory", "time", "coordinate"),
                store.STATE_CODEC,
            )
        for name, value in probe.items():
            specs[f"{split}/{name}"] = ArraySpec(
                (n, *value.shape[1:]),
                np.dtype(np.float32 if name == "colours" else np.float64),
                state_rows,
                VALUE_DIMS.get(name, ("trajectory",)),
                store.STATE_CODEC,
            )
    return specs


def parse_shard(shard: tuple[int, int] | str | None) -> tuple[int, int] | None:
    """``"I/N"`` or ``(I, N)`` with 0 <= I < N <= :data:`metadata.MAX_PARTS`, or None (a
    count of 10^11 once made the command and ``data info`` loop for good). Shards with
    no whole block of rows are allowed, and empty: a scheduler's array of N jobs need
    not know the data's size."""
    if shard is None:
        return None
    try:
        index, count = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (ValueError, TypeError):
        raise UserError(f"--shard must look like I/N (e.g. 0/8), got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard I/N needs 0 <= I < N, got {index}/{count}")
    if count > metadata.MAX_PARTS:
        raise UserError(f"--shard I/N allows N up to {metadata.MAX_PARTS}, got {count}")
    return index, count


MAX_SUBSTEPS = 10_000
"""The most integrator sub-steps per frame a dataset may need: more means constants so
stiff (``--set g=1e308``) that the simulation would overflow or run for days."""


def _check_substeps(sim: System, dt: float) -> None:
    """Refuse constants and ``dt`` that need more than :data:`MAX_SUBSTEPS` sub-steps."""
    try:
        substeps = sim.substeps(dt)
    except (OverflowError, ValueError):
        substeps = math.inf
    if not substeps <= MAX_SUBSTEPS:
        raise UserError(
            f"the {sim.name} constants {sim.constants} with --dt {dt:g} need {substeps:g} "
            f"integrator sub-steps per frame (at most {MAX_SUBSTEPS}); use smaller constants "
            "or a smaller --dt"
        )


def _check_memory(sim: System, steps: int, size: int, block: int) -> None:
    """Refuse settings whose working set cannot fit in memory, before any work: one block
    of simulated states (several float64 copies) and the ring of frame chunks. ``--frames
    1e8`` used to end in a traceback from the allocator."""
    frames = steps + 1
    rows = store.image_rows(size * size * 3, frames, block)
    states = 16 * block * frames * max(sim.dof, 1) * 8
    images = 12 * rows * frames * size * size * 3
    check_memory(
        states + images, "generating this dataset", "use fewer --frames or a smaller --size"
    )


def _shard_rows(n: int, block: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Rows [start, stop) of a split of n rows that shard (i, count) owns: whole blocks."""
    index, count = shard
    blocks = -(-n // block)
    return (
        min(n, blocks * index // count * block),
        min(n, blocks * (index + 1) // count * block),
    )


def _check_space(
    loc: Location,
    sim: System,
    meta: dict[str, Any],
    specs: dict[str, ArraySpec],
    ranges: dict[str, tuple[int, int]],
    report: Report | None,
) -> None:
    """Print the estimated size on disk before any work; refuse when it exceeds the
    free space. The estimate compresses frames of a few initial states drawn from their
    own seed stream (the dataset's randomness is untouched; no simulation needed, each
    frame an independent state, as compressible as a frame of a trajectory) and scales
    up."""
    rows = {split: hi - lo for split, (lo, hi) in ranges.items()}
    frames, size = meta["steps"] + 1, meta["size"]
    n = ESTIMATE_ROWS
    rng = numpy_rng(meta["seed"], "estimate", meta["system"])
    with one_thread():
        values = sim.sample_variant(n, rng)
        q, _ = sim.sample_initial(n * 31, rng)
        drawn = (sim.bind(values) if values else sim).render(q.view(n, 31, -1), size).numpy()
    spec = specs["train/images"]
    codec = store.numcodec(spec.codec, 1)
    per_frame = len(codec.encode(np.ascontiguousarray(drawn))) / math.prod(drawn.shape[:2])
    images = per_frame * frames * sum(rows.values())
    raw_images = size * size * 3 * frames * sum(rows.values())
    states = sum(
        s.nbytes * rows[key.split("/")[0]] / max(1, s.shape[0])
        for key, s in specs.items()
        if not key.endswith("/images")
    )
    need = images + states  # states compress little: count them raw
    raw = raw_images + states
    part = "" if meta["parts"] == 1 else ", for this shard"
    if report is not None:
        report(
            f"{loc.url}: about {store.human(need)} on disk (an estimate from compressing "
            f"{n} sample trajectories; {store.human(raw)} uncompressed{part})"
        )
    free = loc.free_bytes()
    if free is not None and need * 1.1 > free:
        raise UserError(
            f"this dataset needs about {store.human(need)} but {loc.url} has only "
            f"{store.human(free)} free; use fewer trajectories, a smaller --size or --shard"
        )


def _check_finite(q: torch.Tensor, p: torch.Tensor, meta: dict[str, Any]) -> None:
    """Refuse a simulation that overflowed (``--set g=1e308``): infinite or NaN states
    would be stored as data and drawn as garbage."""
    if not (torch.isfinite(q).all() and torch.isfinite(p).all()):
        raise UserError(
            f"the {meta['system']} simulation overflowed (non-finite states) with "
            f"constants {meta['constants']} and dt {meta['dt']}; use smaller values"
        )


def _draw(system: System, q: torch.Tensor, out: np.ndarray) -> np.ndarray:
    """Render on a writer thread, one intra-op thread each (see :func:`one_thread`)."""
    torch.set_num_threads(1)
    return system.render(q, out.shape[2], out=out)


def _write(
    loc: Location,
    sim: System,
    meta: dict[str, Any],
    specs: dict[str, ArraySpec],
    ranges: dict[str, tuple[int, int]],
    progress: bool,
) -> None:
    """Simulate, render and store this job's rows of every split."""
    block, steps, dt = meta["block"], meta["steps"], meta["dt"]
    writer = store.ChunkWriter(loc)
    total = sum(hi - lo for lo, hi in ranges.values())
    image_rows = specs["train/images"].rows
    ring = store.FrameRing(writer.pending_limit + 3, specs["train/images"].chunks)
    try:
        with tqdm(total=total, unit="traj", desc=sim.name, disable=not progress) as bar:
            for split, (lo, hi) in ranges.items():
                bar.set_description(f"{sim.name} {split}")
                for index in range(lo // block, -(-hi // block)):
                    start, stop = index * block, min((index + 1) * block, hi)
                    rng = numpy_rng(meta["seed"], meta["system"], split, index)
                    q, p, values = sim.sample_with_variant(stop - start, rng, dt, steps)
                    _check_finite(q, p, meta)
                    noisy = [
                        (x + sim.noise * torch.from_numpy(rng.standard_normal(tuple(x.shape))))
                        for x in (q, p)
                    ]
                    arrays = dict(zip(STATES, (q, p, *noisy), strict=True))
                    arrays.update(values)
                    for name, x in arrays.items():
                        spec = specs[f"{split}/{name}"]
                        data = x.numpy().astype(spec.dtype)
                        writer.put(f"{split}/{name}", spec, start // spec.rows, data)
                    bound = sim.bind(values) if values else sim
                    q_drawn = arrays["q_noisy"].float().double()  # what is stored
                    spec = specs[f"{split}/images"]
                    for first in range(0, stop - start, image_rows):
                        last = min(first + image_rows, stop - start)
                        slot, buffer = ring.take()
                        draw = functools.partial(
                            _draw,
                            bound.subset(slice(first, last)),
                            q_drawn[first:last],
                            buffer[: last - first],
                        )
                        chunk = (start + first) // image_rows
                        ring.busy[slot] = writer.put(f"{split}/images", spec, chunk, draw)
                        bar.update(last - first)
            writer.drain()
    finally:
        writer.close()
