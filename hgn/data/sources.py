"""Importing your own image sequences as an hgn dataset (``hgn data import``).

Sources:

- an array file, ``.npy`` / ``.npz``, of shape (N, T, H, W, C) or (N, T, C, H, W), uint8
  or floats in [0, 1], C = 1 or 3 (an ``.npz`` holds one array, or one named ``images``
  or ``frames``); read through a memory-map, chunk by chunk;
- a folder of sequences: one sub-folder per sequence holding image frames (PNG, JPEG,
  ...), taken in name order; or a folder of frames that is one long sequence;
- videos (MP4, AVI, MOV, MKV, WebM, GIF ...): a file, or a folder with one per sequence,
  decoded with PyAV through imageio (GIF with Pillow).

Every sequence is centre-cropped to a square (with a notice) and resampled to
``size``×``size`` by area averaging (bilinear when enlarging); grayscale becomes RGB.
With ``frames`` the sequences are cut into windows of that many frames every ``stride``
frames; without it, all sequences must have the same length. The windows are split into
train and test by a seeded permutation. The dataset has no states (``has_states:
false``), so the metrics that need them are skipped downstream.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hgn import __version__
from hgn.data import metadata, store
from hgn.data.generation import SIZES
from hgn.data.store import SPLITS, ArraySpec
from hgn.plots import require_video
from hgn.utils import UserError, numpy_rng, positive_int

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
ARRAY_SUFFIXES = (".npy", ".npz")
DEFAULT_DT = 0.125
"""Time between frames recorded when a source has no frame rate and ``--dt`` is not
given: the paper's, which the models' defaults are tuned for."""
CHUNK_PIXELS = 1 << 24
"""Source pixels resampled per batch (bounds memory)."""

Report = Callable[[str], None]


@dataclass
class Sequences:
    """What a source holds: per sequence its length and a way to read frames."""

    kind: str
    path: Path
    names: list[str]
    lengths: list[int]
    read: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    """``(sequence ids, start frames, window length) -> (n, frames, H, W, C)`` raw."""
    shape: tuple[int, int, int]
    """(H, W, C) of the source frames."""
    fps: float | None = None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- sources
def open_source(source: str | os.PathLike) -> Sequences:
    """Recognise ``source`` and open it; one line naming the file for any problem."""
    path = check_source(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in ARRAY_SUFFIXES:
            return _array_source(path)
        if suffix in VIDEO_SUFFIXES:
            return _in_memory("video", path, [path], _read_video)
        raise UserError(
            f"{path}: not a source hgn can import (arrays {', '.join(ARRAY_SUFFIXES)}; "
            f"videos {', '.join(VIDEO_SUFFIXES)}; or a folder)"
        )
    try:
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise UserError(f"{path}: cannot list it ({exc.strerror})") from None
    folders = [p for p in entries if p.is_dir()]
    videos = [p for p in entries if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if folders:
        return _in_memory("frames", path, folders, _read_frames)
    if videos:
        return _in_memory("videos", path, videos, _read_video)
    if images:
        return _in_memory("frames", path, [path], _read_frames)
    raise UserError(f"{path}: empty folder (no sub-folders of frames, images or videos)")


def check_source(source: str | os.PathLike) -> Path:
    """``source`` as a path that exists, or one line: missing, a symlink loop, no
    permission (``Path.resolve`` raises RuntimeError on a loop, so this comes first)."""
    path = Path(source)
    try:
        path.stat()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file or folder") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot open it ({exc.strerror})") from None
    return path


def _array_source(path: Path) -> Sequences:
    """A memory-mapped ``.npy`` (or an ``.npz`` member) in either layout."""
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, mmap_mode="r")
        else:
            with np.load(path) as archive:
                keys = list(archive.keys())
                key = next((k for k in ("images", "frames") if k in keys), None)
                if key is None and len(keys) == 1:
                    key = keys[0]
                if key is None:
                    raise UserError(f"{path}: holds arrays {keys}; name the one to import 'images'")
                array = archive[key]
    except UserError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: unreadable or truncated array file ({exc})") from None
    if array.ndim != 5:
        raise UserError(
            f"{path}: an array of shape {array.shape} (rank {array.ndim}); expected rank 5, "
            "(N, T, H, W, C) or (N, T, C, H, W) with C = 1 or 3"
        )
    if array.shape[-1] in (1, 3):
        channels_last = True
    elif array.shape[2] in (1, 3):
        channels_last = False
    else:
        raise UserError(f"{path}: shape {array.shape} has no colour axis of 1 or 3 (last or third)")
    if min(array.shape) == 0:
        raise UserError(f"{path}: an empty array of shape {array.shape}; nothing to import")
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise UserError(f"{path}: dtype {array.dtype}; expected uint8 or floats in [0, 1]")
    n, t = array.shape[:2]
    shape = array.shape[2:] if channels_last else (*array.shape[3:], array.shape[2])

    def read(seqs: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        unique, inverse = np.unique(seqs, return_inverse=True)
        rows = np.asarray(array[unique])
        if not channels_last:
            rows = np.moveaxis(rows, 2, -1)
        return rows[inverse[:, None], starts[:, None] + np.arange(length)]

    if array.dtype != np.uint8:
        _check_floats(array, path)
    return Sequences("array", path, [str(i) for i in range(n)], [t] * n, read, tuple(shape))


def _check_floats(array: np.ndarray, path: Path) -> None:
    """Refuse NaN, Inf and values outside [0, 1] before anything is written: one pass
    over the (memory-mapped) array, a batch of sequences at a time."""
    step = max(1, CHUNK_PIXELS // max(1, math.prod(array.shape[1:])))
    for lo in range(0, len(array), step):
        window = np.asarray(array[lo : lo + step])
        bad = ~np.isfinite(window) | (window < 0) | (window > 1)
        if bad.any():
            first = lo + int(np.nonzero(bad.reshape(len(window), -1).any(1))[0][0])
            raise UserError(
                f"{path}: float frames must be finite and in [0, 1]; found "
                f"{_describe_bad(window[bad])} (sequence {first})"
            )


def _describe_bad(values: np.ndarray) -> str:
    if np.isnan(values).any():
        return "NaN"
    if np.isinf(values).any():
        return "Inf"
    return f"values from {values.min():g} to {values.max():g}"


def _in_memory(
    kind: str, root: Path, items: list[Path], reader: Callable[[Path], tuple[np.ndarray, Any]]
) -> Sequences:
    """Decode every sequence (frames or video) into memory at source resolution."""
    seqs: list[np.ndarray] = []
    fps = None
    for item in tqdm(items, desc="reading", unit="seq", disable=len(items) < 20):
        frames, rate = reader(item)
        if seqs and frames.shape[1:] != seqs[0].shape[1:]:
            raise UserError(
                f"{item}: frames of {frames.shape[2]}×{frames.shape[1]}×{frames.shape[3]} "
                f"while {items[0]} has {seqs[0].shape[2]}×{seqs[0].shape[1]}×"
                f"{seqs[0].shape[3]}; all sequences must share one frame size"
            )
        seqs.append(frames)
        fps = fps or rate
    offsets = np.cumsum([0] + [len(s) for s in seqs])
    frames = np.concatenate(seqs)

    def read(ids: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        return frames[(offsets[ids] + starts)[:, None] + np.arange(length)]

    names = [str(item) for item in items]
    return Sequences(kind, root, names, [len(s) for s in seqs], read, frames.shape[1:], fps)


def _as_hwc(image: np.ndarray, where: Path) -> np.ndarray:
    """A frame as (H, W, C) with C = 1 or 3 (alpha dropped)."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4) or min(image.shape) == 0:
        raise UserError(f"{where}: an image of shape {image.shape}; expected gray or RGB")
    return image[..., :1] if image.shape[-1] == 2 else image[..., :3]


