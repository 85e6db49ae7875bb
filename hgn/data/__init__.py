"""Pixel datasets of the four physical systems: generation, storage, reading, pictures.

Layout of a dataset directory::

    DIR/meta.json                 everything needed to regenerate it (written last)
    DIR/{train,test}/images.npy   (N, T+1, H, W, 3) uint8, the rendered noisy states
    DIR/{train,test}/q.npy, p.npy (N, T+1, dof) float32, the clean states
    DIR/{train,test}/q_noisy.npy, p_noisy.npy   the noisy states that were rendered

Plain ``.npy`` files are read by memory-mapping, so a paper-scale split (tens of GB) is
never loaded whole, and any tool can open them. They are written sequentially, chunk by
chunk, from a background thread (the page cache, not the process, holds what is in
flight), inside a temporary directory renamed into place at the end: an interrupted run
leaves nothing that looks like a dataset. Readers check every file's header and length
against ``meta.json``, so a truncated copy is refused with a clear message.

Randomness is drawn per block of ``block`` consecutive trajectories from
``numpy_rng(seed, system, split, block_index)``. A shard (``shard=(i, n)``) generates a
contiguous run of whole blocks, so its rows are bit for bit those of the unsharded run;
shards are written to ``DIR/shard-IIII-of-NNNN/`` and read together by :func:`load`, or
joined into one dataset by :func:`merge`.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hgn import __version__
from hgn import plots as viz
from hgn.physics.systems import System, get_system, one_thread
from hgn.utils import UserError, atomic_path, numpy_rng, positive_int

FORMAT = 1
"""Version of the on-disk layout, recorded in meta.json."""

BLOCK = 1024
"""Trajectories per block of randomness (and per unit of sharding)."""

SPLITS = ("train", "test")
STATES = ("q", "p", "q_noisy", "p_noisy")
ARRAYS = ("images", *STATES)
META = "meta.json"
CHUNK_PIXELS = 1 << 20
"""Rendering and writing work in chunks of about this many pixels."""
PENDING_WRITES = 4
"""Chunks allowed in flight to the writer thread (bounds memory)."""


# --- the public reading API -----------------------------------------------------------
class Split:
    """One split of a dataset: lazily readable arrays plus its metadata.

    ``images`` is ``(N, T+1, H, W, 3)`` uint8; ``q``, ``p``, ``q_noisy``, ``p_noisy`` are
    ``(N, T+1, dof)`` float32. They are memory-maps (or, over shards, a
    :class:`ConcatRows` of memory-maps): slicing reads only the rows asked for.
    """

    def __init__(self, path: Path, meta: dict[str, Any], arrays: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.images = arrays["images"]
        self.q = arrays["q"]
        self.p = arrays["p"]
        self.q_noisy = arrays["q_noisy"]
        self.p_noisy = arrays["p_noisy"]

    def __len__(self) -> int:
        return self.meta["n"]

    def __reduce__(self) -> tuple:
        # pickled by path, so DataLoader workers reopen the memory-maps instead of
        # receiving a copy of the data
        return load, (self.path, self.meta["split"])

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"Split({m['system']}, {m['split']}, n={m['n']}, frames={m['steps'] + 1}, "
            f"size={m['size']}, path={str(self.path)!r})"
        )


class ConcatRows:
    """Read-only concatenation of arrays along the first axis, indexed lazily.

    Used to read a sharded dataset without merging it: each index touches only the
    shards that hold the rows asked for.
    """

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts]).tolist()
        self.shape = (self.starts[-1], *parts[0].shape[1:])
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        if first is Ellipsis:
            first, rest = slice(None), key
        if isinstance(first, int | np.integer):
            row = int(first) + (len(self) if first < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"index {first} is out of bounds for {len(self)} rows")
            part = bisect.bisect_right(self.starts, row) - 1
            return np.asarray(self.parts[part][(row - self.starts[part], *rest)])
        rows = np.arange(len(self))[first]
        # gather shard by shard in ascending row order, then restore the order asked for
        order = np.argsort(rows, kind="stable")
        ascending = rows[order]
        bounds = np.searchsorted(ascending, self.starts)
        pieces = [
            self.parts[part][(ascending[a:b] - self.starts[part], *rest)]
            for part, (a, b) in enumerate(itertools.pairwise(bounds))
            if b > a
        ]
        if not pieces:
            return self.parts[0][(np.empty(0, np.int64), *rest)]
        joined = np.concatenate(pieces)
        result = np.empty_like(joined)
        result[order] = joined
        return result

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def load(path: str | os.PathLike, split: str = "train") -> Split:
    """Open one split of a dataset (or of a directory of complete shards) lazily."""
    path = Path(path)
    meta, parts = _scan(path)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    arrays: dict[str, Any] = {}
    for name in ARRAYS:
        opened = [_open_npy(part, part_meta, split, name) for part, part_meta in parts]
        arrays[name] = opened[0] if len(opened) == 1 else ConcatRows(opened)
    split_meta = {k: v for k, v in meta.items() if k != "splits"}
    split_meta.update(meta["splits"][split], split=split)
    return Split(path, split_meta, arrays)


class SequenceDataset(torch.utils.data.Dataset):
    """Whole sequences for training: item ``i`` is ``(T+1, 3, H, W)`` float32 in [0, 1].

    Indexing reads one sequence from the memory-map, so it is cheap at any dataset size.
    """

    def __init__(self, split_or_path: Split | str | os.PathLike, split: str = "train") -> None:
        self.split = (
            split_or_path if isinstance(split_or_path, Split) else load(split_or_path, split)
        )

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> torch.Tensor:
        frames = torch.from_numpy(np.array(self.split.images[index]))
        return frames.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255.0)


def info(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a dataset (merged over shards), without opening its arrays."""
    return _scan(Path(path))[0]


