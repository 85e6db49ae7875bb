"""Reading datasets in the first, ``.npy`` layout (hgn before the zarr store), so that
data generated earlier keeps working; nothing writes this layout any more.

Layout::

    DIR/meta.json                 the metadata (``format: 1``)
    DIR/{train,test}/images.npy   (N, T+1, H, W, 3) uint8
    DIR/{train,test}/q.npy, p.npy, q_noisy.npy, p_noisy.npy   (N, T+1, dof) float32

or a directory of complete shards ``DIR/shard-IIII-of-NNNN/`` in that layout, read
together as one dataset. Arrays are memory-mapped after each header and file length is
checked against the metadata, so a truncated copy is refused with one line.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hgn.data.store import SPLITS, STATES, split_key
from hgn.utils import UserError

FORMAT = 1
META = "meta.json"
ARRAYS = ("images", *STATES)


def is_legacy(path: Path) -> bool:
    """Whether ``path`` is a directory in the ``.npy`` layout (or of its shards)."""
    return path.is_dir() and ((path / META).exists() or bool(_shard_dirs(path)))


class ConcatRows:
    """Read-only concatenation of arrays along the first axis, indexed lazily: each
    index touches only the shards that hold the rows asked for."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts]).tolist()
        self.shape = (self.starts[-1], *parts[0].shape[1:])
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, rest = split_key(key, len(self))
        if isinstance(rows, int):
            part = bisect.bisect_right(self.starts, rows) - 1
            return np.asarray(self.parts[part][(rows - self.starts[part], *rest)])
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


def read(path: Path, split: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merged metadata of a ``.npy`` dataset and its arrays of ``split``."""
    meta, parts = scan(path)
    arrays: dict[str, Any] = {}
    for name in ARRAYS:
        opened = [_open_npy(part, part_meta, split, name) for part, part_meta in parts]
        arrays[name] = opened[0] if len(opened) == 1 else ConcatRows(opened)
    return meta, arrays


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
    return sorted(p for p in root.glob("shard-*-of-*") if p.is_dir())


def _same(meta: dict[str, Any]) -> dict[str, Any]:
    """What all shards of one generation share."""
    same = {k: v for k, v in meta.items() if k not in ("version", "splits", "shard")}
    same["shards"] = (meta.get("shard") or {}).get("count")
    return same


def scan(path: Path) -> tuple[dict[str, Any], list[tuple[Path, dict[str, Any]]]]:
    """The dataset's metadata and its parts: itself, or its shards in index order."""
    if (path / META).exists() or not _shard_dirs(path):
        meta = _read_meta(path)
        return meta, [(path, meta)]
    parts = [(p, _read_meta(p)) for p in _shard_dirs(path)]
    first = parts[0][1]
    count = (first.get("shard") or {}).get("count")
    for folder, meta in parts:
        if count is None or _same(meta) != _same(first):
            raise UserError(f"{folder} is not a shard of the same dataset as {parts[0][0]}")
    have = {m["shard"]["index"] for _, m in parts}
    missing = sorted(set(range(count)) - have)
    if missing:
        raise UserError(f"{path} holds {len(have)} of {count} shards; missing {missing[:10]}")
    merged = {**first, "shard": None, "splits": {}}
    for split in SPLITS:
        spans = [m["splits"][split] for _, m in parts]
        if any(a["stop"] != b["start"] for a, b in itertools.pairwise(spans)):
            raise UserError(f"the shards in {path} do not tile the {split} split")
        merged["splits"][split] = {"start": 0, "stop": spans[-1]["stop"], "n": spans[-1]["stop"]}
    return merged, parts


def _shape(meta: dict[str, Any], split: str, name: str) -> tuple[int, ...]:
    n, frames = meta["splits"][split]["n"], meta["steps"] + 1
    if name == "images":
        return (n, frames, meta["size"], meta["size"], 3)
    return (n, frames, meta["dof"])


def _open_npy(folder: Path, meta: dict[str, Any], split: str, name: str) -> np.ndarray:
    """Memory-map one array after checking its header and length against the meta."""
    file = folder / split / f"{name}.npy"
    shape = _shape(meta, split, name)
    dtype = np.dtype(np.uint8 if name == "images" else np.float32)
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
    if length != offset + math.prod(shape) * dtype.itemsize:
        raise UserError(f"{damaged} is truncated ({length} bytes)")
    if shape[0] == 0:
        return np.empty(shape, dtype)
    return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape)