def _read_frames(folder: Path) -> tuple[np.ndarray, None]:
    import imageio.v3 as iio

    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise UserError(f"{folder}: empty folder (no image frames)")
    frames = []
    for file in files:
        try:
            image = iio.imread(file)
        except Exception as exc:  # imageio raises many types for damaged files
            raise UserError(f"{file}: unreadable or truncated image ({exc})") from None
        image = _as_hwc(np.asarray(image), file)
        if frames and image.shape != frames[0].shape:
            raise UserError(
                f"{file}: {image.shape[1]}×{image.shape[0]} frame in a sequence of "
                f"{frames[0].shape[1]}×{frames[0].shape[0]} frames (mixed frame sizes)"
            )
        frames.append(image)
    return _to_uint8(np.stack(frames), folder), None


def _to_uint8(frames: np.ndarray, where: Path) -> np.ndarray:
    if frames.dtype == np.uint8:
        return frames
    if frames.dtype == np.uint16:
        return (frames >> 8).astype(np.uint8)
    raise UserError(f"{where}: frames of type {frames.dtype}; expected 8- or 16-bit images")


def _read_video(file: Path) -> tuple[np.ndarray, float | None]:
    import imageio.v3 as iio

    plugin = "pillow" if file.suffix.lower() == ".gif" else "pyav"
    if plugin == "pyav":
        require_video(file, "read")
    try:
        meta = iio.immeta(file, plugin=plugin)
        frames = np.stack([_as_hwc(np.asarray(f), file) for f in iio.imiter(file, plugin=plugin)])
    except UserError:
        raise
    except Exception as exc:  # PyAV and Pillow raise many types for damaged files
        raise UserError(f"{file}: unreadable or truncated video ({exc})") from None
    fps = meta.get("fps")
    if fps is None and meta.get("duration"):
        fps = 1000.0 / float(meta["duration"])  # GIF: milliseconds per frame
    return _to_uint8(frames, file), float(fps) if fps else None


