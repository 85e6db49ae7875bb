"""The dataset format: one zarr v3 store per dataset, chunked by groups of trajectories
and compressed, readable lazily by hgn and by any zarr reader (zarr-python, xarray).

Why one file of more than 600 lines: the store's writers (exclusive creation, shard
jobs, part markers, removal of only what hgn wrote) and its readers follow one layout,
and a change to either must be read against the other; what the metadata must hold is
apart, in :mod:`hgn.data.metadata`.

Layout (every name is a zarr node; ``zarr.json`` files hold the metadata)::

    DIR/zarr.json                    group; attributes["hgn"] = the dataset's metadata
    DIR/{train,test}/images          (N, T+1, H, W, 3) uint8, Blosc-LZ4
    DIR/{train,test}/q, p            (N, T+1, dof) float32, the clean states
    DIR/{train,test}/q_noisy, p_noisy   the noisy states that were rendered
    DIR/{train,test}/<name>          per-trajectory values of random variants
                                     (varied constants (N,), colours (N, bodies, 3),
                                     canvas shifts (N, 2)), when the dataset has them
    DIR/hgn-part-IIII-of-NNNN.json   one per finished part (shard job) of the writing

Why zarr v3 and not HDF5: a zarr store is a directory of independent chunk objects, so
shard jobs on several machines write disjoint chunks of one store with no locking and
no merge step, the same store works on object storage through fsspec (``s3://``,
``gs://``, ``memory://``), and a reader fetches only the chunks a batch needs. An HDF5
file has one writer at a time and needs a POSIX file (or a special driver).

Why Blosc-LZ4 for the frames: the frames are soft discs on a flat background; LZ4 at
level 9 keeps them at 1/40-1/50 of their raw size and decodes at several GB/s, which
keeps training reads cheap (measured in ``benchmarks/bench_data.py``; Zstd packs about
twice as tightly but decodes 4-7× slower). The states use Blosc-Zstd with byte shuffle.

Chunks are written and read by this module rather than through zarr-python's
``Array.__setitem__``/``__getitem__``: on the 2-core development machine those cost
about 1.2 ms per trajectory to write and 0.25-2 ms to read (asyncio round trips,
intermediate copies and the page faults of fresh buffers), ten times the codec itself.
The bytes are exactly what zarr expects (the array's own codec, one file per chunk
key), so zarr reads every chunk hgn writes; ``tests/test_data.py`` checks both ways.

Completion: a writer records each finished part with a small marker file after all of
its chunks are stored, and the last part to finish sets ``attributes["hgn"]["complete"]``.
A reader refuses a store that is not complete, so a killed job (whose chunks may be
partly written, and whose missing chunks zarr would read as zeros) never reads as data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import posixpath
import re
import shutil
import signal
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numcodecs
import numpy as np
import torch
import zarr
from zarr.codecs import BloscCodec

from hgn.data.metadata import SPLITS, STATES, VALUE_NAME, meta_problem
from hgn.utils import UserError, check_writable

FORMAT = 2
"""Version of the layout, recorded in the metadata (1 was the ``.npy`` directories)."""

ATTRS = "hgn"
"""The root group attribute that holds an hgn dataset's metadata."""

PART = "hgn-part-{index:04d}-of-{count:04d}.json"
PART_NAME = re.compile(r"hgn-part-(\d{4,})-of-(\d{4,})\.json")
PREVIEWS = "hgn-previews.json"
"""The record of the pictures ``hgn data show`` wrote into a dataset (name → SHA-256):
a picture that still matches it is hgn's to replace or remove, any other is the user's."""
PREVIEW = "preview-{split}"
"""Name of ``hgn data show``'s pictures inside a local dataset directory (+ .png/.gif):
hgn's own, so replaced without asking, and removed with the dataset."""
CHUNK_BYTES = 8 << 20
"""Raw bytes per image chunk to aim for: big enough that per-file costs vanish, small
enough that a random batch does not decode much more than it needs."""
MAX_ROWS_PER_CHUNK = 64
SEPARATOR = "."
"""Chunk keys ``c.I.0.0...``: one flat folder per array (``/`` would make a directory
per chunk, and creating directories is what costs most on a network filesystem)."""

