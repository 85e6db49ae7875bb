"""Small shared pieces: user-facing errors, atomic file writes, seeds, safe checkpoints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgn.errors import UserError  # defined where it needs no torch (the CLI's fast paths)

_UMASK = os.umask(0o022)
os.umask(_UMASK)
"""The process's umask, read once: files made by :func:`atomic_path` get the permissions
a plain ``open`` would give them, not ``mkstemp``'s owner-only 0600."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary file beside ``path``; rename it over ``path`` on success.

    Whatever the body writes at the yielded path appears at ``path`` in one rename, so
    a crash never leaves a half-written output that looks complete. The temporary file
    is created exclusively (``O_EXCL``) and kept until the rename: a name that is
    unlinked and reused could be taken by another writer in between. ``durable`` also
    fsyncs the file before the rename and the folder after it, so that a power cut
    leaves the old file or the new one (for checkpoints; pictures need not pay for it).
    Only files: hgn never replaces a directory this way (it could hold a user's files).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"directory {path.parent} does not exist; create it first")
    if path.is_dir():
        raise UserError(f"{path} is a directory; hgn replaces files only")
    # keep the suffix last: writers such as imageio pick the format from it
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
        )
    except OSError as exc:
        raise UserError(f"cannot write in {path.parent} ({exc.strerror})") from None
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        if tmp.is_file() or tmp.is_symlink():
            tmp.unlink()


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Remove the temporary files :func:`atomic_path` left beside ``path`` when a
    process writing it was killed (``kill -9`` runs no cleanup). Only for files with a
    single writer (a run's checkpoint), where no such file can belong to a live one."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as JSON atomically. NaN and infinity are refused rather than
    written as tokens that strict JSON readers reject."""
    return write_text(path, json.dumps(payload, indent=1, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike, fix: str = "delete it to have it made again") -> Any:
    """The JSON at ``path`` (one hgn wrote earlier), or one line saying it is damaged and
    how to ``fix`` it: a truncated record must not end a resumed command in a traceback."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable or truncated ({exc}); {fix}") from None


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
    remove_stale_temporaries(path)
    with atomic_path(path, durable=True) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; train first or check the path")
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise UserError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); "
            "delete it or restore it from a backup"
        ) from None
    problem = _checkpoint_problem(saved)
    if problem:
        raise UserError(f"{path} is not an hgn checkpoint ({problem}); check the path")
    return saved


def _checkpoint_problem(saved: Any) -> str | None:
    """What makes a weights-only-loadable object unlike the checkpoints hgn writes (a
    dict with a ``config`` dict, a ``state`` dict and an integer ``step`` if any), so
    that a plain tensor or a foreign file is one line rather than a KeyError later."""
    if not isinstance(saved, dict):
        return f"it holds a {type(saved).__name__}, not a dict"
    for key in ("config", "state"):
        if not isinstance(saved.get(key), dict):
            return f"no {key!r} dict"
    step = saved.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"step {step!r} is not a count"
    return None


def resolve_device(name: str) -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda[:i]' to a device, refusing CUDA when there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was requested but no CUDA GPU is available; use --device cpu"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None


def positive_int(value: Any, what: str, most: int | None = None) -> int:
    """Validate a strictly positive integer (at most ``most``, if given), naming the
    offending option in the error."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) > 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise UserError(f"{what} must be a positive integer, got {value!r}")
    if most is not None and int(value) > most:
        raise UserError(f"{what} must be at most {most}, got {value!r}")
    return int(value)


def available_memory() -> int:
    """Bytes of memory a command may still take: ``MemAvailable`` on Linux, else the
    physical memory. Size options are checked against it before the work starts, so
    that a huge count is one line instead of a process killed by the kernel."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as f:
            line = next(x for x in f if x.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """Refuse work whose estimated memory ``nbytes`` exceeds half of what is available
    (the rest is for the process itself and its neighbours), in one line saying
    ``what`` needs it and how to ``fix`` it."""
    free = available_memory()
    if nbytes > free / 2:
        raise UserError(
            f"{what} would need about {nbytes / 1e9:.3g} GB of memory, more than the "
            f"{free / 2e9:.3g} GB this machine can spare; {fix}"
        )


def max_threads() -> int:
    """The most CPU threads an option may ask for: the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    check_writable(path, option)
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
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot create it ({exc.strerror})") from None
    mark_output_dir(path, kind)
    return path


def check_writable(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse ``path`` (a directory to be written, existing or not) unless its nearest
    existing ancestor is a directory this process can create files in. Probed by
    creating and removing a temporary file: permission bits do not show read-only
    mounts or immutable folders, and finding out after hours of work is too late."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        raise UserError(
            f"{option} {path}: {existing} is a file, not a directory; choose another {option}"
        )
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".hgn-probe."):
            pass
    except OSError as exc:
        raise UserError(
            f"{option} {path}: cannot write in {existing} ({exc.strerror}); choose a "
            f"writable {option}"
        ) from None


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
