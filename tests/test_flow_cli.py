"""`hgn flow ...` end to end, one test per command, with tiny budgets; bad input exits cleanly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_FLOW as TINY

from hgn.cli import main
from hgn.flows import load
from hgn.flows.train import STEP_CAP
from hgn.runs import CHECKPOINT
from hgn.utils import load_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("flow") / "run")
    assert (
        main(["flow", "train", "--target", "8gaussians", "--out", out, "--steps", "30", *TINY]) == 0
    )
    return out


def test_train_writes_checkpoint_tensorboard_and_resumes(run: str, capsys) -> None:
    model = load(run)
    assert model.cfg.flow_steps == 2 and model.cfg.hidden == 8
    assert any((Path(run) / "tensorboard").iterdir())
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
    assert "trained 10 steps in this run, 40 in all" in capsys.readouterr().out


def test_evaluate_prints_nll_and_writes_eval_json(run: str, capsys) -> None:
    assert main(["flow", "evaluate", run, "--n-importance", "4", "--n-test", "100"]) == 0
    out = capsys.readouterr().out
    assert "test NLL" in out and "entropy 2.83" in out
    result = json.loads((Path(run) / "eval.json").read_text())
    assert result["n_test"] == 100 and np.isfinite(result["nll"]) and result["nll_se"] > 0


def test_sample_to_npy_and_png(run: str, tmp_path) -> None:
    assert main(["flow", "sample", run, "--n", "50", "--out", str(tmp_path / "s.npy")]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (50, 2) and np.isfinite(x).all()
    assert main(["flow", "sample", run, "--n", "500", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_plot_writes_figure9(run: str, tmp_path) -> None:
    out = tmp_path / "fig9.png"
    assert main(["flow", "plot", run, "--out", str(out), "--n-importance", "2"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 20_000


@pytest.mark.slow
def test_compare_writes_table_time_to_nll_and_figure10(tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    args = ["flow", "compare", "--target", "gmm", "--out", str(out), "--minutes", "0.01"]
    models = ["--models", "NHF-LF1,NHF-LF2,RealNVP-2,NSF-2", "--reference", "RealNVP-2"]
    assert main([*args, *models, "--n-test", "40", "--n-importance", "4", *TINY]) == 0
    table = json.loads((out / "compare.json").read_text())
    names = [r["model"] for r in table["rows"]]
    assert names == ["NHF-LF1", "NHF-LF2", "RealNVP-2", "NSF-2"]
    nhf_params = table["rows"][0]["parameters"]
    for row in table["rows"]:
        assert abs(row["parameters"] - nhf_params) / nhf_params < 0.1  # matched sizes
        assert np.isfinite(row["nll"]) and row["samples_per_s"] > 0 and row["log_prob_per_s"] > 0
        times = [point[0] for point in row["curve"]]
        assert times and times == sorted(times)  # test NLL against training time
        assert row["curve"][-1][1] == row["steps"]  # the last point is the trained model
        saved = load_checkpoint(out / row["model"] / CHECKPOINT)["config"]["train"]
        assert saved["steps"] is None and saved["max_minutes"] == 0.01  # all on the clock
    assert table["level_of"] == "RealNVP-2" and table["level"] == table["rows"][2]["nll"]
    assert table["rows"][2]["time_to_level"] is not None and table["first"] in names
    assert (out / "figure10.png").exists() and "| NHF-LF1 |" in (out / "compare.md").read_text()
    assert "s to level" in capsys.readouterr().out
    # an interrupted compare picks up finished models instead of training them again
    assert main([*args, *models, "--n-test", "40", "--n-importance", "4", *TINY]) == 0
    again = json.loads((out / "compare.json").read_text())
    assert [r["nll"] for r in again["rows"]] == [r["nll"] for r in table["rows"]]


def _bad(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hgn: error: ") and "\n" not in err  # one clear line
    return err


def test_bad_input_one_line_errors(run: str, tmp_path, capsys) -> None:
    train = ["flow", "train", "--out", str(tmp_path / "r"), "--steps", "2", *TINY]
    assert "unknown target 'nope'" in _bad([*train, "--target", "nope"], capsys)
    assert not (tmp_path / "r").exists()  # refused before anything was written
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


def test_new_targets_bad_input(run: str, tmp_path, capsys) -> None:
    """A target of the wrong dimension for a trained run, an unknown target, .npy files
    with NaN or one row (issue 13): one line, exit 2, for every command that reads them."""
    assert "expects (N, 2)" in _bad(["flow", "evaluate", run, "--target", "gmm10"], capsys)
    assert "expects (N, 2)" in _bad(["flow", "plot", run, "--target", "gmm10"], capsys)
    assert "unknown target 'gmm11'" in _bad(["flow", "evaluate", run, "--target", "gmm11"], capsys)
    resume = ["flow", "train", "--target", "moons", "--out", run, "--resume", *TINY]
    assert "trained on '8gaussians'" in _bad(resume, capsys)
    np.save(tmp_path / "img_nan.npy", np.array([[[0.0, np.nan]], [[1.0, 2.0]], [[1.0, 2.0]]]))
    np.save(tmp_path / "img_one.npy", np.zeros((1, 3, 3)))
    train = ["flow", "train", "--out", str(tmp_path / "r"), "--steps", "2", *TINY]
    assert "NaN or Inf" in _bad([*train, "--target", str(tmp_path / "img_nan.npy")], capsys)
    assert "1 rows" in _bad([*train, "--target", str(tmp_path / "img_one.npy")], capsys)
    np.save(tmp_path / "nan2.npy", np.array([[0.0, np.nan], [1.0, 2.0], [1.0, 2.0]]))
    np.save(tmp_path / "one2.npy", np.zeros((1, 2)))
    for name, message in (("nan2.npy", "NaN or Inf"), ("one2.npy", "1 rows")):
        for command in (["evaluate", run], ["plot", run]):
            assert message in _bad(["flow", *command, "--target", str(tmp_path / name)], capsys)
    assert "unknown target 'gmm11'" in _bad([*train, "--target", "gmm11"], capsys)
    assert "--lr must be" in _bad([*train, "--target", "moons", "--lr", "nan"], capsys)
    assert "--warmup must be" in _bad([*train, "--target", "moons", "--warmup", "1"], capsys)
    assert "--models" in _bad(
        ["flow", "compare", "--target", "moons", "--out", str(tmp_path / "c"), "--models", "X"],
        capsys,
    )
    assert not (tmp_path / "c").exists()  # refused before anything was written


@pytest.mark.slow
def test_commands_never_replace_what_they_did_not_write(run: str, tmp_path, capsys) -> None:
    """Issue 9, defect 1: every writing flow command against a user's files."""
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    for argv in (
        ["flow", "train", "--target", "moons", "--out", str(user), "--steps", "2", *TINY],
        ["flow", "compare", "--target", "moons", "--out", str(user), "--minutes", "0.01", *TINY],
    ):
        assert "hgn did not write" in _bad(argv, capsys)
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    hgn_run = tmp_path / "hgn-run"  # another command's checkpoint is not resumed
    hgn_run.mkdir()
    torch.save({"config": {"model": {"name": "hgn"}}, "state": {}}, hgn_run / "checkpoint.pt")
    resume = ["flow", "train", "--target", "moons", "--out", str(hgn_run), "--resume", *TINY]
    assert "not a flow run" in _bad(resume, capsys)
    assert "holds the output of `hgn flow train`" in _bad(
        ["flow", "compare", "--target", "moons", "--out", run, "--minutes", "0.01", *TINY], capsys
    )
    picture, array = user / "picture.png", user / "samples.npy"
    picture.write_text("user's picture")
    array.write_text("user's array")
    assert "--overwrite" in _bad(["flow", "sample", run, "--n", "5", "--out", str(array)], capsys)
    assert "--overwrite" in _bad(["flow", "plot", run, "--out", str(picture)], capsys)
    assert picture.read_text() == "user's picture" and array.read_text() == "user's array"
    assert main(["flow", "sample", run, "--n", "5", "--out", str(array), "--overwrite"]) == 0
    assert np.load(array).shape == (5, 2)
    # a directory hgn did not mark: evaluate adds its eval.json but never replaces one
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copy(Path(run) / "checkpoint.pt", foreign / "checkpoint.pt")
    (foreign / "eval.json").write_text("user's")
    assert main(["flow", "evaluate", str(foreign), "--n-importance", "2", "--n-test", "20"]) == 0
    assert (foreign / "eval.json").read_text() == "user's"
    assert "did not write eval.json" in capsys.readouterr().out
    assert "pass --out" in _bad(["flow", "plot", str(foreign / "checkpoint.pt")], capsys)