IMAGE_CODEC = {"cname": "lz4", "clevel": 9, "shuffle": "noshuffle"}
STATE_CODEC = {"cname": "zstd", "clevel": 5, "shuffle": "shuffle"}
_SHUFFLE = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE}

BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs"}
"""fsspec protocols and the package each needs, for the missing-backend message."""


# ----------------------------------------------------------------------------- where
@dataclass(frozen=True)
class Location:
    """Where a store lives: a local directory or an fsspec URL, with its filesystem."""

    url: str
    fs: fsspec.AbstractFileSystem
    root: str

    @property
    def local(self) -> bool:
        return "file" in _protocols(self.fs)

    def path(self, *parts: str) -> str:
        """The filesystem path of a key below the root."""
        return posixpath.join(self.root, *parts)

    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self.path(*parts)))

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.fs.cat_file(self.path(*parts)))

    def create_json(self, value: Any, *parts: str) -> bool:
        """Write a small JSON file only if none is there; False if one is. Exclusive on a
        local disk (the file is written under a name of its own, then hard-linked into
        place, which fails if the name exists), so that of two jobs started together on
        one ``--out`` exactly one creates the store. Object stores have no such
        operation; there it is a check, then a write."""
        data = (json.dumps(value, indent=2) + "\n").encode()
        target = self.path(*parts)
        if not self.local:
            if self.fs.exists(target):
                return False
            self.fs.pipe_file(target, data)
            return True
        tmp = f"{target}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
        with open(tmp, "xb") as f:
            f.write(data)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def write_json(self, value: Any, *parts: str) -> None:
        """Write a small JSON file, atomically on a local disk (object stores replace
        an object in one request anyway). Not fsync'ed, like the chunks: completion
        markers guard against killed jobs, not against power cuts (an fsync per file
        costs tens of milliseconds on network disks)."""
        data = (json.dumps(value, indent=2) + "\n").encode()
        target = self.path(*parts)
        if self.local:
            # one temporary name per writer: shard jobs started together all write the
            # same metadata, and a shared name lets one job's rename steal another's file
            tmp = f"{target}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
            with open(tmp, "xb") as f:
                f.write(data)
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(target, data)

    def listing(self) -> list[str]:
        """Names directly under the root (empty when it does not exist)."""
        try:
            return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.root, False))
        except FileNotFoundError:
            return []

    def zarr_store(self, read_only: bool = False) -> Any:
        """A zarr store object for this location (zarr writes the metadata)."""
        if self.local:
            return zarr.storage.LocalStore(self.root, read_only=read_only)
        fs = self.fs
        if not getattr(fs, "async_impl", False):
            from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

            fs = AsyncFileSystemWrapper(fs)
        return zarr.storage.FsspecStore(fs, path=self.root, read_only=read_only)

    def free_bytes(self) -> int | None:
        """Free space where a local store would go; None for object storage."""
        if not self.local:
            return None
        where = next(p for p in (Path(self.root), *Path(self.root).parents) if p.exists())
        return shutil.disk_usage(where).free

    def __reduce__(self) -> tuple:
        return locate, (self.url,)

    def __str__(self) -> str:
        return self.url


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def locate(url: str | os.PathLike) -> Location:
    """A :class:`Location` for a local path or an fsspec URL (``file://``, ``memory://``,
    ``s3://`` ...). A protocol whose package is missing is one line naming it."""
    text = os.fspath(url)
    if "://" not in text:
        root = str(Path(text).absolute())
        return Location(text, fsspec.filesystem("file"), root)
    protocol = text.split("://", 1)[0]
    try:
        fs, root = fsspec.core.url_to_fs(text)
    except ImportError:
        package = BACKENDS.get(protocol, f"the fsspec backend for {protocol}://")
        raise UserError(
            f"{text}: reading or writing {protocol}:// needs the {package} package "
            f"(pip install {package})"
        ) from None
    except ValueError as exc:
        raise UserError(f"{text}: {exc} (not a protocol fsspec knows)") from None
    return Location(text, fs, root.rstrip("/") or root)


