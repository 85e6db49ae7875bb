"""`hgn reproduce` on single cells, each trained here: resuming an interrupted cell,
parallel jobs, adopting a results directory from before the marker, imported and wrong
datasets; and every row built on every system's data. Kept apart from the smoke run's
tests (test_reproduce.py) so that ``pytest -n`` runs them beside it, not after it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_reproduce import _numbers

from hgn.cli import main
from hgn.experiments import reproduce as rep
from hgn.experiments.reproduce import cells
from hgn.utils import OUTPUT_MARKER, UserError


@pytest.mark.slow  # 36 models built and scored: make test's, not the quick loop's
def test_every_row_builds_and_scores_on_every_systems_data(tmp_path: Path) -> None:
    """The system × row matrix at unit level (the smoke run trains every row on two
    systems only): each row, configured by the smoke profile for each system's own data
    (its degrees of freedom, frame count and time step), builds its model, whose loss on
    that data is finite and gives it a gradient."""
    from hgn import data
    from hgn.models import MODELS

    profile = rep.PROFILES["smoke"]
    for system in rep.SYSTEM_ORDER:
        path = data.generate(tmp_path / system, system=system, n_train=2, n_test=1,
                             steps=profile.steps, size=profile.size, progress=False)  # fmt: skip
        meta = {**data.info(path), "path": path}
        frames = data.to_frames(np.asarray(data.load(path, "train").images), "cpu")
        for name, row in rep.ROWS.items():
            torch.manual_seed(0)
            model = MODELS[row.model](cells.model_config(profile, name, meta)).train()
            loss, _ = model.loss(frames)
            assert torch.isfinite(loss), (system, name)
            loss.backward()
            assert any(p.grad is not None for p in model.parameters()), (system, name)


@pytest.mark.slow
def test_results_directory_from_before_the_marker_is_adopted(tmp_path: Path) -> None:
    """A results directory an older hgn wrote (profile.json, no marker) still resumes."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "profile.json").write_text(json.dumps(rep.PROFILES["smoke"].settings()))
    rep.reproduce(out, "smoke", systems="pendulum", models="hgn-determ", progress=False)
    assert (out / "cells" / "pendulum" / "hgn-determ" / "result.json").is_file()
    assert json.loads((out / OUTPUT_MARKER).read_text())["written_by"] == "hgn reproduce"


@pytest.mark.slow
def test_interrupted_cell_resumes_and_is_recorded_only_when_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cells, "_paper_metrics", crash)
    with pytest.raises(KeyboardInterrupt):
        rep.reproduce(out, "smoke", systems="pendulum", models="hnn", progress=False)
    cell = out / "cells" / "pendulum" / "hnn"
    assert (cell / "run-noisy" / "checkpoint.pt").is_file()
    assert not (cell / "result.json").exists()
    monkeypatch.undo()
    monkeypatch.setattr(cells, "_extrapolation", crash)
    with pytest.raises(KeyboardInterrupt):
        rep.reproduce(out, "smoke", systems="pendulum", models="hnn", progress=False)
    assert (cell / "stage-paper-noisy.json").is_file()
    assert (cell / "stage-paper-clean.json").is_file()
    assert not (cell / "result.json").exists()
    monkeypatch.undo()  # the real extrapolation again; the finished stages are read back:
    monkeypatch.setattr(cells, "_paper_metrics", crash)  # recomputing one would crash
    summary = rep.reproduce(out, "smoke", systems="pendulum", models="hnn", progress=False)
    assert summary["finished_cells"] == 1
    record = json.loads((cell / "result.json").read_text())
    for regime in rep.REGIMES:
        assert record["train"][regime]["steps"] == rep.PROFILES["smoke"].train_steps


@pytest.mark.slow
def test_parallel_jobs_fill_cells_and_keep_logs(tmp_path: Path) -> None:
    """Also two-body's pass through the command (not in the smoke run): an HNN row, whose
    latent has the system's four degrees of freedom, and an HGN row."""
    out = tmp_path / "r"
    summary = rep.reproduce(
        out, "smoke", systems="two-body", models="hnn,hgn-determ", jobs=2, progress=False
    )
    assert summary["finished_cells"] == 2
    assert not (out / "data" / "two-body-clean-hgnpp").exists()  # only made for HGN++
    for model in ("hnn", "hgn-determ"):
        assert "train" in (out / "cells" / "two-body" / model / "log.txt").read_text()
    values = _numbers(summary["cells"]["two-body"])
    assert values and all(math.isfinite(v) for v in values)
    assert summary["cells"]["two-body"]["hnn"]["config"]["clean"]["dof"] == 4
    with pytest.raises(UserError, match="--jobs must be a positive integer"):
        rep.reproduce(out, "smoke", jobs=0)


@pytest.mark.slow
def test_imported_datasets_run_without_floor_and_refuse_hnn_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Datasets made by `hgn data import` (no states, no system): HGN rows run, with the
    floor and excess n/a; HNN rows, which need the true dimension, are refused."""
    from hgn import data

    root = tmp_path / "root"
    for name, steps in (("pendulum", 8), ("pendulum-clean", 8), ("pendulum-clean-long", 16)):
        made = data.generate(tmp_path / f"made-{name}", system="pendulum", n_train=6, n_test=2,
                             steps=steps, size=16, progress=False)  # fmt: skip
        frames = [np.array(data.load(made, s).images) for s in data.SPLITS]
        np.save(tmp_path / f"{name}.npy", np.concatenate(frames).astype(np.float32) / 255)
        data.import_sequences(tmp_path / f"{name}.npy", root / name, size=16, dt=0.125,
                              test_fraction=0.25, progress=False)  # fmt: skip
    out = tmp_path / "r"
    argv = ["reproduce", "--systems", "pendulum", "--data-root", str(root), "--no-progress"]
    assert main([*argv, "--models", "hnn", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "records no degrees of freedom" in err
    assert main([*argv, "--models", "hgn-determ", "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert not summary["datasets"]["pendulum"]["noisy"]["profile_settings"]
    test = summary["cells"]["pendulum"]["hgn-determ"]["paper"]["noisy"]["test"]
    assert test["noise_floor_mse"] is None and test["excess"] is None
    row = next(x for x in (out / "table1.md").read_text().splitlines() if x.startswith("| HGN det"))
    assert row.endswith("| n/a | n/a |")


def test_wrong_datasets_under_data_root_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hgn import data

    root = tmp_path / "data"
    data.generate(root / "pendulum", system="mass-spring", n_train=2, n_test=2, steps=4,
                  size=16, progress=False)  # fmt: skip
    argv = ["reproduce", "--systems", "pendulum", "--data-root", str(root), "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a mass-spring dataset, not pendulum" in err
    (root / "pendulum").rename(root / "elsewhere")
    data.generate(root / "pendulum-clean", system="pendulum", n_train=2, n_test=2, steps=4,
                  size=16, progress=False)  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be noise-free" in err
    assert not list((tmp_path / "b").glob("cells/*/*/result.json"))
