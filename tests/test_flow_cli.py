"""`hgn flow ...` end to end, one test per command, with tiny budgets; bad input exits cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hgn.cli import main
from hgn.flows import load

TINY = ["--flow-steps", "2", "--hidden", "8", "--posterior-hidden", "8", "--batch-size", "32"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    torch.set_num_threads(1)
    out = str(tmp_path_factory.mktemp("flow") / "run")
    assert (
        main(["flow", "train", "--target", "8gaussians", "--out", out, "--steps", "30", *TINY]) == 0
    )
    return out


def test_train_writes_checkpoint_tensorboard_and_resumes(run: str, capsys) -> None:
    model = load(run)
    assert model.cfg.flow_steps == 2 and model.cfg.hidden == 8
    assert any((load.__globals__["Path"](run) / "tensorboard").iterdir())
    assert (
        main(
            [
                "flow",
                "train",
                "--target",
                "8gaussians",
                "--out",
                run,
                "--steps",
                "40",
                "--resume",
                *TINY,
            ]
        )
        == 0
    )
    assert "trained 40 steps" in capsys.readouterr().out


def test_evaluate_prints_nll_and_writes_eval_json(run: str, capsys) -> None:
    assert main(["flow", "evaluate", run, "--n-importance", "4", "--n-test", "100"]) == 0
    out = capsys.readouterr().out
    assert "test NLL" in out and "entropy 2.83" in out
    result = json.loads((load.__globals__["Path"](run) / "eval.json").read_text())
    assert result["n_test"] == 100 and np.isfinite(result["nll"]) and result["nll_se"] > 0


def test_sample_to_npy_and_png(run: str, tmp_path) -> None:
    assert main(["flow", "sample", run, "--n", "50", "--out", str(tmp_path / "s.npy")]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (50, 2) and np.isfinite(x).all()
    assert main(["flow", "sample", run, "--n", "500", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_writes_figure9(run: str, tmp_path) -> None:
    out = tmp_path / "fig9.png"
    assert main(["flow", "plot", run, "--out", str(out), "--n-importance", "2"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 20_000


def test_compare_writes_table_and_figure10(tmp_path, capsys) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "cmp"
    args = ["flow", "compare", "--target", "gmm", "--out", str(out), "--minutes", "0.01"]
    assert main([*args, "--n-test", "40", "--n-importance", "4", *TINY]) == 0
    table = json.loads((out / "compare.json").read_text())
    names = [r["model"] for r in table["rows"]]
    assert names == ["NHF-LF1", "NHF-LF2", "NHF-LF3", "RealNVP-2", "RealNVP-3"]
    nhf_params = table["rows"][0]["parameters"]
    for row in table["rows"]:
        assert abs(row["parameters"] - nhf_params) / nhf_params < 0.1  # matched sizes
        assert np.isfinite(row["nll"]) and row["samples_per_s"] > 0 and row["log_prob_per_s"] > 0
    assert (out / "figure10.png").exists() and "| NHF-LF1 |" in (out / "compare.md").read_text()
    assert "RealNVP-3" in capsys.readouterr().out


def _bad(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hgn: error: ") and "\n" not in err  # one clear line
    return err


def test_bad_input_one_line_errors(run: str, tmp_path, capsys) -> None:
    train = ["flow", "train", "--out", str(tmp_path / "r"), "--steps", "2", *TINY]
    assert "unknown target 'nope'" in _bad([*train, "--target", "nope"], capsys)
    for name, array in {
        "nan.npy": np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0]]),
        "one.npy": np.zeros((1, 2)),
        "empty.npy": np.zeros((0, 2)),
    }.items():
        np.save(tmp_path / name, array)
        _bad([*train, "--target", str(tmp_path / name)], capsys)
    assert "sigma" in _bad(
        [*train, "--target", "moons", "--prior", "soft-uniform", "--sigma", "0"], capsys
    )
    assert "beta" in _bad(
        [*train, "--target", "moons", "--prior", "soft-uniform", "--beta", "-1"], capsys
    )
    np.save(tmp_path / "d3.npy", np.zeros((10, 3)))
    assert "expects (N, 2)" in _bad(
        ["flow", "evaluate", run, "--target", str(tmp_path / "d3.npy")], capsys
    )
    assert "already holds a run" in _bad(
        ["flow", "train", "--target", "moons", "--out", run, *TINY], capsys
    )
    assert "no checkpoint" in _bad(["flow", "evaluate", str(tmp_path / "none")], capsys)
    assert ".npy or .png" in _bad(
        ["flow", "sample", run, "--n", "5", "--out", str(tmp_path / "x.txt")], capsys
    )