# ----------------------------------------------------------------------------- arrays
@dataclass(frozen=True)
class ArraySpec:
    """One array of a split: shape, dtype, rows per chunk, dimension names, codec."""

    shape: tuple[int, ...]
    dtype: np.dtype
    rows: int
    dims: tuple[str, ...]
    codec: dict[str, Any]

    @property
    def chunks(self) -> tuple[int, ...]:
        return (self.rows, *self.shape[1:])

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def image_rows(frame_bytes: int, frames: int, block: int) -> int:
    """Trajectories per image chunk: the power of two nearest :data:`CHUNK_BYTES` of raw
    frames, at most :data:`MAX_ROWS_PER_CHUNK`, dividing the randomness ``block`` so that
    shards (whole blocks) own whole chunks."""
    rows = 1
    while (
        rows * 2 * frame_bytes * frames <= CHUNK_BYTES
        and rows * 2 <= MAX_ROWS_PER_CHUNK
        and block % (rows * 2) == 0
    ):
        rows *= 2
    return rows


def numcodec(config: dict[str, Any], typesize: int) -> numcodecs.Blosc:
    """The numcodecs Blosc object for a zarr v3 ``blosc`` codec configuration (a
    malformed one raises KeyError, TypeError or ValueError)."""
    if config.get("cname") not in numcodecs.blosc.list_compressors():
        raise ValueError(f"unknown Blosc compressor {config.get('cname')!r}")
    if not isinstance(config.get("clevel"), int) or not 0 <= config["clevel"] <= 9:
        raise ValueError(f"Blosc level {config.get('clevel')!r}")
    return numcodecs.Blosc(
        cname=config["cname"],
        clevel=config["clevel"],
        shuffle=_SHUFFLE[config["shuffle"]],
        blocksize=config.get("blocksize", 0),
        typesize=typesize,
    )


def create(loc: Location, meta: dict[str, Any], arrays: dict[str, ArraySpec]) -> bool:
    """Create the store: its root ``zarr.json`` exclusively, then the array metadata
    (no chunks). Returns False, writing nothing, when another job created the root
    first: the caller must then check that job's settings against its own (two jobs
    with different seeds on one ``--out`` once both wrote into one store)."""
    documents = _documents(meta, arrays)
    if loc.local:
        Path(loc.root).mkdir(parents=True, exist_ok=True)
    else:
        loc.fs.makedirs(loc.root, exist_ok=True)
    if not loc.create_json(json.loads(documents["zarr.json"].to_bytes()), "zarr.json"):
        return False
    write_arrays(loc, meta, arrays)
    return True


def write_arrays(loc: Location, meta: dict[str, Any], arrays: dict[str, ArraySpec]) -> None:
    """Write the group and array metadata below the root, each only where it is absent:
    a job that joins a store (a shard, or a rerun after its creator was killed before
    this) writes what is missing, and never rewrites a layout its chunks follow (an
    older hgn may have chunked the same settings differently)."""
    documents = _documents(meta, arrays)
    for key in sorted(k for k in documents if k != "zarr.json"):
        folder = posixpath.dirname(key)
        loc.fs.makedirs(loc.path(folder), exist_ok=True)
        loc.create_json(json.loads(documents[key].to_bytes()), key)


