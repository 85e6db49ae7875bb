"""Running a benchmark: check every option, claim the results directory, generate (or
reuse) the datasets, run the cells that are not finished (one at a time or two
processes at once, with ``hgn reproduce``'s job pool), and rebuild the report from every
finished cell. Rerunning the same command resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hgn.experiments.benchmark import cells, report, tuning
from hgn.experiments.benchmark.profiles import (
    LEGACY_SETTINGS,
    MODEL_ORDER,
    Settings,
    Size,
    check_clock,
    check_jobs,
    check_minutes,
    choose_datasets,
    choose_models,
    column,
    dataset_kind,
    get_size,
    style_of,
)
from hgn.experiments.reproduce.run import default_threads, estimate, run_cells
from hgn.utils import (
    OUTPUT_MARKER,
    UserError,
    check_output_dir,
    claim_output_dir,
    positive_int,
    write_json,
)

KIND = "benchmark"
"""The command that owns a results directory (the output marker's ``written_by``)."""

SETTINGS_FILE = "settings.json"
"""The size, minutes per cell and seed a results directory was made with."""

DATA_SEED = 0
"""Seed of every generated dataset: fixed, so runs with other ``--seed`` values (which
seed training) see the same data and can share a ``--data-root``."""

PAPER_DT = 0.125
"""Δt of a dataset named by its system (hgn's paper-style data)."""


def _check_settings(out: Path, settings: Settings) -> bool:
    """Whether ``out`` already holds results of ``settings``; one line if it holds
    another benchmark's (mixing them would put numbers of different budgets in one
    table) or is not a benchmark's. Writes nothing."""
    check_output_dir(out, KIND)
    path = out / SETTINGS_FILE
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is corrupt; use another --out") from None
    if isinstance(saved, dict):
        saved = {**LEGACY_SETTINGS, **saved}
    if saved != settings.settings():
        was = saved.get("size", {}).get("name") if isinstance(saved, dict) else None
        raise UserError(
            f"{out} holds a benchmark of profile {was!r} with other settings (minutes, seed, "
            "profile, clock or tuning); use another --out (finished cells are never overwritten)"
        )
    return True


def _claim(out: Path, settings: Settings) -> None:
    """Make ``out`` this benchmark's results directory (:func:`hgn.utils.claim_output_dir`:
    new, empty, or already a benchmark's of the same settings), or refuse it."""
    existed = _check_settings(out, settings)
    claim_output_dir(out, KIND)
    if not existed:
        write_json(out / SETTINGS_FILE, settings.settings())
    assert (out / OUTPUT_MARKER).exists()


def _wanted(size: Size, name: str) -> dict[str, Any]:
    """The :func:`hgn.data.generate` keywords of a system or preset at ``size``: the
    preset's physics and pictures (or a system's paper-style ones), the size's
    resolution, length and counts, no noise."""
    from hgn.data.presets import preset

    if dataset_kind(name) == "system":
        settings: dict[str, Any] = {"system": name, "dt": PAPER_DT}
    else:
        settings = preset(name)
        settings.update(settings.pop("constants"))
    settings.update(
        n_train=size.n_train,
        n_test=size.n_test,
        steps=size.steps,
        size=size.image_size,
        noise=0.0,
        seed=DATA_SEED,
    )
    return settings


def dataset(name: str, root: Path, size: Size, progress: bool) -> tuple[Path, dict[str, Any]]:
    """One column's dataset: a path is used as it is; a system or preset is generated
    at ``root/NAME`` (or a complete one there reused, as ``hgn reproduce`` does).
    Returns its path and a description for results.json."""
    from hgn import data

    kind = dataset_kind(name)
    wanted = None
    if kind == "path":
        path = Path(name)
        meta = data.info(path)
    else:
        path = root / name
        wanted = _wanted(size, name)
        meta = None
        if path.exists():
            with contextlib.suppress(UserError):  # incomplete or not a dataset: generate decides
                meta = data.info(path)
        if meta is None:
            data.generate(path, progress=progress, **wanted)
            meta = data.info(path)
    splits = meta.get("splits", {})
    described = {
        "name": name,
        "kind": kind,
        "path": str(path),
        "system": meta.get("system"),
        "source": meta.get("source"),
        "style": style_of(meta),
        "train": splits.get("train", {}).get("n", meta.get("n_train")),
        "test": splits.get("test", {}).get("n", meta.get("n_test")),
        "steps": meta["steps"],
        "size": meta["size"],
        "dt": meta["dt"],
        "noise": meta.get("noise"),
        "has_states": meta.get("has_states", True),
    }
    described["size_settings"] = wanted is not None and (
        described["steps"] == wanted["steps"]
        and described["size"] == wanted["size"]
        and described["train"] == wanted["n_train"]
        and described["test"] == wanted["n_test"]
        and not described["noise"]
    )
    return path, described


def benchmark(
    out: str | Path,
    size: str = "smoke",
    models: str | Sequence[str] | None = None,
    datasets: str | Sequence[str] | None = None,
    minutes: float | None = None,
    jobs: int = 1,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    data_root: str | Path | None = None,
    command: str | None = None,
    progress: bool = True,
    clock: str | None = None,
    tune: bool = False,
    tuned: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) the benchmark and write every output; returns the summary.

    Every option is checked before anything is written. ``models``, ``datasets``:
    comma-separated names (default: :data:`~.profiles.MODEL_ORDER` as registered,
    :data:`~.profiles.DATASET_ORDER`). ``minutes``: training wall clock per cell
    (default: the size's), counted by ``clock`` (:func:`~.profiles.check_clock`).
    ``jobs``: cells at once, 1 or 2. ``tune``: run the tuning sweep
    (:mod:`~hgn.experiments.benchmark.tuning`) instead of the table; ``tuned``: a sweep's
    directory, whose chosen variants the table's models train with.
    """
    chosen = get_size(size)
    model_names = choose_models(models)
    left_out = [m for m in MODEL_ORDER if m not in model_names] if models is None else []
    names = choose_datasets(datasets)
    if tune and tuned is not None:
        raise UserError("--tune runs the sweep that --tuned reads: give one of them")
    settings = Settings(
        chosen,
        check_minutes(chosen.minutes if minutes is None else minutes),
        _seed(seed),
        clock=check_clock(clock, device),
        tune=tune,
        tuned=tuning.read_tuned(tuned, model_names) if tuned is not None else {},
    )
    jobs = check_jobs(jobs)
    threads = positive_int(
        default_threads(device, jobs) if threads is None else threads, "--threads"
    )
    out = Path(out)
    columns = [column(n) for n in names]
    if len(set(columns)) != len(columns):
        raise UserError(f"two datasets share a column name: {', '.join(columns)}")
    _check_settings(out, settings)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(
            out, settings, model_names, names, data_root, device, jobs, command, progress, left_out
        )
    finally:
        torch.set_num_threads(previous)


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}")
    return seed


def _run(
    out: Path,
    settings: Settings,
    models: list[str],
    names: list[str],
    data_root: str | Path | None,
    device: str,
    jobs: int,
    command: str | None,
    progress: bool,
    left_out: Sequence[str] = (),
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    _claim(out, settings)
    command = command or f"hgn benchmark --profile {settings.name} --out {out}"
    root = Path(data_root) if data_root else out / "data"
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, dict[str, Path]] = {}
    described: dict[str, dict[str, Any]] = {}
    for name in names:
        path, described[column(name)] = dataset(name, root, settings.size, progress)
        paths[column(name)] = {"data": path}
    rows = tuning.rows(models) if settings.tune else models
    requested = [(c, m) for c in paths for m in rows]
    done = cells.finished_cells(out)
    todo = [(c, m) for c, m in requested if m not in done.get(c, {})]
    say = tqdm.write if progress else print  # logs keep the plan and the estimate
    if left_out:
        say(f"hgn benchmark: not registered in this version, left out: {', '.join(left_out)}")
    say(
        f"hgn benchmark: size {settings.name}, {settings.minutes:g} min per cell, "
        f"{len(requested)} cells, {len(requested) - len(todo)} already finished, "
        f"{len(todo)} to run"
    )
    say(estimate([settings.minutes] * len(todo), jobs, f"{settings.clock} clock"))
    run_cells(out, settings, todo, paths, device, jobs, say, progress, cells.run_cell)
    summary = report.build_outputs(out, settings, requested, command, described, left_out)
    if settings.tune:
        tuning.write(
            out,
            tuning.summarise(cells.finished_cells(out), models, list(paths)),
            settings.minutes,
            command,
        )
        say(f"wrote {out / 'tune.md'}")
    say(f"wrote {out / 'report.html'} ({summary['finished_cells']}/{len(requested)} cells)")
    return summary
