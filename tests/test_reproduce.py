"""`hgn reproduce`: the smoke profile end to end, resuming, refusals, and the report
rendered in headless Chromium."""

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


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke run over all four systems and six models, shared by the tests below."""
    out = tmp_path_factory.mktemp("smoke") / "results"
    torch.manual_seed(0)
    assert main(["reproduce", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out


def _numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


def test_every_cell_is_filled_with_finite_numbers(smoke: Path) -> None:
    summary = json.loads((smoke / "results.json").read_text())
    assert summary["requested_cells"] == summary["finished_cells"] == 24
    cells = summary["cells"]
    assert sorted(cells) == sorted(rep.SYSTEM_ORDER)
    for system in rep.SYSTEM_ORDER:
        assert sorted(cells[system]) == sorted(rep.MODEL_ORDER)
        for model, record in cells[system].items():
            for split in ("train", "test"):
                stats = record["paper"][split]
                assert len(stats["mse_per_step"]) == rep.PROFILES["smoke"].steps + 1
                assert stats["mse"] > 0
            prefix = record["prefix"]
            assert len(prefix["mse_per_step"]) == rep.PROFILES["smoke"].horizon
            assert 0 <= prefix["vpt"] <= prefix["horizon"]
            values = _numbers(record)
            assert values and all(math.isfinite(v) for v in values), (system, model)
    for table, extra in (("table1.md", 1), ("table2.md", 0), ("prefix.md", 0)):
        rows = [line for line in (smoke / table).read_text().splitlines() if line.startswith("| ")]
        assert len(rows) == 1 + len(rep.MODEL_ORDER) + extra  # header, models, reference
        assert not any("—" in row or "n/a" in row for row in rows[1:]), table


def test_tables_carry_the_published_values(smoke: Path) -> None:
    table = (smoke / "table1.md").read_text()
    hgn_row = next(line for line in table.splitlines() if line.startswith("| HGN |"))
    assert "[3.84]" in hgn_row and "[9.80]" in hgn_row  # mass-spring train, three-body test


def test_report_references_only_files_that_exist(smoke: Path) -> None:
    page = (smoke / "report.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len([x for x in links if x.endswith(".gif")]) == 24
    assert any("fig6" in x for x in links) and any("fig8" in x for x in links)
    for link in links:
        assert not re.match(r"^[a-z]+:|^/", link), f"non-relative link {link}"
        assert (smoke / link).is_file(), f"report.html references missing {link}"


def test_rerun_skips_finished_cells(smoke: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in smoke.glob("cells/*/*/result.json")}

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(cells, "run_cell", no_training)
    summary = rep.reproduce(smoke, "smoke", progress=False)
    assert summary["finished_cells"] == 24
    assert {p: p.stat().st_mtime_ns for p in smoke.glob("cells/*/*/result.json")} == before


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


def test_results_directory_from_before_the_marker_is_adopted(tmp_path: Path) -> None:
    """A results directory an older hgn wrote (profile.json, no marker) still resumes."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "profile.json").write_text(json.dumps(rep.PROFILES["smoke"].settings()))
    rep.reproduce(out, "smoke", systems="pendulum", models="hgn-determ", progress=False)
    assert (out / "cells" / "pendulum" / "hgn-determ" / "result.json").is_file()
    assert json.loads((out / OUTPUT_MARKER).read_text())["written_by"] == "hgn reproduce"


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


def test_interrupted_cell_resumes_and_is_recorded_only_when_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    real = cells._paper_metrics

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cells, "_paper_metrics", crash)
    with pytest.raises(KeyboardInterrupt):
        rep.reproduce(out, "smoke", systems="pendulum", models="hnn", progress=False)
    cell = out / "cells" / "pendulum" / "hnn"
    assert (cell / "run" / "checkpoint.pt").is_file()
    assert not (cell / "result.json").exists()
    monkeypatch.setattr(cells, "_paper_metrics", real)
    summary = rep.reproduce(out, "smoke", systems="pendulum", models="hnn", progress=False)
    assert summary["finished_cells"] == 1
    record = json.loads((cell / "result.json").read_text())
    assert record["train"]["paper"]["steps"] == rep.PROFILES["smoke"].train_steps


