"""Small shared pieces: user-facing errors, atomic file writes, seeds, safe checkpoints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgn.errors import UserError  # defined where it needs no torch (the CLI's fast paths)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    Works for files and directories alike: whatever the body writes at the yielded path
    appears at ``path`` in one rename, so a crash never leaves a half-written output
    that looks complete.
    """
    path = Path(path)
    if not path.parent.exists():
        raise UserError(f"directory {path.parent} does not exist; create it first")
    # keep the suffix last: writers such as imageio pick the format from it
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as JSON atomically. NaN and infinity are refused rather than
    written as tokens that strict JSON readers reject."""
    return write_text(path, json.dumps(payload, indent=1, allow_nan=False) + "\n")


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from ``parts``: independent streams for (seed, split, step...)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def numpy_rng(*parts: int | str) -> np.random.Generator:
    """A NumPy generator whose stream is fixed by ``parts`` (see :func:`derive_seed`)."""
    return np.random.default_rng(derive_seed(*parts))


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically. ``payload`` must hold only tensors, numbers,
    strings, lists and dicts, so that :func:`load_checkpoint` can read it without pickle."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; train first or check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise UserError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); "
            "delete it or restore it from a backup"
        ) from None


def resolve_device(name: str) -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda[:i]' to a device, refusing CUDA when there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was requested but no CUDA GPU is available; use --device cpu"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None


def positive_int(value: Any, what: str) -> int:
    """Validate a strictly positive integer, naming the offending option in the error."""
    if isinstance(value, bool) or int(value) != value or int(value) <= 0:
        raise UserError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


OUTPUT_MARKER = ".hgn-output.json"
"""A file every hgn command drops into the output directory it creates; it names what
wrote the directory, so a later command knows which directories it may write into."""


def check_output_dir(path: str | os.PathLike, kind: str, option: str = "--out") -> Path:
    """Refuse ``path`` now if :func:`claim_output_dir` would; create and write nothing.

    Commands call this before their long work, so that a bad ``--out`` fails at once,
    and claim the directory only when they have something to write.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a directory; choose another {option}")
    if path.is_dir() and any(path.iterdir()):
        owner = _marker_kind(path / OUTPUT_MARKER)
        if owner != kind:
            what = (
                f"holds the output of `hgn {owner}`" if owner else "holds files hgn did not write"
            )
            raise UserError(
                f"{option} {path} {what}; choose a new or empty directory for `hgn {kind}` "
                "(hgn never replaces files it did not write)"
            )
    return path


def claim_output_dir(path: str | os.PathLike, kind: str, option: str = "--out") -> Path:
    """Make ``path`` a directory that a command of ``kind`` may write into, or refuse.

    hgn never deletes or replaces anything it did not write. A missing directory is
    created (with its parents) and marked as ``kind``'s; an empty one is marked; a
    directory already marked by ``kind`` is accepted (the command then replaces only its
    own files, atomically). Anything else, a user's folder, a training run given to
    ``evaluate``, is refused with one line naming ``option``.
    """
    path = check_output_dir(path, kind, option)
    marker = path / OUTPUT_MARKER
    if _marker_kind(marker) == kind:
        return path
    path.mkdir(parents=True, exist_ok=True)
    mark_output_dir(path, kind)
    return path


def mark_output_dir(path: str | os.PathLike, kind: str) -> None:
    """Record in ``path`` that ``kind`` wrote it. Only for directories known to be that
    command's own, e.g. a training run written before hgn left markers."""
    with atomic_path(Path(path) / OUTPUT_MARKER) as tmp:
        tmp.write_text(json.dumps({"written_by": f"hgn {kind}"}) + "\n")


def check_output_file(
    path: str | os.PathLike, overwrite: bool = False, option: str = "--out"
) -> Path:
    """Refuse to write the single file ``path`` over anything that exists, unless the
    user said ``--overwrite``; never over a directory.

    A picture or an animation carries no record of who wrote it, so hgn cannot tell its
    own earlier output from a user's file of the same name: replacing one needs the
    user's explicit word. The parent directory must exist (a typo there is not created).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise UserError(
            f"{option} {path} already exists; pass --overwrite to replace it or choose "
            "another name (hgn never replaces files without being told)"
        )
    return path


def _marker_kind(marker: Path) -> str | None:
    """The command kind recorded in an output marker, or None if absent or unreadable."""
    try:
        written_by = json.loads(marker.read_text())["written_by"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return written_by.removeprefix("hgn ") if isinstance(written_by, str) else None