def _documents(meta: dict[str, Any], arrays: dict[str, ArraySpec]) -> dict[str, Any]:
    """Every ``zarr.json`` of the store, built by zarr in memory (fast: no event loop
    round trips per file). ``arrays`` is keyed by ``split/name``."""
    documents: dict[str, Any] = {}
    root = zarr.open_group(zarr.storage.MemoryStore(documents), mode="w", zarr_format=3)
    root.attrs.put({ATTRS: meta})
    for key, spec in arrays.items():
        split, name = key.split("/")
        root.require_group(split).create_array(
            name,
            shape=spec.shape,
            chunks=spec.chunks,
            dtype=spec.dtype,
            compressors=BloscCodec(typesize=spec.dtype.itemsize, **spec.codec),
            fill_value=0,
            dimension_names=spec.dims,
            chunk_key_encoding={"name": "default", "separator": SEPARATOR},
        )
    return documents


def chunk_key(index: int, ndim: int) -> str:
    return "c" + SEPARATOR + SEPARATOR.join([str(index)] + ["0"] * (ndim - 1))


class ChunkWriter:
    """Encodes and stores chunks on a small thread pool (Blosc releases the GIL), so
    compression and file writes overlap simulation and rendering; at most ``pending``
    chunks wait, which bounds memory."""

    def __init__(self, loc: Location, workers: int = 2, pending: int = 4) -> None:
        self.loc, self.pending_limit = loc, pending
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hgn-writer")
        self.pending: deque[Future] = deque()
        self.written = 0

    def put(
        self,
        array: str,
        spec: ArraySpec,
        index: int,
        data: np.ndarray | Callable[[], np.ndarray],
    ) -> Future:
        """Store chunk ``index`` of ``array`` (``split/name``). ``data`` holds the chunk's
        rows, or is a function that makes them on the worker thread (rendering then runs
        in parallel too: PyTorch releases the GIL). A short last chunk is padded with
        zeros to the chunk shape, as zarr wants. The caller must not change ``data``
        until the returned future is done."""
        path = self.loc.path(array, chunk_key(index, len(spec.shape)))
        codec = numcodec(spec.codec, spec.dtype.itemsize)
        future = self.pool.submit(self._store, path, codec, spec, data)
        self.pending.append(future)
        while len(self.pending) > self.pending_limit:
            self.pending.popleft().result()
        return future

    def _store(
        self,
        path: str,
        codec: numcodecs.Blosc,
        spec: ArraySpec,
        data: np.ndarray | Callable[[], np.ndarray],
    ) -> None:
        data = data() if callable(data) else data
        if data.shape[0] < spec.rows:
            padded = np.zeros(spec.chunks, spec.dtype)
            padded[: data.shape[0]] = data
            data = padded
        blob = codec.encode(np.ascontiguousarray(data))
        if self.loc.local:  # a plain write: half the CPU of fsspec's per-file machinery
            with open(path, "wb") as f:
                f.write(blob)
        else:
            self.loc.fs.pipe_file(path, blob)
        self.written += len(blob)

    def drain(self) -> None:
        """Wait for every chunk, raising the first error."""
        while self.pending:
            self.pending.popleft().result()

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)