def test_parallel_jobs_fill_cells_and_keep_logs(tmp_path: Path) -> None:
    out = tmp_path / "r"
    summary = rep.reproduce(
        out, "smoke", systems="pendulum", models="hnn,hgn-determ", jobs=2, progress=False
    )
    assert summary["finished_cells"] == 2
    for model in ("hnn", "hgn-determ"):
        assert "train" in (out / "cells" / "pendulum" / model / "log.txt").read_text()
    with pytest.raises(UserError, match="--jobs must be a positive integer"):
        rep.reproduce(out, "smoke", jobs=0)


def test_partial_report_is_labelled(tmp_path: Path) -> None:
    out = tmp_path / "r"
    rep.reproduce(out, "smoke", systems="mass-spring", models="hnn", progress=False)
    (out / "cells" / "mass-spring" / "hnn" / "result.json").unlink()
    summary = rep.build_outputs(
        out, rep.PROFILES["smoke"], [("mass-spring", "hnn"), ("mass-spring", "hgn")], "test"
    )
    assert summary["finished_cells"] == 0
    assert "Partial results: 0 of 2" in (out / "report.html").read_text()
    assert "—" in (out / "table1.md").read_text()


class _Oracle(torch.nn.Module):
    """A stand-in model whose prediction is a fixed answer: the truth or the mean frame."""

    def __init__(self, answer: torch.Tensor) -> None:
        super().__init__()
        self.answer = answer
        self.seen = 0

    def predict(self, frames: torch.Tensor, steps: int, dt: float | None = None) -> dict:
        batch = self.answer[self.seen : self.seen + frames.shape[0], : steps + 1]
        self.seen += frames.shape[0]
        return {"images": batch, "energy": torch.zeros(batch.shape[:2])}


def test_valid_prediction_time_of_perfect_and_collapsed_models(tmp_path: Path) -> None:
    from hgn import data

    profile = rep.PROFILES["smoke"]
    path = data.generate(
        tmp_path / "d",
        system="mass-spring",
        n_train=1,
        n_test=6,
        steps=profile.context + profile.horizon - 1,
        size=16,
        progress=False,
    )
    split = data.load(path, "test")
    truth = torch.from_numpy(np.array(split.images)).permute(0, 1, 4, 2, 3).float() / 255
    mean = truth.mean((0, 1))
    cpu = torch.device("cpu")
    perfect = cells._prefix_metrics(_Oracle(truth), split, mean, profile, cpu)
    assert perfect["mse"] == 0 and perfect["vpt"] == profile.horizon
    assert len(perfect["mse_per_step"]) == profile.horizon
    collapsed = cells._prefix_metrics(_Oracle(mean.expand_as(truth)), split, mean, profile, cpu)
    assert collapsed["vpt"] == 0
    assert collapsed["mse"] == pytest.approx(collapsed["mean_frame_mse"])
    floor, c = collapsed["noise_floor_mse"], profile.context
    mean_image = float((truth[:, c:] - mean).square().mean())
    assert 0 < floor < mean_image
    assert collapsed["threshold"] == pytest.approx(
        floor + rep.VPT_FRACTION * (mean_image - floor), rel=1e-5
    )


def test_choose_validates_and_orders() -> None:
    assert rep.choose("hgn, hnn", rep.MODEL_ORDER, "model") == ["hnn", "hgn"]
    assert rep.choose(None, rep.SYSTEM_ORDER, "system") == list(rep.SYSTEM_ORDER)
    with pytest.raises(UserError, match="no system given"):
        rep.choose(" , ", rep.SYSTEM_ORDER, "system")


def test_paper_profile_is_the_published_scale() -> None:
    paper = rep.PROFILES["paper"]
    assert (paper.size, paper.steps, paper.n_train, paper.n_test) == (64, 30, 50_000, 10_000)
    assert (paper.batch_size, paper.lr, paper.dt) == (16, 1.5e-4, 0.125)
    assert not paper.hgn and not paper.hnn  # the models' own (paper) defaults
    assert (paper.context, paper.horizon) == (5, 60)


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
