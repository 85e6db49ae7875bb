"""Running a reproduction: claim the results directory, generate (or reuse) the
datasets, run the cells that are not finished (one at a time or ``jobs`` processes at
once), and rebuild the report from every finished cell.

Rerunning the same command resumes where it stopped: finished cells are kept, an
interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hgn.data import legacy
from hgn.experiments.reproduce import cells, report
from hgn.experiments.reproduce.profiles import (
    LONG_MODELS,
    MODEL_ORDER,
    REGIMES,
    ROWS,
    SYSTEM_ORDER,
    Profile,
    choose,
    get_profile,
)
from hgn.utils import (
    OUTPUT_MARKER,
    UserError,
    claim_output_dir,
    positive_int,
    resolve_device,
    write_json,
)

KIND = "reproduce"
"""The command that owns a results directory (the output marker's ``written_by``)."""

PROFILE_FILE = "profile.json"
"""The profile a results directory was made with; cells are only added under the same."""


def _claim(out: Path, profile: Profile) -> None:
    """Make ``out`` a results directory of ``profile``, or refuse it with one line.

    ``out`` must be new, empty, or a results directory of ``hgn reproduce`` (the shared
    guard, :func:`hgn.utils.claim_output_dir`): a user's folder is never written into. A
    results directory of another profile (or of the same name with different settings,
    e.g. after an upgrade) is refused too: mixing them would put numbers from different
    budgets in one table. A results directory written before the guard existed (it has
    ``profile.json`` but no marker) is adopted when its profile matches.
    """
    saved_path = out / PROFILE_FILE
    saved = None
    if out.is_dir() and saved_path.is_file():
        try:
            saved = json.loads(saved_path.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{saved_path} is corrupt; use another --out") from None
        if not isinstance(saved, dict):
            raise UserError(f"{saved_path} is not a reproduction profile; use another --out")
        if {k: v for k, v in saved.items() if k != "description"} != profile.identity():
            what = (
                f"profile {saved.get('name')!r}"
                if saved.get("name") != profile.name
                else f"profile {profile.name!r} with different settings"
            )
            raise UserError(
                f"{out} holds results of {what}; use another --out "
                f"(finished cells are never overwritten)"
            )
        if not (out / OUTPUT_MARKER).exists():
            write_json(out / OUTPUT_MARKER, {"written_by": f"hgn {KIND}"})
    claim_output_dir(out, KIND)
    if saved is None:
        write_json(saved_path, profile.settings())


DATASET_NAMES = {
    "noisy": "{system}",
    "clean": "{system}-clean",
    "long": "{system}-clean-long",
    "hgnpp": "{system}-clean-hgnpp",
}
"""Where each system's datasets live under the data root: the paper's noisy data, the
same without noise, the clean long test set of the extrapolation protocol, and the clean
long training set of HGN++'s own run (only made when HGN++ is among the models)."""


def _wanted(profile: Profile, kind: str) -> dict[str, Any]:
    """The settings the profile generates a dataset of ``kind`` with."""
    if kind == "long":  # only the test split is used; one training row keeps the format
        return {
            "n_train": 1,
            "n_test": min(profile.n_test, profile.extrapolation_sequences),
            "steps": profile.long_steps,
            "noise": 0.0,
        }
    noise = None if kind == "noisy" else 0.0  # None: the paper's noise of each system
    own = kind == "hgnpp" and profile.hgnpp_sequences is not None
    return {
        "n_train": profile.hgnpp_sequences if own else profile.n_train,
        "n_test": profile.n_test,
        "steps": profile.hgnpp_steps if kind == "hgnpp" else profile.steps,
        "noise": noise,
    }


def _dataset(
    path: Path, system: str, kind: str, profile: Profile, progress: bool
) -> tuple[Path, dict[str, Any]]:
    """One dataset: a complete one already at ``path`` is used as it is (made by an
    earlier run, by ``hgn data generate --preset``, or in the first ``.npy`` layout,
    which :mod:`hgn.data.legacy` reads); otherwise it is generated with the profile's
    settings (an interrupted generation resumes; anything else at ``path`` is refused
    with one line and left alone). Returns its path and a description for results.json.
    """
    from hgn import data

    wanted = _wanted(profile, kind)
    meta = None
    if path.exists():
        with contextlib.suppress(UserError):  # incomplete, or not a dataset: generate decides
            meta = data.info(path)
    if meta is None:
        common = {"dt": profile.dt, "size": profile.size, "seed": profile.seed}
        data.generate(path, system=system, progress=progress, **common, **wanted)
        meta = data.info(path)
    found = meta.get("system")
    if found is not None and found != system:
        raise UserError(f"{path} holds a {found} dataset, not {system}; use another --data-root")
    if kind != "noisy" and float(meta.get("noise") or 0) > 0:
        raise UserError(
            f"{path} has observation noise {meta['noise']}; the {kind} dataset must be "
            "noise-free (hgn data generate --noise 0)"
        )
    n = {
        s: meta.get("splits", {}).get(s, {}).get("n", meta.get(f"n_{s}")) for s in ("train", "test")
    }
    described = {
        "path": str(path),
        "system": found,
        "source": meta.get("source"),
        "train": n["train"],
        "test": n["test"],
        "steps": meta["steps"],
        "size": meta["size"],
        "dt": meta["dt"],
        "noise": meta.get("noise"),
        "layout": "npy (legacy)" if legacy.is_legacy(path) else "zarr",
    }
    mine = (
        described["steps"] == wanted["steps"]
        and described["size"] == profile.size
        and described["dt"] == profile.dt
        and described["train"] == wanted["n_train"]
        and described["test"] == wanted["n_test"]
        and (wanted["noise"] is None or described["noise"] == wanted["noise"])
    )
    described["profile_settings"] = bool(mine)
    return path, described


def datasets(
    profile: Profile,
    systems: Sequence[str],
    root: Path,
    progress: bool = True,
    models: Sequence[str] = MODEL_ORDER,
) -> tuple[dict[str, dict[str, Path]], dict[str, dict[str, Any]]]:
    """Each system's noisy and clean datasets and clean long test set under ``root``
    (:data:`DATASET_NAMES`), and HGN++'s clean long training set if one of ``models``
    needs it; generated or reused. Returns their paths and descriptions."""
    root.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in DATASET_NAMES if k != "hgnpp" or any(m in LONG_MODELS for m in models)]
    paths: dict[str, dict[str, Path]] = {}
    described: dict[str, dict[str, Any]] = {}
    for system in systems:
        paths[system], described[system] = {}, {}
        for kind in kinds:
            where = root / DATASET_NAMES[kind].format(system=system)
            paths[system][kind], described[system][kind] = _dataset(
                where, system, kind, profile, progress
            )
    return paths, described


def default_threads(device: str, jobs: int) -> int:
    """Torch's CPU threads per process when ``--threads`` is not given: 1 on CPU (the
    models are many small convolutions, which on a few shared cores run several times
    faster on one thread than on two: docs/RESULTS.md, "Training speed"); on a GPU, where the
    CPU only feeds batches and reads numbers back, the cores shared out among the ``jobs``
    processes so that they do not oversubscribe them."""
    if resolve_device(device).type == "cpu":
        return 1
    return max(1, (os.cpu_count() or 1) // jobs)


def reproduce(
    out: str | Path,
    profile: str = "smoke",
    systems: str | Sequence[str] | None = None,
    models: str | Sequence[str] | None = None,
    data_root: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    jobs: int = 1,
    command: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the comparison and write every output; returns the summary.

    ``systems`` / ``models``: comma-separated names or sequences (default: all).
    ``data_root``: where datasets live (default ``out/data``); identical datasets there
    are reused, so several output directories of one profile can share them.
    ``threads``: torch's CPU threads of each process (:func:`default_threads`).
    ``jobs``: cells run at once, each in its own process with ``threads`` threads and its
    output in ``cells/SYSTEM/MODEL/log.txt`` (``jobs=2`` uses both cores of a 2-core
    machine for nearly twice the throughput of one single-threaded process).
    """
    chosen = get_profile(profile)
    systems = choose(systems, SYSTEM_ORDER, "system")
    models = choose(models, MODEL_ORDER, "model")
    jobs = positive_int(jobs, "--jobs")
    if threads is None:
        threads = default_threads(device, jobs)
    threads = positive_int(threads, "--threads")
    out = Path(out)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(out, chosen, systems, models, data_root, device, jobs, command, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    out: Path,
    chosen: Profile,
    systems: list[str],
    models: list[str],
    data_root: str | Path | None,
    device: str,
    jobs: int,
    command: str | None,
    progress: bool,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    _claim(out, chosen)
    command = command or f"hgn reproduce --profile {chosen.name} --out {out}"
    root = Path(data_root) if data_root else out / "data"
    paths, described = datasets(chosen, systems, root, progress, models)
    requested = [(s, m) for s in systems for m in models]
    done = cells.finished_cells(out)
    todo = [(s, m) for s, m in requested if m not in done.get(s, {})]
    say = tqdm.write if progress else print  # logs keep the plan and the estimate
    say(
        f"hgn reproduce: profile {chosen.name}, {len(requested)} cells, "
        f"{len(requested) - len(todo)} already finished, {len(todo)} to run"
    )
    if jobs > 1:  # the longest first, so no core idles at the end
        todo = sorted(todo, key=lambda cell: -_expected_minutes(chosen, cell[1]))
    say(estimate([_expected_minutes(chosen, m) for _, m in todo], jobs, "wall clock"))
    run_cells(out, chosen, todo, paths, device, jobs, say, progress, cells.run_cell)
    summary = report.build_outputs(out, chosen, requested, command, described)
    say(f"wrote {out / 'report.html'} ({summary['finished_cells']}/{len(requested)} cells)")
    return summary


def estimate(minutes: Sequence[float], jobs: int, clock: str) -> str:
    """The line printed before the cells start: their training budgets in total, and
    spread over ``jobs`` (the longest first, as they run), so that a user knows before
    starting how long a profile takes on this machine. Evaluation comes on top."""
    lanes = [0.0] * max(1, jobs)
    for m in sorted(minutes, reverse=True):
        lanes[lanes.index(min(lanes))] += m
    total, longest = sum(minutes), max(lanes)
    return (
        f"estimated training time: {_hours(longest)} with {jobs} job(s) "
        f"({_hours(total)} of training budgets by the {clock}), plus each cell's evaluation"
    )


def _hours(minutes: float) -> str:
    hours, rest = divmod(round(minutes), 60)
    return f"{hours} h {rest:02d} min" if hours else f"{rest} min"


def _expected_minutes(profile: Profile, model: str) -> float:
    """A cell's training budget in minutes (its runs' caps; a run capped by steps alone
    counts its steps / 1,000), to start the longest cells first: with several jobs, a
    long cell started last (HGN++'s, with its own long run) would leave the other cores
    idle at the end."""
    runs = [cells.train_settings(profile, model)] * len(REGIMES)
    if ROWS.lookup(model).long_run:
        runs.append(cells.train_settings(profile, model, long=True))
    return sum(r["max_minutes"] or r["steps"] / 1000 for r in runs)


def run_cells(
    out: Path,
    settings: Any,
    todo: Sequence[tuple[str, str]],
    paths: Mapping[str, Any],
    device: str,
    jobs: int,
    say: Any,
    progress: bool,
    run_cell: Callable[..., Any],
) -> None:
    """Run the ``todo`` cells (column, model) one at a time in this process, or ``jobs``
    at a time in processes of their own (:func:`_run_parallel`), with a progress bar;
    ``run_cell(out, settings, column, model, paths[column], device, progress)`` is
    module-level (it is pickled into the new processes). ``hgn reproduce`` and ``hgn
    benchmark`` both run their cells through this."""
    from tqdm.auto import tqdm

    with tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress) as bar:
        if jobs == 1:
            for i, (column, model) in enumerate(todo):
                _announce(say, bar, [(column, model)], todo[i + 1 :])
                run_cell(out, settings, column, model, paths[column], device, progress)
                bar.update(1)
        else:
            _run_parallel(out, settings, todo, paths, device, jobs, say, bar, run_cell)


def _announce(say: Any, bar: Any, running: Sequence[tuple[str, str]], queued: Sequence) -> None:
    """The progress display: which cells run now and which remain. The count of
    finished cells is what is neither running nor queued (a disabled bar counts
    nothing)."""
    now = ", ".join(f"{s} × {m}" for s, m in running)
    later = [f"{s}×{m}" for s, m in queued]
    left = ", ".join(later[:6]) + (" …" if len(later) > 6 else "")
    done = bar.total - len(running) - len(later)
    bar.set_description(f"running {now}")
    say(
        f"[{done} of {bar.total} done] running {now}; "
        f"{len(later)} queued{': ' if later else ''}{left}"
    )


def _cell_process(
    out: Path,
    profile: Profile,
    system: str,
    model: str,
    paths: Mapping[str, Path],
    device: str,
    threads: int,
    run_cell: Callable[..., Any] | None = None,
) -> None:
    """Entry point of a cell's own process: its console output goes to the cell's
    ``log.txt``; a user error ends it with status 2 and the message as the last line.
    ``run_cell``: what runs the cell, ``run_cell(out, profile, system, model, paths,
    device)`` (default :func:`cells.run_cell`; ``hgn benchmark`` passes its own)."""
    torch.set_num_threads(threads)
    cell = out / "cells" / system / model
    cell.mkdir(parents=True, exist_ok=True)
    with open(cell / "log.txt", "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            (run_cell or cells.run_cell)(out, profile, system, model, paths, device)
        except UserError as exc:
            print(f"hgn: error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)


def _last_line(path: Path) -> str:
    if not path.is_file():  # the process ended before it could open its log
        return "(no log: the cell's process ended before it started; see the console)"
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def _run_parallel(
    out: Path,
    profile: Profile,
    todo: Sequence[tuple[str, str]],
    paths: Mapping[str, Mapping[str, Path]],
    device: str,
    jobs: int,
    say: Any,
    bar: Any,
    run_cell: Callable[..., Any] | None = None,
) -> None:
    """Run cells ``jobs`` at a time, each in a fresh (spawned) process with this
    process's thread count. A failed cell stops new ones from starting; the running ones
    finish and are recorded, then the failure is reported. On an interruption the
    running cells are terminated (their checkpoints are atomic, so they resume).
    ``run_cell``: a module-level function (it is pickled into the new process) that
    runs one cell, as :func:`_cell_process` calls it (default :func:`cells.run_cell`)."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    threads = torch.get_num_threads()
    queue = list(todo)
    running: dict[Any, tuple[Any, str, str]] = {}
    failed: tuple[str, str] | None = None
    try:
        while running or (queue and failed is None):
            while queue and failed is None and len(running) < jobs:
                system, model = queue.pop(0)
                args = (out, profile, system, model, paths[system], device, threads, run_cell)
                process = context.Process(target=_cell_process, args=args, daemon=True)
                process.start()
                running[process.sentinel] = (process, system, model)
                _announce(say, bar, [(s, m) for _, s, m in running.values()], queue)
            for sentinel in wait(list(running)):
                process, system, model = running.pop(sentinel)
                process.join()
                if process.exitcode == 0:
                    bar.update(1)
                else:
                    failed = failed or (system, model)
                    say(f"cell {system} × {model} failed (exit status {process.exitcode})")
    finally:
        for process, _, _ in running.values():
            process.terminate()
        for process, _, _ in running.values():
            process.join()
    if failed is not None:
        log = out / "cells" / failed[0] / failed[1] / "log.txt"
        raise UserError(f"cell {failed[0]} × {failed[1]} failed: {_last_line(log)} (see {log})")