# --- generation -----------------------------------------------------------------------
def generate(
    out: str | os.PathLike,
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
    **constants: float,
) -> Path:
    """Generate a dataset (or one shard of it) at ``out`` and return the directory written.

    ``constants`` override the system's (e.g. ``l=2.0`` for a longer pendulum); ``noise``
    overrides its observation noise std (0 allowed). With ``shard=(i, n)`` or ``"i/n"``
    (0-based), only the i-th of n contiguous runs of blocks is generated, into
    ``out/shard-IIII-of-NNNN``. Re-running with identical settings is a no-op; a different
    dataset already at the destination is an error unless ``overwrite``.
    """
    sim = get_system(system, noise=noise, **constants)
    n_train = positive_int(n_train, "--train (number of training trajectories)")
    n_test = positive_int(n_test, "--test (number of test trajectories)")
    steps = positive_int(steps, "--steps")
    block = positive_int(block, "block")
    size = sim.check_size(positive_int(size, "--size"))
    dt = float(dt)
    if not math.isfinite(dt) or dt == 0.0:
        raise UserError(f"--dt must be a non-zero finite number, got {dt}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}")
    shard = parse_shard(shard)
    counts = {"train": n_train, "test": n_test}
    ranges = {name: _shard_rows(counts[name], block, shard) for name in SPLITS}
    meta = {
        "format": FORMAT,
        "version": __version__,
        "system": sim.name,
        "constants": sim.constants,
        "noise": sim.noise,
        "dt": dt,
        "steps": steps,
        "seed": int(seed),
        "size": size,
        "dof": sim.dof,
        "bodies": sim.bodies,
        "n_train": n_train,
        "n_test": n_test,
        "block": block,
        "integrator": {"method": sim.method, "substeps": sim.substeps(dt)},
        "render": sim.render_info(),
        "shard": None if shard is None else {"index": shard[0], "count": shard[1]},
        "splits": {
            name: {"start": lo, "stop": hi, "n": hi - lo} for name, (lo, hi) in ranges.items()
        },
    }
    meta = json.loads(json.dumps(meta))  # the form it takes on disk, for comparisons
    _check_space(Path(out), meta)
    target = _prepare_target(Path(out), meta, overwrite)
    if target is None:
        return Path(out) if shard is None else Path(out) / _shard_name(*shard)
    with _terminate_cleanly(), atomic_path(target) as tmp, one_thread(), _Writer() as writer:
        tmp.mkdir()
        total = sum(hi - lo for lo, hi in ranges.values())
        with tqdm(total=total, unit="traj", desc=sim.name, disable=not progress) as bar:
            for name in SPLITS:
                bar.set_description(f"{sim.name} {name}")
                _generate_split(sim, meta, name, ranges[name], tmp / name, writer, bar)
        writer.drain()
        _write_meta(tmp, meta)
    return target


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """Treat SIGTERM (what cluster schedulers and ``kill`` send) like Ctrl-C while
    generating, so the temporary output is removed instead of left on disk."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_shard(shard: tuple[int, int] | str | None) -> tuple[int, int] | None:
    """``"I/N"`` or ``(I, N)`` with 0 <= I < N, or None."""
    if shard is None:
        return None
    try:
        index, count = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (ValueError, TypeError):
        raise UserError(f"--shard must look like I/N (e.g. 0/8), got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard I/N needs 0 <= I < N, got {index}/{count}")
    return index, count


def _shard_rows(n: int, block: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    """Rows [start, stop) of a split of n rows that shard (i, count) owns: whole blocks."""
    if shard is None:
        return 0, n
    index, count = shard
    blocks = -(-n // block)
    return (
        min(n, blocks * index // count * block),
        min(n, blocks * (index + 1) // count * block),
    )


def _shard_name(index: int, count: int) -> str:
    return f"shard-{index:04d}-of-{count:04d}"


def _prepare_target(out: Path, meta: dict[str, Any], overwrite: bool) -> Path | None:
    """Where to write, after refusing to clobber anything that is not this dataset.

    Returns None when the identical dataset (or shard) is already complete there.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    if meta["shard"] is not None:
        if (out / META).exists():
            raise UserError(f"{out} already holds a complete (unsharded) dataset")
        out.mkdir(exist_ok=True)
        for other in _shard_dirs(out):
            if _identity(_read_meta(other), shard=True) != _identity(meta, shard=True):
                raise UserError(
                    f"{out} already holds shards of a different dataset ({other.name}); "
                    "use another --out"
                )
        target = out / _shard_name(meta["shard"]["index"], meta["shard"]["count"])
    else:
        if _shard_dirs(out) and not overwrite:
            raise UserError(f"{out} holds shards; merge them with `hgn data merge {out}`")
        target = out
    if (target / META).exists():
        existing = _read_meta(target)
        if _identity(existing) == _identity(meta):
            for split in SPLITS:
                load(target, split)  # verifies every file
            return None
        if not overwrite:
            raise UserError(
                f"{target} already holds a different dataset ({_describe(existing)}); "
                "choose another --out or pass --overwrite"
            )
    elif target.exists() and any(target.iterdir()) and not overwrite:
        raise UserError(f"{target} exists, is not empty and is not an hgn dataset; refusing it")
    return target