@pytest.mark.slow
def test_saved_models_work_with_every_command(tmp_path, capsys) -> None:
    """Issue 9, defect 5: hgn.flows.save writes what evaluate, sample and plot read."""
    from hgn.flows import NHF, NHFConfig, save

    torch.manual_seed(0)
    save(NHF(NHFConfig(2, flow_steps=1, hidden=8, posterior_hidden=8)), tmp_path / "m.pt")
    model = str(tmp_path / "m.pt")
    assert "pass --target" in _bad(["flow", "evaluate", model], capsys)
    assert "pass --target" in _bad(
        ["flow", "plot", model, "--out", str(tmp_path / "p.png")], capsys
    )
    assert main(["flow", "evaluate", model, "--target", "moons", "--n-importance", "2",
                 "--n-test", "30"]) == 0  # fmt: skip
    assert "moons: test NLL" in capsys.readouterr().out
    out = tmp_path / "fig.png"
    assert main(["flow", "plot", model, "--target", "moons", "--out", str(out),
                 "--n-importance", "1"]) == 0  # fmt: skip
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["flow", "sample", model, "--n", "10", "--out", str(tmp_path / "s.npy")]) == 0


def test_max_minutes_on_resume_counts_from_this_invocation(tmp_path, capsys) -> None:
    """Issue 9, defect 4: a run that has used 10 minutes resumes with --minutes 1 and
    trains; without --minutes what is left of its saved budget (none) applies."""
    out = str(tmp_path / "r")
    train = ["flow", "train", "--target", "moons", "--out", out, *TINY, "--no-tensorboard"]
    assert main([*train, "--steps", "3", "--minutes", "5"]) == 0
    ckpt = tmp_path / "r" / "checkpoint.pt"
    saved = torch.load(ckpt, weights_only=True)
    saved["seconds"] = 600.0  # as if training had taken 10 minutes
    torch.save(saved, ckpt)
    capsys.readouterr()
    assert main([*train, "--steps", "6", "--resume"]) == 0
    assert "trained 0 steps in this run, 3 in all" in capsys.readouterr().out
    assert main([*train, "--steps", "6", "--resume", "--minutes", "1"]) == 0
    assert "trained 3 steps in this run, 6 in all" in capsys.readouterr().out