class ChunkedArray:
    """One array of a store, read lazily: indexing the first (trajectory) axis with an
    int, a slice, an integer or boolean array fetches and decodes only the chunks that
    hold those rows, and returns a NumPy array, as indexing a NumPy array would.

    Whole chunks are decoded straight into the result; others go through a scratch
    buffer that is kept, so reading sequence after sequence of one chunk decodes it once.
    Not for use by several threads at once (each DataLoader worker process has its own).
    """

    def __init__(self, loc: Location, name: str, node: dict[str, Any]) -> None:
        self.loc, self.name = loc, name
        where = f"{loc.url}: array {name}"
        try:
            self.shape = tuple(int(x) for x in node["shape"])
            self.dtype = np.dtype(node["data_type"])
            grid = [int(x) for x in node["chunk_grid"]["configuration"]["chunk_shape"]]
            codecs = node["codecs"]
            separator = node["chunk_key_encoding"]["configuration"]["separator"]
            names = [c["name"] for c in codecs]
            self.codec = numcodec(codecs[1]["configuration"], self.dtype.itemsize)
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            raise UserError(f"{where} has unreadable zarr metadata ({exc!r})") from None
        if (
            names != ["bytes", "blosc"]
            or separator != SEPARATOR
            or len(grid) != len(self.shape)
            or list(grid[1:]) != list(self.shape[1:])
            or not grid[0] > 0
            or min(self.shape, default=0) < 0
            or self.dtype not in TORCH_DTYPES
        ):
            raise UserError(
                f"{where} is not laid out as hgn writes it (codecs {names}, chunks {grid}, "
                f"dtype {self.dtype}); rewrite it with hgn or read it with zarr"
            )
        self.rows = grid[0]
        self.ndim = len(self.shape)
        self._scratch: np.ndarray | None = None
        self._cached = -1

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ChunkedArray({self.name}, shape={self.shape}, dtype={self.dtype})"

    def __reduce__(self) -> tuple:
        node = self.loc.read_json(self.name, "zarr.json")
        return ChunkedArray, (self.loc, self.name, node)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read_rows(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, rest = split_key(key, len(self))
        if isinstance(rows, int):
            return self.read_rows(np.array([rows]))[0][rest]
        out = self.read_rows(rows)
        return out[(slice(None), *rest)] if rest else out

    def _chunk_path(self, index: int) -> str:
        return self.loc.path(self.name, chunk_key(index, self.ndim))

    def _fetch(self, indices: Iterable[int]) -> dict[int, bytes]:
        wanted = {self._chunk_path(i): i for i in indices}
        if not wanted:
            return {}
        try:
            found = self.loc.fs.cat(list(wanted), on_error="return")
        except OSError as exc:
            raise UserError(f"{self.loc.url}: cannot read {self.name} ({exc})") from None
        if not isinstance(found, dict):  # one path: fsspec returns its bytes
            found = {next(iter(wanted)): found}
        blobs = {}
        for path, index in wanted.items():
            blob = found.get(path)
            if not isinstance(blob, bytes | bytearray | memoryview):
                raise UserError(
                    f"dataset {self.loc.url} is damaged: chunk {index} of {self.name} is "
                    "missing or unreadable"
                )
            blobs[index] = blob
        return blobs

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (any order, repeats allowed) as one array."""
        rows = np.asarray(rows, np.int64)
        out = empty((len(rows), *self.shape[1:]), self.dtype)
        if not len(rows):
            return out
        chunk_of = rows // self.rows
        order = np.argsort(chunk_of, kind="stable")
        chunks, starts = np.unique(chunk_of[order], return_index=True)
        ends = np.append(starts[1:], len(rows))
        blobs = self._fetch(int(c) for c in chunks if c != self._cached)
        spans = list(zip(chunks.tolist(), starts.tolist(), ends.tolist(), strict=True))
        spans.sort(key=lambda span: span[0] != self._cached)  # the kept chunk first
        for chunk, a, b in spans:
            where = order[a:b]
            local = rows[where] - chunk * self.rows
            whole = (
                b - a == self.rows
                and (chunk + 1) * self.rows <= len(self)
                and where[-1] - where[0] == self.rows - 1
                and local[0] == 0
                and bool(np.all(np.diff(where) == 1))
                and bool(np.all(np.diff(local) == 1))
            )
            if whole and chunk != self._cached:
                self._decode(blobs[chunk], out[where[0] : where[0] + self.rows])
                continue
            if chunk != self._cached:
                if self._scratch is None:
                    self._scratch = empty((self.rows, *self.shape[1:]), self.dtype)
                self._cached = -1
                self._decode(blobs[chunk], self._scratch)
                self._cached = chunk
            out[where] = self._scratch[local]
        return out

    def _decode(self, blob: bytes, into: np.ndarray) -> None:
        try:
            self.codec.decode(blob, out=into)
        except (RuntimeError, ValueError) as exc:
            raise UserError(
                f"dataset {self.loc.url} is damaged: a chunk of {self.name} does not decode ({exc})"
            ) from None


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty`` without NumPy's transparent-huge-page advice. NumPy asks the kernel
    for huge pages on large arrays; where the kernel then compacts memory on the first
    touch (THP defrag "madvise", as on the development VM) that first touch costs
    3-4 ms per MB instead of 1, which made reading a split three times slower than
    decoding it. PyTorch's allocator gives no such advice."""
    return torch.empty(shape, dtype=TORCH_DTYPES[np.dtype(dtype)]).numpy()


TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}