# ----------------------------------------------------------------------------- pictures
def resample(frames: np.ndarray, size: int) -> np.ndarray:
    """``(n, H, W, C)`` uint8 or [0, 1] floats → ``(n, size, size, 3)`` uint8: centre
    crop to a square, area averaging (bilinear when enlarging), gray → RGB. A batch is
    one tensor operation."""
    _n, h, w, c = frames.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    frames = frames[:, top : top + side, left : left + side]
    if side == size and frames.dtype == np.uint8:
        out = frames
    else:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        x = x.float() / 255.0 if frames.dtype == np.uint8 else x.float()
        mode = "area" if side >= size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode)
        out = (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.repeat(out, 3, axis=-1) if c == 1 else np.ascontiguousarray(out)


def _windows(
    src: Sequences, frames: int | None, stride: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """(sequence id, start) of every window, and the window length."""
    lengths = np.array(src.lengths)
    short = np.nonzero(lengths < 2)[0]
    if len(short):
        raise UserError(
            f"{src.names[short[0]]}: a sequence of {lengths[short[0]]} frame(s); "
            "sequences need at least 2"
        )
    if frames is None:
        if len(set(src.lengths)) > 1:
            a, b = int(np.argmin(lengths)), int(np.argmax(lengths))
            raise UserError(
                f"{src.path}: sequences have different lengths ({src.names[a]}: "
                f"{lengths[a]}, {src.names[b]}: {lengths[b]}); give --frames to cut "
                "windows of one length"
            )
        return np.arange(len(lengths)), np.zeros(len(lengths), np.int64), int(lengths[0])
    if frames < 2:
        raise UserError(f"--frames must be at least 2, got {frames}")
    stride = frames if stride is None else positive_int(stride, "--stride")
    counts = np.maximum(0, (lengths - frames) // stride + 1)
    if counts.sum() == 0:
        raise UserError(
            f"{src.path}: no sequence has {frames} frames (the longest has {lengths.max()})"
        )
    ids = np.repeat(np.arange(len(lengths)), counts)
    first = np.cumsum(counts) - counts
    starts = (np.arange(counts.sum()) - np.repeat(first, counts)) * stride
    return ids, starts, frames


def import_sequences(
    source: str | os.PathLike,
    out: str | os.PathLike,
    size: int | None = None,
    test_fraction: float = 0.1,
    frames: int | None = None,
    stride: int | None = None,
    dt: float | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    report: Report | None = None,
) -> str:
    """Import ``source`` (see the module docstring) as a dataset at ``out``; returns
    where it is. ``size`` defaults to the largest model size that is not larger than
    the source frames. ``report`` receives notices (cropping, defaults, size on disk)."""
    say = report or (lambda line: None)
    frames, stride = _check_options(size, test_fraction, frames, stride, dt)
    loc = store.locate(out)
    if loc.local and Path(loc.root).resolve() == check_source(source).resolve():
        raise UserError("--out must not be the source itself")
    src = open_source(source)
    ids, starts, length = _windows(src, frames, stride)
    size, dt = _size_and_dt(src, size, dt, say)
    rows = _split(src, len(ids), test_fraction, seed)
    window = {"frames": frames, "stride": stride, "test_fraction": float(test_fraction)}
    meta = _import_meta(src, rows, window, length, size, float(dt), int(seed))
    specs = _image_specs(rows, length, size)
    created = store.prepare(loc, meta, (0, 1), overwrite)
    if created is None:
        return loc.url
    raw = sum(s.nbytes for s in specs.values())
    say(
        f"{loc.url}: {len(ids)} sequences of {length} frames, {store.human(raw)} before compression"
    )
    created = store.begin(loc, meta, specs, (0, 1), created)
    if created is None:
        return loc.url
    try:
        with store.terminate_cleanly():
            digest = _write(loc, src, specs, rows, ids, starts, length, size, progress)
    except BaseException:
        if created:
            store.discard(loc, meta)
        raise
    record = {"index": 0, "count": 1, "version": __version__, "fingerprint": digest}
    store.finish_part(loc, {**meta, "fingerprint": digest}, 0, record)
    return loc.url


def _check_options(
    size: int | None,
    test_fraction: float,
    frames: int | None,
    stride: int | None,
    dt: float | None,
) -> tuple[int | None, int | None]:
    """Refuse a bad option before the source is opened (a video can take a while to
    read); returns ``frames`` and ``stride`` as checked integers."""
    if not 0.0 < float(test_fraction) < 1.0 or not math.isfinite(float(test_fraction)):
        raise UserError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    if frames is not None:
        frames = positive_int(frames, "--frames", most=metadata.MAX_FRAMES)
    if stride is not None:
        stride = positive_int(stride, "--stride", most=metadata.MAX_FRAMES)
    if stride is not None and frames is None:
        raise UserError("--stride needs --frames (the window length)")
    if dt is not None and (not math.isfinite(float(dt)) or float(dt) <= 0):
        raise UserError(f"--dt must be a positive number, got {dt}")
    if size is not None and size not in SIZES:
        raise UserError(
            f"--size must be one of {', '.join(map(str, SIZES))} (the image sizes the "
            f"models take), got {size!r}"
        )
    return frames, stride


def _size_and_dt(
    src: Sequences, size: int | None, dt: float | None, say: Report
) -> tuple[int, float]:
    """The image size and time step, each the user's or derived from the source; a
    derived value (and a crop of non-square frames) is reported, since the user did not
    choose it."""
    h, w, _ = src.shape
    if size is None:
        fitting = [s for s in SIZES if s <= min(h, w)]
        size = fitting[-1] if fitting else SIZES[0]
        say(f"--size not given: {size}×{size} (the largest model size within the frames)")
    if h != w:
        say(f"{src.path}: frames are {w}×{h}; centre-cropped to {min(h, w)}×{min(h, w)}")
    if dt is None:
        dt = 1.0 / src.fps if src.fps else DEFAULT_DT
        why = f"1/fps of the video ({src.fps:g} fps)" if src.fps else "the paper's"
        say(f"--dt not given: recorded {dt:g} ({why})")
    return size, dt


def _split(src: Sequences, n: int, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """The windows of each split, shuffled by ``seed``: at least one test window, however
    small the fraction, so that every imported dataset can be evaluated."""
    n_test = max(1, round(n * float(test_fraction)))
    if n_test < 1 or n - n_test < 1:
        raise UserError(
            f"{src.path}: {n} sequence(s) cannot be split into train and test with "
            f"--test-fraction {test_fraction}; give more sequences or use --frames"
        )
    order = numpy_rng(seed, "import-split").permutation(n)
    return {"train": order[: n - n_test], "test": order[n - n_test :]}


def _import_meta(
    src: Sequences,
    rows: dict[str, np.ndarray],
    window: dict[str, Any],
    length: int,
    size: int,
    dt: float,
    seed: int,
) -> dict[str, Any]:
    """The dataset's metadata, in the form of a generated one's, with nothing known of
    the physics (no system, constants, states or bodies): the models read only the
    pictures and ``dt``; ``window`` records how the sequences were cut."""
    return {
        "format": store.FORMAT,
        "version": __version__,
        "source": f"imported {src.kind}",
        "imported_from": str(src.path),
        "system": None,
        "constants": {},
        "noise": None,
        "dt": dt,
        "steps": length - 1,
        "seed": seed,
        "size": size,
        "dof": None,
        "bodies": None,
        "has_states": False,
        "n_train": len(rows["train"]),
        "n_test": len(rows["test"]),
        "import": window,
        "splits": {name: {"n": len(r)} for name, r in rows.items()},
        "parts": 1,
        "complete": False,
    }


def _image_specs(rows: dict[str, np.ndarray], length: int, size: int) -> dict[str, ArraySpec]:
    """Each split's one array, its pictures (an import has no states), in chunks of
    about a megabyte."""
    chunk_rows = store.image_rows(size * size * 3, length, 1 << 20)
    return {
        f"{split}/images": ArraySpec(
            (len(rows[split]), length, size, size, 3),
            np.dtype(np.uint8),
            chunk_rows,
            ("trajectory", "time", "y", "x", "rgb"),
            store.IMAGE_CODEC,
        )
        for split in SPLITS
    }


def _write(
    loc: store.Location,
    src: Sequences,
    specs: dict[str, ArraySpec],
    rows: dict[str, np.ndarray],
    ids: np.ndarray,
    starts: np.ndarray,
    length: int,
    size: int,
    progress: bool,
) -> str:
    """Resample and store every split's windows, one chunk at a time; returns the
    content fingerprint (a hash of every stored frame, in order), which identifies the
    imported data in the runs trained on it."""
    digest = hashlib.sha256()
    writer = store.ChunkWriter(loc)
    spec = specs["train/images"]
    ring = store.FrameRing(writer.pending_limit + 3, spec.chunks)
    per_batch = max(1, CHUNK_PIXELS // max(1, length * math.prod(src.shape)))
    try:
        total = sum(len(r) for r in rows.values())
        with tqdm(total=total, unit="seq", desc="import", disable=not progress) as bar:
            for split in SPLITS:
                for chunk, first in enumerate(range(0, len(rows[split]), spec.rows)):
                    picked = rows[split][first : first + spec.rows]
                    slot, buffer = ring.take()
                    view = buffer[: len(picked)]
                    for lo in _batches(len(picked), per_batch):
                        part = picked[lo]
                        raw = src.read(ids[part], starts[part], length)
                        drawn = resample(raw.reshape(-1, *raw.shape[2:]), size)
                        view[lo] = drawn.reshape(len(part), length, size, size, 3)
                    digest.update(view.tobytes())
                    ring.busy[slot] = writer.put(f"{split}/images", spec, chunk, view)
                    bar.update(len(picked))
        writer.drain()
    finally:
        writer.close()
    return digest.hexdigest()[:32]


def _batches(n: int, step: int) -> Iterator[slice]:
    for lo in range(0, n, step):
        yield slice(lo, min(lo + step, n))