@pytest.mark.slow
def test_progress_against_the_budget_that_ends_the_run(tmp_path, capsys) -> None:
    """Issue 9, defect 11: a time-limited flow run shows its bar in seconds of budget, not
    an ETA for the default steps; --no-progress shows none (train, evaluate, compare)."""
    base = ["flow", "train", "--target", "moons", "--no-tensorboard", "--flow-steps", "1",
            "--hidden", "8", "--posterior-hidden", "8", "--batch-size", "16",
            "--no-compile"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "a"), "--minutes", "0.002"]) == 0
    err = capsys.readouterr().err
    # the bar counts seconds of budget; the step count only appears in its postfix
    assert "s budget" in err and f"/{STEP_CAP} [" not in err
    assert main([*base, "--out", str(tmp_path / "b"), "--steps", "2", "--no-progress"]) == 0
    assert main(["flow", "evaluate", str(tmp_path / "b"), "--n-importance", "256",
                 "--n-test", "2000", "--no-progress"]) == 0  # fmt: skip
    assert main(["flow", "plot", str(tmp_path / "b"), "--no-progress"]) == 0
    assert "it/s" not in capsys.readouterr().err


@pytest.mark.slow
def test_digits_train_evaluate_and_sample_grid(tmp_path, capsys) -> None:
    pytest.importorskip("sklearn")
    out = str(tmp_path / "d")
    assert main(["flow", "train", "--target", "digits", "--out", out, "--steps", "3", *TINY]) == 0
    assert main(["flow", "evaluate", out, "--n-importance", "2", "--n-test", "50"]) == 0
    line = capsys.readouterr().out
    assert "digits: test NLL" in line and "nats/dim" in line
    assert main(["flow", "plot", out]) == 0
    assert (Path(out) / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert "expects (N, 64)" in _bad(["flow", "evaluate", out, "--target", "gmm"], capsys)
    assert load(out).logit == 1e-6  # the digits' own logit map, saved with the run
    np.save(tmp_path / "wide.npy", np.full((4, 64), 2.0))  # right shape, outside [0, 1]
    wide = ["flow", "evaluate", out, "--target", str(tmp_path / "wide.npy")]
    assert "needs points in [0, 1]" in _bad(wide, capsys)
    bad = ["flow", "train", "--target", "moons", "--out", str(tmp_path / "m"), "--logit", "0.1"]
    assert "needs points in [0, 1]" in _bad([*bad, "--steps", "1", *TINY], capsys)
    bad[-1] = "0.5"
    assert "--logit must be" in _bad([*bad, "--steps", "1", *TINY], capsys)
    assert not (tmp_path / "m").exists()  # refused before anything was written


def test_a_compiled_gradient_unlike_eager_falls_back_to_eager(
    tmp_path, monkeypatch, capsys
) -> None:
    """The first compiled step is checked against eager on the same batch and draws: a
    compiler that runs but computes another gradient (here: a stub scaling the loss by
    1.5; inductor did so for zuko's NSF) gives one warning and an eager run that trains
    on eager's gradients, the same weights as --no-compile; a faithful one gives none."""
    small = [a for a in TINY if a != "--no-compile"]
    args = ["flow", "train", "--target", "moons", "--steps", "3", *small, "--no-tensorboard"]
    assert main([*args, "--out", str(tmp_path / "eager"), "--no-compile"]) == 0
    for name, stub in (
        ("wrong", lambda fn, **kw: lambda *a: fn(*a) * 1.5),
        ("faithful", lambda fn, **kw: fn),
    ):
        monkeypatch.setattr(torch, "compile", stub)
        capsys.readouterr()
        assert main([*args, "--out", str(tmp_path / name), "--compile"]) == 0
        err = capsys.readouterr().err
        assert err.count("differs from eager's") == (name == "wrong"), err
    eager = torch.load(tmp_path / "eager" / "checkpoint.pt", weights_only=True)["state"]["model"]
    for name in ("wrong", "faithful"):
        ran = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["state"]["model"]
        for key, value in eager.items():
            torch.testing.assert_close(ran[key], value, rtol=0, atol=0)


def test_train_compiles_when_asked_or_long_enough_and_falls_back_to_eager(
    tmp_path, monkeypatch, capsys
) -> None:
    """`flow train` compiles with --compile, and by default only a run long enough to
    repay the compilation (a 2-step run does not); a compiler that fails (here: a stub,
    so the test costs no compilation) gives one warning line and an eager run that
    succeeds. The saved config records what was asked for (None: the default), so
    --resume keeps it."""

    def broken(fn, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("no working C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    small = [a for a in TINY if a != "--no-compile"]
    cases = (("default", [], 0, None), ("compile", ["--compile"], 1, True))
    for name, extra, warnings, recorded in (*cases, ("eager", ["--no-compile"], 0, False)):
        out = tmp_path / name
        args = ["flow", "train", "--target", "moons", "--out", str(out), "--steps", "2"]
        assert main([*args, *small, *extra, "--no-tensorboard"]) == 0
        err = capsys.readouterr().err
        assert err.count("torch.compile failed") == warnings
        saved = torch.load(out / "checkpoint.pt", weights_only=True)["config"]["train"]
        assert saved["compile"] is recorded


def test_flow_train_has_the_config_system_of_hgn_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--print-config writes what --config reads back; the run keeps it as config.yaml;
    --set overrides one key; the options typed beat the file; --resume refuses any
    override in one line, where it used to ignore it silently."""
    assert main(["flow", "train", "--print-config", "--hidden", "8"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "c.yaml").write_text(printed.replace("layers: 2", "layers: 1"))
    run = tmp_path / "r"
    argv = ["flow", "train", "--config", str(tmp_path / "c.yaml"), "--target", "moons"]
    argv += ["--out", str(run), "--steps", "2", "--no-compile", "--no-progress"]
    assert main([*argv, "--set", "model.flow_steps=2", "--flow-steps", "3"]) == 0
    kept = yaml.safe_load((run / "config.yaml").read_text())
    assert (kept["model"]["hidden"], kept["model"]["layers"]) == (8, 1)
    assert kept["model"]["flow_steps"] == 2  # --set comes last
    assert kept["target"] == "moons" and kept["train"]["steps"] == 2
    saved = load_checkpoint(run / CHECKPOINT)["config"]
    assert saved["model"]["hidden"] == 8 and saved["model"]["layers"] == 1
    resume = ["flow", "train", "--target", "moons", "--out", str(run), "--resume"]
    assert "drop the overrides (--hidden)" in _bad([*resume, "--hidden", "32"], capsys)
    assert main([*resume, "--steps", "3", "--no-progress"]) == 0  # a budget is no override
    (tmp_path / "bad.yaml").write_text("model:\n  nope: 1\n")
    bad = ["flow", "train", "--config", str(tmp_path / "bad.yaml"), "--print-config"]
    assert "unknown config key model.nope" in _bad(bad, capsys)