def split_key(key: Any, n: int) -> tuple[int | np.ndarray, tuple]:
    """Split a NumPy index into its first-axis part (an int, or the row numbers it
    selects) and the rest, which applies to each row."""
    key = key if isinstance(key, tuple) else (key,)
    first, rest = (key[0], key[1:]) if key else (slice(None), ())
    if first is Ellipsis:
        first, rest = slice(None), key
    if isinstance(first, int | np.integer):
        row = int(first) + (n if first < 0 else 0)
        if not 0 <= row < n:
            raise IndexError(f"index {first} is out of bounds for {n} rows")
        return row, rest
    return np.arange(n)[first], rest


# ----------------------------------------------------------------------------- metadata


def read_meta(loc: Location) -> dict[str, Any]:
    """The hgn metadata of the store at ``loc``, checked (:func:`check_meta`); one line
    when it is none or malformed."""
    try:
        node = loc.read_json("zarr.json")
    except FileNotFoundError:
        raise UserError(f"{loc.url} is not an hgn dataset (no zarr.json)") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{loc.url}: zarr.json is unreadable or corrupt ({exc})") from None
    attributes = node.get("attributes") if isinstance(node, dict) else None
    meta = attributes.get(ATTRS) if isinstance(attributes, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{loc.url} is a zarr store but not an hgn dataset (format {FORMAT})")
    problem = meta_problem(meta)
    if problem:
        raise UserError(
            f"dataset {loc.url} has malformed metadata ({problem}); regenerate or re-import it"
        )
    return meta


def parts_done(loc: Location, count: int) -> set[int]:
    """Indices of the parts whose marker is there (read from the listing, so a huge
    ``count`` costs nothing)."""
    done = set()
    for name in loc.listing():
        match = PART_NAME.fullmatch(name)
        if match and int(match[2]) == count and int(match[1]) < count:
            done.add(int(match[1]))
    return done


def finish_part(loc: Location, meta: dict[str, Any], index: int, record: dict[str, Any]) -> bool:
    """Mark part ``index`` done; if every part now is, mark the store complete.

    Each part writes its marker only after all of its chunks; whichever part finds all
    markers present (the last one, or several racing, all writing the same bytes) sets
    ``complete``. Returns whether the store is complete."""
    count = meta["parts"]
    loc.write_json(record, PART.format(index=index, count=count))
    return complete_if_done(loc, meta)


def complete_if_done(loc: Location, meta: dict[str, Any]) -> bool:
    """Set ``complete`` if every part's marker is there; returns whether it is. Also what
    a rerun calls: a job killed between its marker and this write left a store whose
    parts are all done but which no reader accepts. A single part's marker may carry
    the content fingerprint of an import (known only once everything is written)."""
    count = meta["parts"]
    if len(parts_done(loc, count)) < count:
        return False
    finished = {**meta, "complete": True}
    if count == 1 and "fingerprint" not in finished:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            record = loc.read_json(PART.format(index=0, count=1))
            if isinstance(record.get("fingerprint"), str):
                finished["fingerprint"] = record["fingerprint"]
    node = loc.read_json("zarr.json")
    node.setdefault("attributes", {})[ATTRS] = finished
    loc.write_json(node, "zarr.json")
    return True


def fingerprint(meta: dict[str, Any]) -> str:
    """A content fingerprint of generated data: a hash of everything that determines
    its bytes (the settings and the seed, :func:`identity`). A run records it, so that
    ``--resume`` on another seed's data of the same system is refused."""
    text = json.dumps(identity(meta), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _entries(loc: Location, *parts: str) -> list[str]:
    """Names directly under ``parts`` (empty when it is not a folder)."""
    try:
        listed = loc.fs.ls(loc.path(*parts), detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in listed)


def _remove_if_empty(loc: Location, *parts: str) -> None:
    if loc.fs.isdir(loc.path(*parts)) and not _entries(loc, *parts):
        with contextlib.suppress(OSError):
            loc.fs.rmdir(loc.path(*parts))


def remove_dataset(loc: Location, meta: dict[str, Any] | None = None) -> None:
    """Delete what hgn wrote of the dataset at ``loc`` and nothing else: the metadata,
    the part markers, each array's chunks and metadata, pictures that still match the
    record of ``hgn data show``; a folder goes only once empty, so a user's
    ``train/my_labels.csv`` survives an ``--overwrite``. ``meta`` (the dataset's) names
    its per-trajectory value arrays."""
    values = (meta or {}).get("variant", {}).get("values", [])
    arrays = ["images", *STATES, *[v for v in values if VALUE_NAME.fullmatch(str(v))]]
    for split in SPLITS:
        for array in arrays:
            for name in _entries(loc, split, array):
                if name == "zarr.json" or name.startswith("c" + SEPARATOR):
                    loc.fs.rm_file(loc.path(split, array, name))
            _remove_if_empty(loc, split, array)
        if "zarr.json" in _entries(loc, split):
            loc.fs.rm_file(loc.path(split, "zarr.json"))
        _remove_if_empty(loc, split)
    for name in own_previews(loc):
        loc.fs.rm_file(loc.path(name))
    for name in loc.listing():
        if name in ("zarr.json", PREVIEWS) or PART_NAME.fullmatch(name):
            loc.fs.rm_file(loc.path(name))


def own_previews(loc: Location) -> list[str]:
    """The pictures in the dataset at ``loc`` that ``hgn data show`` wrote and nobody has
    changed since (their SHA-256 matches the record)."""
    try:
        record = loc.read_json(PREVIEWS)
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict):
        return []
    names = set(loc.listing())
    return [
        name for name, digest in record.items() if name in names and _sha256(loc, name) == digest
    ]


def _sha256(loc: Location, name: str) -> str | None:
    try:
        return hashlib.sha256(loc.fs.cat_file(loc.path(name))).hexdigest()
    except OSError:
        return None


def record_previews(loc: Location, paths: Iterable[Path]) -> None:
    """Add pictures just written into the dataset to its :data:`PREVIEWS` record."""
    try:
        record = loc.read_json(PREVIEWS)
    except (OSError, ValueError):
        record = {}
    record = record if isinstance(record, dict) else {}
    for path in paths:
        record[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    loc.write_json(record, PREVIEWS)


# ----------------------------------------------------------------------------- writing jobs
def identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What must match for two metas to describe the same data (the package version,
    how many parts wrote it, whether they are done, and the fingerprint derived from
    the rest need not)."""
    skip = ("version", "parts", "complete", "fingerprint")
    return {k: v for k, v in meta.items() if k not in skip}


def describe(meta: dict[str, Any]) -> str:
    return (
        f"{meta.get('system') or meta.get('source')}, {meta.get('n_train')}+"
        f"{meta.get('n_test')} trajectories, size {meta.get('size')}, seed {meta.get('seed')}"
    )


def begin(
    loc: Location,
    meta: dict[str, Any],
    arrays: dict[str, ArraySpec],
    part: tuple[int, int],
    created: bool,
) -> bool | None:
    """Get the store at ``loc`` ready for part ``part``, after :func:`prepare` said
    whether to create it (``created``): None when there is nothing to do, True when this
    job created it (and may discard it on failure), False when it adds to a store that
    exists. Creation is exclusive: of two jobs started together, the one that did not
    create the store checks its settings against the creator's, and is refused if they
    differ, before it writes anything.
    """
    if created and not create(loc, meta, arrays):
        created = prepare(loc, meta, part, overwrite=False)
    if created is False:
        write_arrays(loc, meta, arrays)
    return created


def prepare(
    loc: Location, meta: dict[str, Any], part: tuple[int, int], overwrite: bool
) -> bool | None:
    """Decide what to do at ``loc``: None when this part is already there (a no-op; a
    store whose parts are all done is marked complete first), True when the store must
    be created, False to add to the existing store.

    Refuses anything that is not an hgn dataset, and another hgn dataset unless
    ``overwrite`` (which then removes only what hgn wrote of it)."""
    if loc.local:
        check_local_out(Path(loc.root))
    names = loc.listing()
    if not names:
        return True
    if "zarr.json" not in names:
        if "meta.json" in names and overwrite:
            raise UserError(
                f"--out {loc.url} holds an hgn dataset in the old .npy format; remove it "
                "yourself or choose another --out (hgn does not delete a format it no "
                "longer writes)"
            )
        raise UserError(
            f"--out {loc.url} is not empty and holds no hgn dataset; refusing it (hgn "
            "never replaces files it did not write): choose a new or empty directory"
        )
    existing = read_meta(loc)
    if identity(existing) != identity(meta):
        if not overwrite:
            raise UserError(
                f"{loc.url} already holds a different dataset ({describe(existing)}); "
                "choose another --out or pass --overwrite"
            )
        remove_dataset(loc, existing)
        return True
    if existing.get("complete"):
        return None
    if existing["parts"] != meta["parts"]:
        if not overwrite:
            raise UserError(
                f"{loc.url} is being written in {existing['parts']} part(s), not "
                f"{meta['parts']}: use --shard I/{existing['parts']}, or --overwrite to "
                "start again"
            )
        remove_dataset(loc, existing)
        return True
    if part[0] in parts_done(loc, meta["parts"]):
        complete_if_done(loc, existing)
        return None
    return False


def check_local_out(root: Path) -> None:
    """Refuse a local ``--out`` that is a file, lies under a file, or cannot be written."""
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} exists and is not a directory")
    check_writable(root)


def discard(loc: Location, meta: dict[str, Any]) -> None:
    """Remove what an interrupted unsharded job wrote (it created the store). Called
    while another error propagates, so a failure here is a warning, not a new error."""
    try:
        remove_dataset(loc, meta)
        if loc.local and not any(Path(loc.root).iterdir()):
            Path(loc.root).rmdir()
    except OSError as exc:
        print(
            f"hgn: warning: could not remove the unfinished dataset at {loc.url} ({exc}); "
            "remove it yourself or rerun the same command to finish it",
            file=sys.stderr,
        )


def human(nbytes: float) -> str:
    """Bytes in the unit that reads best."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Treat SIGTERM (what cluster schedulers and ``kill`` send) like Ctrl-C while
    generating, so the job's own output is removed instead of left half-written."""
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


class FrameRing:
    """Reused frame buffers: a buffer is handed out again only once the chunk last
    written from it has been stored."""

    def __init__(self, count: int, shape: tuple[int, ...]) -> None:
        self.buffers = [empty(shape, np.uint8) for _ in range(count)]
        self.busy: list[Future | None] = [None] * count
        self.next = 0

    def take(self) -> tuple[int, np.ndarray]:
        slot = self.next
        self.next = (self.next + 1) % len(self.buffers)
        if self.busy[slot] is not None:
            self.busy[slot].result()
        return slot, self.buffers[slot]
