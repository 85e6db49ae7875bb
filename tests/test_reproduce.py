"""`hgn reproduce`: the smoke profile end to end (both data regimes, the extrapolation
table, sample physics), resuming, refusals, datasets reused (also in the old .npy
layout), the bars, and the report rendered in headless Chromium.

The end-to-end smoke run (:func:`smoke`) trains every row on two of the four systems;
the tests that only need finished cells or datasets read or copy its output instead of
training their own. Pendulum and two-body go through the command in
test_reproduce_cells.py (single cells), which also builds every row on every system's
data."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hgn.cli import main
from hgn.experiments import reproduce as rep
from hgn.experiments.reproduce import cells
from hgn.utils import OUTPUT_MARKER, UserError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


SMOKE_SYSTEMS = ("mass-spring", "three-body")
"""The systems of the smoke run: the tables' first and last columns (one body and three:
the smallest and largest HNN latent; the paper's numbers of both are checked), each with
every row. The run was all four systems (76 training runs, most of the suite's time);
pendulum and two-body go through ``hgn reproduce`` in test_reproduce_cells.py."""

CELLS = len(SMOKE_SYSTEMS) * len(rep.MODEL_ORDER)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke run of every row on :data:`SMOKE_SYSTEMS` through the CLI, shared by the
    tests below (read only: a test that changes cells works on a copy)."""
    out = tmp_path_factory.mktemp("smoke") / "results"
    torch.manual_seed(0)
    argv = ["reproduce", "--profile", "smoke", "--systems", ",".join(SMOKE_SYSTEMS)]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    return out


def _copy_cell(smoke: Path, out: Path, system: str, model: str) -> Path:
    """A results directory ``out`` of the smoke profile holding one of the smoke run's
    finished cells (copied, so that a test may damage it); returns the cell."""
    out.mkdir(parents=True)
    for name in (OUTPUT_MARKER, "profile.json"):
        shutil.copy2(smoke / name, out / name)
    cell = out / "cells" / system / model
    shutil.copytree(smoke / "cells" / system / model, cell)
    return cell


def _numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


def _table_rows(text: str) -> list[list[str]]:
    """The Markdown tables of ``text``, as lists of lines that start with '| '."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("| "):
            current.append(line)
        elif line.startswith("|---"):
            continue
        elif current:
            tables.append(current)
            current = []
    return tables


@pytest.mark.slow
def test_every_cell_is_filled_with_finite_numbers(smoke: Path) -> None:
    summary = json.loads((smoke / "results.json").read_text())
    assert summary["requested_cells"] == summary["finished_cells"] == CELLS
    cells = summary["cells"]
    assert sorted(cells) == sorted(SMOKE_SYSTEMS)
    profile = rep.PROFILES["smoke"]
    for system in SMOKE_SYSTEMS:
        assert sorted(cells[system]) == sorted(rep.MODEL_ORDER)
        for model, record in cells[system].items():
            for regime in rep.REGIMES:
                for split in ("train", "test"):
                    stats = record["paper"][regime][split]
                    assert len(stats["mse_per_step"]) == profile.steps + 1
                    assert stats["mse"] > 0
                    assert stats["excess"] == pytest.approx(stats["mse"] - stats["noise_floor_mse"])
                floor = record["paper"][regime]["test"]["noise_floor_mse"]
                assert (floor > 1e-6) == (regime == "noisy")  # clean: round-off only
            ex = record["extrapolation"]
            if model in rep.LONG_MODELS:  # its own run on clean long data
                long = record["paper"][rep.LONG_RUN]["test"]
                assert len(long["mse_per_step"]) == profile.steps + 1  # the 30-step set
                assert record["config"][rep.LONG_RUN]["frames"] == profile.hgnpp_steps + 1
                assert record["train"][rep.LONG_RUN]["steps"] == profile.hgnpp_train_steps
                assert record["extrapolation_run"] == rep.LONG_RUN
            else:
                assert rep.LONG_RUN not in record["train"]
                assert record["extrapolation_run"] == "clean"
            assert set(ex["rollouts"]) == {"forward", "backward", "2x", "half"}
            # every model is scored from the window's first frame (HGN++ taken back 4)
            assert ex["state_frame"] == profile.start
            assert ex["rolled_back_steps"] == (4 if model == "hgn++" else 0)
            assert ex["noise"] == 0 and ex["noise_floor_mse_x1e4"] == 0
            for r in ex["rollouts"].values():
                assert 0 <= r["vpt_mean"] <= r["steps"]
            values = _numbers(record)
            assert values and all(math.isfinite(v) for v in values), (system, model)
        assert "skipped" in cells[system]["hnn"]["samples"]["clean"]
        assert "samples" in cells[system]["hgn"]["samples"]["clean"]
    assert all(d["profile_settings"] for s in summary["datasets"].values() for d in s.values())
    for datasets in summary["datasets"].values():
        assert datasets["hgnpp"]["steps"] == profile.hgnpp_steps
        assert datasets["hgnpp"]["train"] == profile.hgnpp_sequences != profile.n_train
        assert datasets["hgnpp"]["noise"] == 0
    models = len(rep.MODEL_ORDER)
    long = len(rep.LONG_MODELS)  # HGN++'s own run: a row of the clean tables
    for name, sizes in (
        ("table1.md", [1 + models + 1, 1 + models + long + 1]),  # header, rows, mean image
        ("table2.md", [1 + models, 1 + models + long]),
        ("extrapolation.md", [1 + models] * len(SMOKE_SYSTEMS)),
    ):
        tables = _table_rows((smoke / name).read_text())
        assert [len(t) for t in tables] == sizes, name
        for rows in tables:
            assert not any("—" in row or "n/a" in row for row in rows[1:]), name
    samples = (smoke / "samples.md").read_text()
    assert samples.count("| ground truth (test) |") == 2 * len(SMOKE_SYSTEMS)
    assert "| HGN deterministic |" not in samples and "| HNN |" not in samples
    assert samples.count(f"| {rep.LONG_LABEL} |") == len(SMOKE_SYSTEMS)  # clean only
    extrapolation = (smoke / "extrapolation.md").read_text()
    assert extrapolation.count(f"| {rep.LONG_LABEL} |") == len(SMOKE_SYSTEMS)
    assert "| HGN++ |" not in extrapolation
    assert f"clean {profile.hgnpp_steps}-step sequences" in extrapolation


@pytest.mark.slow
def test_tables_carry_the_floor_the_excess_and_the_bars(smoke: Path) -> None:
    table = (smoke / "table1.md").read_text()
    noisy, clean = _table_rows(table)
    assert "mass-spring floor" in noisy[0] and "mass-spring excess" in noisy[0]
    assert "floor" not in clean[0]
    hgn_row = next(line for line in noisy if line.startswith("| HGN |"))
    assert "[3.84]" in hgn_row and "[9.80]" in hgn_row  # mass-spring train, three-body test
    assert "[" not in next(line for line in clean if line.startswith("| HGN |"))
    summary = json.loads((smoke / "results.json").read_text())
    for regime in rep.REGIMES:
        assert sorted(summary["checks"]["bars"][regime]) == sorted(SMOKE_SYSTEMS)
        for system, bar in summary["checks"]["bars"][regime].items():
            line = next(x for x in table.splitlines() if x.startswith(f"- {system}, {regime}"))
            if bar["passed"] is False:
                assert f"MISSED by a factor {bar['missed_by']:.1f}" in line
    extrapolation = (smoke / "extrapolation.md").read_text()
    assert "(integrator not reversible)" in extrapolation  # HNN integrates with RK4


@pytest.mark.slow
def test_report_references_only_files_that_exist(smoke: Path) -> None:
    page = (smoke / "report.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len([x for x in links if x.endswith(".gif")]) == CELLS
    for name in ("fig6", "fig7", "fig8", "figures/extrapolation.png", "extrapolate-rollouts"):
        assert any(name in x for x in links), name
    for link in links:
        assert not re.match(r"^[a-z]+:|^/", link), f"non-relative link {link}"
        assert (smoke / link).is_file(), f"report.html references missing {link}"


@pytest.mark.slow
def test_rerun_skips_finished_cells(smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in smoke.glob("cells/*/*/result.json")}

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(cells, "run_cell", no_training)
    summary = rep.reproduce(smoke, "smoke", systems=SMOKE_SYSTEMS, progress=False)
    assert summary["finished_cells"] == CELLS
    assert {p: p.stat().st_mtime_ns for p in smoke.glob("cells/*/*/result.json")} == before


@pytest.mark.slow
def test_directory_of_another_profile_is_refused(
    smoke: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p: p.read_bytes() for p in smoke.glob("cells/*/*/result.json")}
    code = main(["reproduce", "--profile", "small", "--out", str(smoke), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "holds results of profile 'smoke'" in err
    assert {p: p.read_bytes() for p in smoke.glob("cells/*/*/result.json")} == before


def test_a_users_directory_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert main(["reproduce", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds files hgn did not write" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"
    (tmp_path / "file").write_text("x")
    assert main(["reproduce", "--out", str(tmp_path / "file"), "--no-progress"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--systems", "pendulum,two-bdy"], "unknown system 'two-bdy' (did you mean 'two-body'?)"),
        (["--models", "hgn,hnn-cnv"], "unknown model 'hnn-cnv' (did you mean 'hnn-conv'?)"),
        (["--threads", "0"], "--threads must be a positive integer"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "r"
    assert main(["reproduce", "--out", str(out), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_parallel_jobs_start_the_longest_cells_first() -> None:
    from hgn.experiments.reproduce import run

    small = rep.PROFILES["small"]
    minutes = {m: run._expected_minutes(small, m) for m in ("hnn", "hgn", "hgn++")}
    # HNN: two 2-minute runs; HGN: two 3-minute runs; HGN++: those and its 20-minute run
    assert minutes == {"hnn": 4.0, "hgn": 6.0, "hgn++": 26.0}


@pytest.mark.slow
def test_partial_report_is_labelled(smoke: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    cell = _copy_cell(smoke, out, "mass-spring", "hnn")  # trained, then interrupted:
    (cell / "result.json").unlink()
    summary = rep.build_outputs(
        out, rep.PROFILES["smoke"], [("mass-spring", "hnn"), ("mass-spring", "hgn")], "test"
    )
    assert summary["finished_cells"] == 0
    assert "Partial results: 0 of 2" in (out / "report.html").read_text()
    assert "—" in (out / "table1.md").read_text()


@pytest.mark.slow
def test_a_cell_with_missing_numbers_still_gets_its_report(smoke: Path, tmp_path: Path) -> None:
    """An Euler rollout's learned H can overflow along the 1,000-step drift rollout; the
    cell records it as missing (None), and the tables, figures and report say so instead
    of failing at the end of a long run (as the first full small run did)."""
    out = tmp_path / "r"
    path = _copy_cell(smoke, out, "mass-spring", "hgn-euler") / "result.json"
    record = json.loads(path.read_text())
    ex = record["extrapolation"]
    ex["energy_drift"]["relative_spread_mean"] = None
    ex["rollouts"]["forward"]["vpt_mean"] = None
    ex["reversible"]["round_trip_relative_error"] = None
    path.write_text(json.dumps(record))
    summary = rep.build_outputs(out, rep.PROFILES["smoke"], [("mass-spring", "hgn-euler")], "t")
    assert summary["finished_cells"] == 1
    row = next(r for r in (out / "extrapolation.md").read_text().splitlines() if "HGN Euler" in r)
    assert "not finite" in row and "n/a/" in row
    assert (out / "report.html").is_file()


def _fake_cells(
    hgn: float, hnn: float, hnn_ac: float, floor: float = 0.0, std: float = 0.0
) -> dict[str, Any]:
    """Cells of one system holding only what the bars read: test MSEs and the floor."""

    def record(mse: float) -> dict[str, Any]:
        test = {
            "mse": mse,
            "mse_std": std,
            "sequences": 100,
            "noise_floor_mse": floor,
            "excess": mse - floor,
        }
        return {"paper": {regime: {"test": test} for regime in rep.REGIMES}}

    return {"s": {"hgn": record(hgn), "hnn": record(hnn), "hnn-ac": record(hnn_ac)}}


def test_bars_judge_against_the_strongest_baseline_and_say_by_how_much() -> None:
    from hgn.experiments.reproduce.tables import bar_text, checks

    passed = checks(_fake_cells(hgn=1.0, hnn=20.0, hnn_ac=6.0))["bars"]["clean"]["s"]
    assert passed["baseline"] == "hnn-ac" and passed["ratio"] == pytest.approx(6.0)
    assert passed["passed"] and passed["ratios"]["hnn"] == pytest.approx(20.0)
    missed = checks(_fake_cells(hgn=1.0, hnn=20.0, hnn_ac=2.0))["bars"]["clean"]["s"]
    assert missed["passed"] is False and missed["missed_by"] == pytest.approx(2.5)
    assert "MISSED by a factor 2.5" in bar_text("s", "clean", missed)
    # noisy data: the excess over the floor is compared ...
    noisy = checks(_fake_cells(hgn=1.1, hnn=2.0, hnn_ac=2.0, floor=1.0))["bars"]["noisy"]["s"]
    assert noisy["ratio"] == pytest.approx(10.0) and noisy["passed"]
    # ... unless the floor leaves no room to measure it (excess needed < its resolution)
    tight = checks(_fake_cells(hgn=1.0, hnn=1.1, hnn_ac=1.1, floor=1.0))["bars"]["noisy"]["s"]
    assert tight["applies"] is False and tight["passed"] is None
    assert "bar does not apply" in bar_text("s", "noisy", tight)
    # imported data has no states, hence no floor and no excess: no noisy bar at all
    unknown = _fake_cells(hgn=1.0, hnn=2.0, hnn_ac=2.0)
    for record in unknown["s"].values():
        record["paper"]["noisy"]["test"].update(noise_floor_mse=None, excess=None)
    assert checks(unknown)["bars"]["noisy"] == {}


def _as_legacy(source: Path, target: Path) -> None:
    """Copy a dataset into the first (.npy) layout, which nothing writes any more."""
    from hgn import data

    meta = {**data.info(source), "format": 1, "shard": None}
    meta["splits"] = {
        s: {"start": 0, "stop": v["n"], "n": v["n"]} for s, v in meta["splits"].items()
    }
    for name in data.SPLITS:
        split = data.load(source, name)
        (target / name).mkdir(parents=True)
        for array in ("images", *data.STATES):
            np.save(target / name / f"{array}.npy", np.array(getattr(split, array)))
    (target / "meta.json").write_text(json.dumps(meta))


@pytest.mark.slow
def test_data_root_datasets_are_used_as_they_are_even_in_the_old_layout(
    smoke: Path, tmp_path: Path
) -> None:
    """The smoke run's own datasets, copied into the old layout, give its numbers again."""
    root = tmp_path / "old-data"
    for name in ("mass-spring", "mass-spring-clean", "mass-spring-clean-long"):
        _as_legacy(smoke / "data" / name, root / name)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    out = tmp_path / "second"
    summary = rep.reproduce(
        out, "smoke", systems="mass-spring", models="hgn-determ", data_root=root, progress=False
    )
    assert summary["finished_cells"] == 1
    described = summary["datasets"]["mass-spring"]
    assert {d["layout"] for d in described.values()} == {"npy (legacy)"}
    assert all(d["profile_settings"] for d in described.values())
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    old = json.loads((smoke / "results.json").read_text())["cells"]["mass-spring"]["hgn-determ"]
    new = summary["cells"]["mass-spring"]["hgn-determ"]
    assert new["paper"]["noisy"]["test"]["mse"] == pytest.approx(
        old["paper"]["noisy"]["test"]["mse"], rel=1e-5
    )


def test_hgnpp_long_run_has_its_own_data_and_budget() -> None:
    small = rep.PROFILES["small"]
    assert (small.hgnpp_steps, small.hgnpp_train_steps, small.hgnpp_minutes) == (64, 10_000, 20)
    assert rep.PROFILES["paper"].hgnpp_steps == 64
    smoke = rep.PROFILES["smoke"]
    assert smoke.steps < smoke.hgnpp_steps < 2 * smoke.steps  # stays tiny, but longer
    # Tables 1–2: HGN++ on the same terms as every row; its own run: its own budget
    same = cells.train_settings(small, "hgn++")
    assert (same["steps"], same["max_minutes"]) == (small.train_steps, small.max_minutes)
    own = cells.train_settings(small, "hgn++", long=True)
    assert (own["steps"], own["max_minutes"]) == (10_000, 20.0)
    assert own["batch_size"] == same["batch_size"] == small.hgnpp_train["batch_size"]
    assert "76 runs" in small.description


def test_results_of_a_profile_without_the_hgnpp_run_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "old"
    out.mkdir()
    settings = rep.PROFILES["smoke"].settings()
    for key in ("hgnpp_steps", "hgnpp_train_steps", "hgnpp_minutes"):
        del settings[key]
    (out / "profile.json").write_text(json.dumps(settings))
    assert main(["reproduce", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 2
    assert "with different settings" in capsys.readouterr().err


def test_default_threads() -> None:
    from hgn.experiments.reproduce import run

    assert run.default_threads("cpu", 1) == run.default_threads("cpu", 4) == 1
    if torch.cuda.is_available():
        assert run.default_threads("cuda", 1) >= run.default_threads("cuda", 64) == 1


def test_choose_validates_and_orders() -> None:
    assert rep.choose("hgn, hnn", rep.MODEL_ORDER, "model") == ["hnn", "hgn"]
    assert rep.choose(None, rep.SYSTEM_ORDER, "system") == list(rep.SYSTEM_ORDER)
    with pytest.raises(UserError, match="no system given"):
        rep.choose(" , ", rep.SYSTEM_ORDER, "system")


def test_paper_profile_is_the_published_scale() -> None:
    paper = rep.PROFILES["paper"]
    assert (paper.size, paper.steps, paper.n_train, paper.n_test) == (64, 30, 50_000, 10_000)
    assert (paper.batch_size, paper.lr, paper.dt) == (16, 1.5e-4, 0.125)
    assert dict(paper.hgn) == {"separable": True} and not paper.hnn  # the paper's networks
    assert (paper.long_steps, paper.start) == (90, 30)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(smoke: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip(
            "CHROMIUM IS NOT INSTALLED: the report rendering test did NOT run "
            "(install it with `apt-get install -y chromium`)"
        )
    page = smoke / "report.html"
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(
        r'id="image-check"[^>]*data-images="(\d+)"[^>]*data-broken="(\d+)"', result.stdout
    )
    assert match, "the page's image check did not run:\n" + result.stdout[:2000]
    images, broken = int(match.group(1)), int(match.group(2))
    assert images == page.read_text().count("<img ")
    assert broken == 0, re.search(r'id="image-check"[^<]*', result.stdout).group(0)
