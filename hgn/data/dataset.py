"""Reading datasets: :func:`load` opens one split lazily, :class:`SequenceDataset` serves
whole sequences to a PyTorch ``DataLoader``, and the tensor helpers the trainer and the
evaluator share.

A split's arrays are :class:`hgn.data.store.ChunkedArray` views of the store (or
memory-maps of a dataset in the old ``.npy`` layout): nothing is read until indexed, and
indexing rows reads only the chunks that hold them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgn.data import legacy, store
from hgn.data.store import SPLITS, STATES, ChunkedArray
from hgn.physics.systems import System, get_system
from hgn.utils import UserError


class Split:
    """One split of a dataset: lazily readable arrays plus its metadata.

    ``images`` is ``(N, T+1, H, W, 3)`` uint8; ``q``, ``p``, ``q_noisy``, ``p_noisy`` are
    ``(N, T+1, dof)`` float32, or None for imported data (``meta["has_states"]`` is
    false); ``values`` holds the per-trajectory values of random variants (varied
    constants ``(N,)``, ``colours (N, bodies, 3)``, canvas ``shift (N, 2)``).
    """

    def __init__(self, path: str, meta: dict[str, Any], arrays: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.images = arrays["images"]
        self.q = arrays.get("q")
        self.p = arrays.get("p")
        self.q_noisy = arrays.get("q_noisy")
        self.p_noisy = arrays.get("p_noisy")
        self.values = {k: v for k, v in arrays.items() if k != "images" and k not in STATES}

    @property
    def has_states(self) -> bool:
        """Whether the true states are known (generated data) or not (imported)."""
        return self.q is not None

    def __len__(self) -> int:
        return self.meta["n"]

    def __reduce__(self) -> tuple:
        # pickled by path, so DataLoader workers reopen the store instead of receiving
        # a copy of the data
        return load, (self.path, self.meta["split"])

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"Split({m.get('system') or m.get('source')}, {m['split']}, n={m['n']}, "
            f"frames={m['steps'] + 1}, size={m['size']}, path={str(self.path)!r})"
        )


def load(path: str | os.PathLike, split: str = "train") -> Split:
    """Open one split of a dataset (a directory or an fsspec URL) lazily."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if "://" not in os.fspath(path) and legacy.is_legacy(Path(path)):
        meta, arrays = legacy.read(Path(path), split)
        meta = {**meta, "has_states": True}
    else:
        loc = store.locate(path)
        meta = info(path)
        names = ["images", *(STATES if meta.get("has_states", True) else ())]
        names += meta.get("variant", {}).get("values", [])
        arrays = {}
        n = meta["splits"][split]["n"]
        for name in names:
            node = _array_node(loc, split, name)
            arrays[name] = ChunkedArray(loc, f"{split}/{name}", node)
            _check_array(loc, arrays[name], expected_array(meta, n, name))
    split_meta = {k: v for k, v in meta.items() if k != "splits"}
    split_meta.update(meta["splits"][split], split=split)
    return Split(os.fspath(path), split_meta, arrays)


def expected_array(meta: dict[str, Any], n: int, name: str) -> tuple[tuple, tuple]:
    """The leading shape and the dtypes an array of a split must have by the metadata:
    frames (n, T+1, size, size, 3) uint8, states (n, T+1, dof) float32, per-trajectory
    values (n, ...) floats."""
    frames = meta["steps"] + 1
    if name == "images":
        return (n, frames, meta["size"], meta["size"], 3), (np.uint8,)
    if name in STATES:
        return (n, frames, meta["dof"]), (np.float32,)
    return (n,), (np.float32, np.float64)


def _check_array(loc: store.Location, array: ChunkedArray, want: tuple[tuple, tuple]) -> None:
    """Refuse an array whose dtype or shape disagrees with the metadata. An edited
    ``zarr.json`` saying float32 for the frames once made training read garbage
    (uninitialised memory included) until the loss was infinite."""
    shape, dtypes = want
    if array.dtype not in [np.dtype(d) for d in dtypes]:
        raise UserError(
            f"dataset {loc.url} is damaged: {array.name} is {array.dtype}, hgn stores "
            f"{' or '.join(np.dtype(d).name for d in dtypes)}"
        )
    if array.shape[: len(shape)] != shape or (len(shape) > 1 and array.shape != shape):
        raise UserError(
            f"dataset {loc.url} is damaged: {array.name} has shape {array.shape}, the "
            f"metadata says {shape}"
        )


def _array_node(loc: store.Location, split: str, name: str) -> dict[str, Any]:
    try:
        return loc.read_json(split, name, "zarr.json")
    except FileNotFoundError:
        raise UserError(f"dataset {loc.url} is damaged: {split}/{name} is missing") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"dataset {loc.url}: {split}/{name} is unreadable ({exc})") from None


def info(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a complete dataset, without opening its arrays."""
    if "://" not in os.fspath(path):
        where = Path(path)
        if not where.exists():
            raise UserError(f"no dataset at {where}")
        if legacy.is_legacy(where):
            return legacy.scan(where)[0]
    loc = store.locate(path)
    meta = store.read_meta(loc)
    if not meta.get("complete"):
        count = meta.get("parts", 1)
        done = store.parts_done(loc, count)
        missing = sorted(set(range(count)) - done)
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        if not missing:
            raise UserError(
                f"dataset {loc.url} is incomplete: all {count} part(s) are written but a "
                "job stopped before marking it complete; rerun the same command (any "
                "shard's) to finish it"
            )
        if count == 1:
            raise UserError(
                f"dataset {loc.url} is incomplete: its generation was interrupted or is "
                "still running; rerun the same command to finish it"
            )
        raise UserError(
            f"dataset {loc.url} is incomplete: {len(done)} of {count} shards are done; "
            f"missing {shown} (still running, or rerun them with --shard I/{count})"
        )
    return meta


def system_of(meta: dict[str, Any]) -> System:
    """The simulator of a generated dataset, as it was configured (constants, noise,
    picture style, variant); bind a split's ``values`` to it for per-trajectory ones."""
    if not meta.get("system"):
        raise UserError(f"this dataset was imported ({meta.get('source')}): it has no simulator")
    variant = meta.get("variant", {})
    return get_system(
        meta["system"],
        noise=meta["noise"],
        style=variant.get("style", "paper"),
        vary={k: tuple(v) for k, v in variant.get("vary", {}).items()},
        random_colours=variant.get("random_colours", False),
        **meta["constants"],
    )


class SequenceDataset(torch.utils.data.Dataset):
    """Whole sequences for training: item ``i`` is ``(T+1, 3, H, W)`` float32 in [0, 1].

    Indexing decodes the chunk that holds the sequence (and keeps it, so that reading
    the sequences of a chunk in order decodes it once).
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


def to_frames(images: torch.Tensor | np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 ``(..., T, H, W, 3)`` → float ``(..., T, 3, H, W)`` in [0, 1] on ``device``
    (converted after the copy, which moves a quarter of the bytes)."""
    images = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
    return images.to(device, non_blocking=True).movedim(-1, -3).float().div_(255.0)


def mean_frame(split: Split, limit: int = 1000) -> torch.Tensor:
    """The average frame ``(3, H, W)`` of (the first ``limit`` sequences of) a split."""
    images = np.asarray(split.images[: min(limit, len(split))], dtype=np.float64)
    return torch.from_numpy(images.mean((0, 1)) / 255.0).float().permute(2, 0, 1)