def _identity(meta: dict[str, Any], shard: bool = False) -> dict[str, Any]:
    """What must match for two metas to describe the same data (the package version
    need not); with ``shard``, what all shards of one generation share."""
    drop = {"version"} | ({"splits", "shard"} if shard else set())
    same = {k: v for k, v in meta.items() if k not in drop}
    if shard:
        same["shards"] = (meta.get("shard") or {}).get("count")
    return same


def _describe(meta: dict[str, Any]) -> str:
    return (
        f"{meta.get('system')}, {meta.get('n_train')}+{meta.get('n_test')} trajectories, "
        f"size {meta.get('size')}, seed {meta.get('seed')}"
    )


def _check_space(out: Path, meta: dict[str, Any]) -> None:
    need = sum(_nbytes(meta, split, name) for split in SPLITS for name in ARRAYS)
    where = next(p for p in (out, *out.absolute().parents) if p.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise UserError(
            f"this dataset needs {need / 1e9:.1f} GB but {where} has only "
            f"{free / 1e9:.1f} GB free; use fewer trajectories, a smaller --size or --shard"
        )


def _generate_split(
    sim: System,
    meta: dict[str, Any],
    split: str,
    rows: tuple[int, int],
    folder: Path,
    writer: _Writer,
    bar: tqdm,
) -> None:
    folder.mkdir()
    files = {
        name: writer.open(folder / f"{name}.npy", _shape(meta, split, name), _dtype(name))
        for name in ARRAYS
    }
    block, steps, dt, size = meta["block"], meta["steps"], meta["dt"], meta["size"]
    per_chunk = max(1, CHUNK_PIXELS // ((steps + 1) * size * size))
    for index in range(rows[0] // block, -(-rows[1] // block)):
        start, stop = index * block, min((index + 1) * block, rows[1])
        rng = numpy_rng(meta["seed"], meta["system"], split, index)
        q, p = sim.sample_trajectories(stop - start, rng, dt, steps)
        noisy = [
            (x + sim.noise * torch.from_numpy(rng.standard_normal(tuple(x.shape)))).float()
            for x in (q, p)
        ]
        states = dict(zip(STATES, (q.float(), p.float(), *noisy), strict=True))
        for name, x in states.items():
            writer.write(files[name], x.numpy())
        for lo in range(0, stop - start, per_chunk):
            writer.write(
                files["images"], sim.render(states["q_noisy"][lo : lo + per_chunk], size).numpy()
            )
            bar.update(min(per_chunk, stop - start - lo))
    for f in files.values():
        writer.close(f)


# --- storage --------------------------------------------------------------------------
def _shape(meta: dict[str, Any], split: str, name: str) -> tuple[int, ...]:
    n, frames = meta["splits"][split]["n"], meta["steps"] + 1
    if name == "images":
        return (n, frames, meta["size"], meta["size"], 3)
    return (n, frames, meta["dof"])


def _dtype(name: str) -> np.dtype:
    return np.dtype(np.uint8 if name == "images" else np.float32)


def _nbytes(meta: dict[str, Any], split: str, name: str) -> int:
    return math.prod(_shape(meta, split, name)) * _dtype(name).itemsize


class _NpyFile:
    """A ``.npy`` file written sequentially: header first, then the rows in order."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype = path, shape, dtype
        self.handle = open(path, "wb")  # noqa: SIM115 (closed by close())
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": shape,
        }
        np.lib.format.write_array_header_1_0(self.handle, header)
        self.left = math.prod(shape) * dtype.itemsize

    def write(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, self.dtype)
        self.left -= array.nbytes
        self.handle.write(memoryview(array).cast("B"))

    def close(self) -> None:
        if self.left != 0:
            raise RuntimeError(f"{self.path}: {self.left} bytes short of its shape")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


class _Writer:
    """Runs file writes on one background thread, in submission order, so disk I/O
    overlaps simulation and rendering; at most ``PENDING_WRITES`` chunks wait."""

    def __enter__(self) -> _Writer:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hgn-writer")
        self.pending: deque[Future] = deque()
        self.files: list[_NpyFile] = []
        return self

    def open(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> _NpyFile:
        self.files.append(_NpyFile(path, shape, dtype))
        return self.files[-1]

    def _submit(self, fn: Any, *args: Any) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > PENDING_WRITES:
            self.pending.popleft().result()

    def write(self, file: _NpyFile, array: np.ndarray) -> None:
        self._submit(file.write, array)

    def close(self, file: _NpyFile) -> None:
        self._submit(file.close)

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def __exit__(self, *exc: Any) -> None:
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)
        for file in self.files:
            file.handle.close()


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    with open(folder / META, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / META).read_text())
    except FileNotFoundError:
        raise UserError(f"{folder} is not an hgn dataset (no {META})") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder / META} is unreadable or corrupt ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{folder / META} is not an hgn dataset description (format {FORMAT})")
    return meta


def _shard_dirs(root: Path) -> list[Path]:
    """Complete shard directories under ``root`` (temporary ones start with a dot)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("shard-*-of-*") if p.is_dir())


def _scan(path: Path) -> tuple[dict[str, Any], list[tuple[Path, dict[str, Any]]]]:
    """The dataset's metadata and its parts: itself, or its shards in index order."""
    if not path.exists():
        raise UserError(f"no dataset at {path}")
    if (path / META).exists() or not _shard_dirs(path):
        meta = _read_meta(path)
        return meta, [(path, meta)]
    parts = [(p, _read_meta(p)) for p in _shard_dirs(path)]
    first = parts[0][1]
    count = (first.get("shard") or {}).get("count")
    for folder, meta in parts:
        if count is None or _identity(meta, shard=True) != _identity(first, shard=True):
            raise UserError(f"{folder} is not a shard of the same dataset as {parts[0][0]}")
    have = {m["shard"]["index"] for _, m in parts}
    missing = sorted(set(range(count)) - have)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise UserError(
            f"{path} holds {len(have)} of {count} shards; missing {shown} "
            f"(still running, or rerun them with --shard I/{count})"
        )
    merged = {k: v for k, v in first.items()}
    merged["shard"] = None
    merged["splits"] = {}
    for split in SPLITS:
        spans = [m["splits"][split] for _, m in parts]
        if any(a["stop"] != b["start"] for a, b in itertools.pairwise(spans)):
            raise UserError(f"the shards in {path} do not tile the {split} split")
        merged["splits"][split] = {"start": 0, "stop": spans[-1]["stop"], "n": spans[-1]["stop"]}
    return merged, parts


def _open_npy(folder: Path, meta: dict[str, Any], split: str, name: str) -> np.ndarray:
    """Memory-map one array after checking its header and length against the meta."""
    file = folder / split / f"{name}.npy"
    shape, dtype = _shape(meta, split, name), _dtype(name)
    damaged = f"dataset {folder} is incomplete or damaged: {file}"
    try:
        with open(file, "rb") as f:
            np.lib.format.read_magic(f)
            found_shape, fortran, found_dtype = np.lib.format.read_array_header_1_0(f)
            offset = f.tell()
        length = file.stat().st_size
    except FileNotFoundError:
        raise UserError(f"{damaged} is missing") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{damaged} is unreadable ({exc})") from None
    if found_shape != shape or found_dtype != dtype or fortran:
        raise UserError(f"{damaged} has shape {found_shape} {found_dtype}, expected {shape}")
    if length != offset + _nbytes(meta, split, name):
        raise UserError(f"{damaged} is truncated ({length} bytes)")
    if shape[0] == 0:
        return np.empty(shape, dtype)
    return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape)


# --- merging and pictures -------------------------------------------------------------
def merge(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Join a complete set of shards into one dataset at ``out`` (default: in place,
    replacing the shards). The result is identical to an unsharded generation."""
    path = Path(path)
    meta, parts = _scan(path)
    if len(parts) == 1:
        raise UserError(f"{path} is already a single dataset; nothing to merge")
    target = path if out is None else Path(out)
    if out is not None and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"--out {target} already exists and is not empty; choose another")
    meta["version"] = __version__
    with atomic_path(target) as tmp, _Writer() as writer:
        tmp.mkdir()
        for split in SPLITS:
            (tmp / split).mkdir()
            for name in ARRAYS:
                file = writer.open(
                    tmp / split / f"{name}.npy", _shape(meta, split, name), _dtype(name)
                )
                row_bytes = _nbytes(meta, split, name) // max(1, meta["splits"][split]["n"])
                step = max(1, CHUNK_PIXELS * 4 // max(1, row_bytes))
                for folder, part_meta in parts:
                    array = _open_npy(folder, part_meta, split, name)
                    for lo in range(0, len(array), step):
                        writer.write(file, np.array(array[lo : lo + step]))
                writer.close(file)
        writer.drain()
        _write_meta(tmp, meta)
    return target


def show(
    path: str | os.PathLike,
    split: str = "train",
    n: int = 6,
    frames: int = 10,
    out: str | os.PathLike | None = None,
    fps: int = 8,
) -> tuple[Path, Path]:
    """Write a PNG grid (rows = trajectories, columns = evenly spaced frames) and a GIF
    of the first ``n`` trajectories side by side. Paths: ``out`` + ``.png``/``.gif``,
    by default ``DIR/preview-<split>.png`` and ``.gif`` inside the dataset directory."""
    data = load(path, split)
    n = min(positive_int(n, "--n"), len(data))
    frames = positive_int(frames, "--frames")
    if n == 0:
        raise UserError(f"the {split} split of {path} is empty")
    images = np.array(data.images[:n])  # (n, T+1, H, W, 3)
    factor = max(1, 128 // images.shape[2])
    columns = np.unique(np.linspace(0, images.shape[1] - 1, min(frames, images.shape[1])).round())
    prefix = Path(path) / f"preview-{split}" if out is None else Path(out)
    png = viz.save_image(
        prefix.with_name(prefix.name + ".png"),
        viz.grid(viz.upscale(images[:, columns.astype(int)], factor)),
    )
    movie = np.stack(
        [viz.grid(viz.upscale(images[None, :, t], factor)) for t in range(images.shape[1])]
    )
    gif = viz.save_animation(prefix.with_name(prefix.name + ".gif"), movie, fps=fps)
    return png, gif


# ----------------------------------------------------------------------------- tensors


def to_frames(images: torch.Tensor | np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 ``(..., T, H, W, 3)`` → float ``(..., T, 3, H, W)`` in [0, 1] on ``device``
    (converted after the copy, which moves a quarter of the bytes)."""
    images = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
    return images.to(device, non_blocking=True).movedim(-1, -3).float().div_(255.0)


def mean_frame(split: hgn_data.Split, limit: int = 1000) -> torch.Tensor:
    """The average frame ``(3, H, W)`` of (the first ``limit`` sequences of) a split."""
    images = np.asarray(split.images[: min(limit, len(split))], dtype=np.float64)
    return torch.from_numpy(images.mean((0, 1)) / 255.0).float().permute(2, 0, 1)
