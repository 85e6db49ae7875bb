"""The extrapolation protocol: its plan and refusals, the simulator's truth at any time,
scoring (a perfect oracle scores 0 and the full valid time), a tiny model end to end,
and the CLI (`hgn evaluate --protocol extrapolate`, `hgn rollout`, samples in metrics)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from helpers import TINY_HGN as TINY
from helpers import TINY_HGNPP, model_sets, set_args, short_drift, tiny_dataset, tiny_model

from hgn import data as hgn_data
from hgn.cli import main
from hgn.data import mean_frame, to_frames
from hgn.evaluation import extrapolate as ex
from hgn.evaluation import physics
from hgn.evaluation.metrics import score
from hgn.evaluation.pictures import rollout_pictures
from hgn.evaluation.reports import FILES, markdown
from hgn.evaluation.truth import Truth
from hgn.models import get_model
from hgn.utils import UserError

STEPS = 12
ROWS = slice(0, 4)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "clean"
    return tiny_dataset(out, "mass-spring", n_train=4, n_test=4, steps=STEPS, noise=0)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "noisy"
    return tiny_dataset(out, "two-body", n_train=2, n_test=3, steps=6)


@pytest.fixture(scope="module")
def run(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    sets = [*model_sets(TINY), "train.batch_size=2"]
    argv = ["train", "--data", str(clean), "--out", str(out), "--steps", "2", "--no-progress"]
    argv += ["--model", "hgn"]  # the tiny conv HGN (the small profile's default is HGN++)
    assert main([*argv, *set_args(sets)]) == 0
    return out


def tiny(**extra: object) -> torch.nn.Module:
    return tiny_model("hgn", TINY, **extra).eval()


def error_of(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run a command that must fail: exit 2, one line `hgn: error: ...`, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hgn: error: "), err
    return err[0]


# ----------------------------------------------------------------------------- plan


def test_plan_of_the_issue_protocol() -> None:
    assert ex.plan(91, 30, 31, 0) == {
        "s0": 30,
        "forward": 60,
        "backward": 30,
        "2x": 30,
        "half": 60,
    }
    # HGN++-like: five frames read, the state at the last of them
    assert ex.plan(91, 30, 5, 4) == {"s0": 34, "forward": 56, "backward": 34, "2x": 28, "half": 56}


@pytest.mark.parametrize(
    ("frames", "start", "context", "words"),
    [
        (91, -1, 31, "--start must be a non-negative integer"),
        (31, 30, 1, "too short for the protocol"),
        (31, 40, 5, "past the last frame (30)"),
        (61, 31, 31, "runs past the last frame (60); use --start ≤ 30"),
        (91, 0, 5, "no earlier frame to roll backward to"),
    ],
)
def test_plan_refuses_windows_that_do_not_fit(
    frames: int, start: int, context: int, words: str
) -> None:
    with pytest.raises(UserError) as caught:
        ex.plan(frames, start, context, 0)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------- truth


def batch(path: Path, n: int = 4) -> tuple[hgn_data.Split, np.ndarray, np.ndarray, np.ndarray]:
    split = hgn_data.load(path, "test")
    return split, np.array(split.images[:n]), np.array(split.q[:n]), np.array(split.p[:n])


def test_truth_between_and_before_frames_is_the_simulators(clean: Path) -> None:
    split, images, q, p = batch(clean)
    truth = Truth(split)
    assert truth.resimulates and truth.render_error == 0 and truth.simulation_error < 1e-5
    frames, states, available = truth.frames(images, q, p, 3, 0.5, 8, "t", ROWS)
    assert available.all() and frames.shape == (4, 9, 16, 16, 3)
    np.testing.assert_array_equal(frames[:, ::2], images[:, 3:8])  # stored where stored
    system = truth.system
    energy = system.hamiltonian(torch.from_numpy(states), torch.zeros(1)).numpy()
    assert states[:, 1::2].std() > 0
    # the half-frame states are on the true orbit: mass-spring positions stay within
    # the amplitude sqrt(H), and the picture shows them where they are
    h0 = system.hamiltonian(torch.from_numpy(q[:, 3]).double(), torch.from_numpy(p[:, 3]).double())
    assert (np.abs(states[..., 0]) <= np.sqrt(h0.numpy())[:, None] + 1e-6).all()
    assert energy.shape == (4, 9)
    seen = physics.recover(frames, system).bodies()
    err = physics.position_rms(seen, physics.true_positions(system, states))
    assert err.max() < 0.5 / physics.Canvas.of(system, 16).scale
    # backward past frame 0: simulated too
    back, _, available = truth.frames(images, q, p, 2, -1.0, 5, "b", ROWS)
    assert available.all()
    np.testing.assert_array_equal(back[:, :3], images[:, 2::-1])


def test_noisy_truth_draws_its_noise_from_a_recorded_seed(noisy: Path) -> None:
    split, images, q, p = batch(noisy, 3)
    truth = Truth(split)
    assert truth.resimulates  # the stored noisy states render to the stored frames
    a, _, _ = truth.frames(images, q, p, 2, 0.5, 6, "k", ROWS)
    b, _, _ = truth.frames(images, q, p, 2, 0.5, 6, "k", ROWS)
    c, _, _ = truth.frames(images, q, p, 2, 0.5, 6, "other", ROWS)
    np.testing.assert_array_equal(a, b)
    assert (a[:, 1::2] != c[:, 1::2]).any()
    np.testing.assert_array_equal(a[:, ::2], c[:, ::2])


def test_without_a_trusted_simulator_only_stored_frames_count(clean: Path) -> None:
    split, images, q, p = batch(clean)
    truth = Truth(split)
    truth.render_error = 9  # as if the frames were not this system's rendering
    _, states, available = truth.frames(images, q, p, 3, 0.5, 8, "t", ROWS)
    assert available.tolist() == [True, False] * 4 + [True]
    assert np.isnan(states[:, 1::2]).all()
    mse = np.where(available, 1e-3, np.nan) * np.ones((4, 1))
    scored = score(mse, np.full((4, 9), 4e-3), available)
    assert scored["per_step_mse"][1] is None and scored["ratio"] == pytest.approx(0.25)


# ----------------------------------------------------------------------------- scoring


def test_perfect_oracle_scores_zero_and_the_full_valid_time(clean: Path) -> None:
    """Feeding the truth as the prediction: ratio 0, valid for every step."""
    split, images, q, p = batch(clean)
    truth = Truth(split)
    mean = mean_frame(hgn_data.load(clean, "train"))
    for r in ex.ROLLOUTS:
        steps = ex.plan(STEPS + 1, 3, 1, 0)[r.name]
        frames, _, available = truth.frames(images, q, p, 3, r.speed, steps, r.name, ROWS)
        target = to_frames(frames, "cpu")
        mse = (target - target).square().mean((2, 3, 4)).numpy()
        base = (target - mean).square().mean((2, 3, 4)).numpy()
        scored = score(mse, base, available)
        assert scored["ratio"] == 0.0
        assert scored["vpt_mean"] == steps and scored["vpt_full_fraction"] == 1.0
        # and the mean image itself scores exactly 1
        assert score(base, base, available)["ratio"] == pytest.approx(1.0)


def test_valid_prediction_time_counts_steps_before_the_first_crossing() -> None:
    base = np.full((3, 6), 1.0)
    mse = np.array(
        [
            [9, 0.1, 0.2, 0.6, 0.1, 0.1],  # step 3 crosses ½: 2 valid steps (step 0 ignored)
            [0, 0.1, 0.1, 0.1, 0.1, 0.1],  # never: all 5
            [0, 0.7, 0.1, 0.1, 0.1, 0.1],  # at once: 0
        ]
    )
    scored = score(mse, base, np.ones(6, bool))
    assert scored["vpt_mean"] == pytest.approx((2 + 5 + 0) / 3)
    # on noisy data the threshold sits between the floor and the mean image
    noisy = score(mse, base, np.ones(6, bool), floor=0.4)
    assert noisy["per_step_threshold"][1] == pytest.approx(0.7)
    assert noisy["vpt_mean"] == pytest.approx((5 + 5 + 5) / 3)


# ----------------------------------------------------------------------------- model


def test_protocol_on_a_tiny_untrained_model(clean: Path) -> None:
    split = hgn_data.load(clean, "test")
    mean = mean_frame(hgn_data.load(clean, "train"))
    results, pictures = ex.run_protocol(
        tiny(), split, mean, start=3, batch_size=3, drift_steps=20, progress=False
    )
    plan = ex.plan(STEPS + 1, 3, 7, 0)
    assert results["state_frame"] == 3 and results["sequences"] == 4
    for r in ex.ROLLOUTS:
        got = results["rollouts"][r.name]
        assert got["steps"] == plan[r.name]
        assert len(got["per_step_mse"]) == len(got["per_step_position_rms"]) == plan[r.name] + 1
        assert np.isfinite(got["ratio"]) and got["ratio"] > 0
        assert 0 <= got["vpt_mean"] <= got["steps"]
        assert got["position_rms"] >= 0 and got["position_rms_truth_frames"] < 0.2
        assert pictures[r.name].shape == (plan[r.name] + 1, 16, 16, 3)
    assert results["energy_drift"]["steps"] == 20 and results["energy_drift"]["sequences"] == 4
    assert results["reversible"]["how"] == "measured round trip"
    strip, movie = rollout_pictures(pictures, results)
    assert strip.shape[0] == 5 and movie.shape[0] == STEPS + 1


def test_a_backward_window_of_its_own_rolls_back_from_the_end(clean: Path) -> None:
    """``backward_start="end"``: the backward rollout reads the last window and rolls back
    to frame 0, scored exactly as a protocol started there scores it; the forward
    rollouts keep their window."""
    split = hgn_data.load(clean, "test")
    mean = mean_frame(hgn_data.load(clean, "train"))
    model, kw = tiny(), {"batch_size": 3, "drift_steps": 5, "progress": False}
    both, pictures = ex.run_protocol(model, split, mean, start=3, backward_start="end", **kw)
    end = STEPS + 1 - model.context_frames
    there, _ = ex.run_protocol(model, split, mean, start=end, **kw)
    back = both["rollouts"]["backward"]
    assert both["backward_start"] == end and back["steps"] == end and back["frames"] == [end, 0]
    assert back["per_step_mse"] == there["rollouts"]["backward"]["per_step_mse"]
    assert both["rollouts"]["forward"]["steps"] == STEPS - 3
    assert pictures["backward"].shape[0] == end + 1
    assert "reads a window of its own from frame" in markdown(both)
    strip, _ = rollout_pictures(pictures, both)
    assert strip.shape[0] == 5


def test_an_irreversible_integrator_still_gets_numbers_and_says_so(clean: Path) -> None:
    split = hgn_data.load(clean, "test")
    mean = mean_frame(hgn_data.load(clean, "train"))
    model = tiny(integrator="euler")
    results, _ = ex.run_protocol(model, split, mean, start=3, drift_steps=10, progress=False)
    assert results["reversible"]["reversible"] is False
    assert results["reversible"]["declared"] is False
    assert np.isfinite(results["rollouts"]["backward"]["ratio"])
    text = markdown(results)
    assert "integrator not reversible" in text and "**not reversible**" in text


def test_rollout_with_truth_before_the_first_frame(clean: Path) -> None:
    split = hgn_data.load(clean, "test")
    pred, truth = ex.rollout_with_truth(tiny(), split, 1, 4, -1.0, torch.device("cpu"))
    assert pred.shape == truth.shape == (5, 3, 16, 16)
    stored = to_frames(np.array(split.images[1, 0]), "cpu")
    torch.testing.assert_close(truth[0], stored)
    assert not (truth == 0.5).all((1, 2, 3)).any()  # a simulated frame everywhere


# ----------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_extrapolate_end_to_end(
    run: Path,
    clean: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "ex"
    argv = ["evaluate", str(run), "--data", str(clean), "--protocol", "extrapolate"]
    assert main([*argv, "--start", "3", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "forward" in printed and "ratio to mean image" in printed
    results = json.loads((out / "extrapolate.json").read_text())
    assert results["start"] == 3 and set(results["rollouts"]) == {
        "forward",
        "backward",
        "2x",
        "half",
    }
    assert "| ½ speed (dt/2) |" in (out / "extrapolate.md").read_text()
    for key in ("strip", "errors", "energy"):
        assert iio.imread(out / FILES[key]).ndim == 3
    assert iio.imread(out / FILES["gif"]).shape[0] == STEPS + 1
    # a second time into its own output is fine; into a folder of the user's is not (the
    # output guard is what is checked from here: the protocol runs a shorter drift)
    short_drift(monkeypatch)
    assert main([*argv, "--start", "3", "--out", str(out), "--no-progress"]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    message = error_of([*argv, "--start", "3", "--out", str(mine)], capsys)
    assert "hgn did not write" in message and (mine / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--start", "-1"], "--start must be a non-negative integer"),
        (["--start", "12"], "runs past the last frame (12)"),
        (["--start", "0"], "no earlier frame"),
        (["--start", "3", "--backward-start", "soon"], "must be a frame index or 'end'"),
        (["--start", "3", "--backward-start", "0"], "--backward-start 0 leaves no earlier"),
        (["--start", "3", "--backward-start", "13"], "--backward-start 13 is past the last"),
    ],
)
def test_cli_extrapolate_bad_input(
    run: Path, clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra, words
) -> None:
    argv = ["evaluate", str(run), "--data", str(clean), "--protocol", "extrapolate"]
    assert words in error_of([*argv, *extra, "--out", str(tmp_path / "e")], capsys)
    assert not (tmp_path / "e").exists()


def test_cli_extrapolate_refuses_a_short_test_set(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    short = tmp_path / "short"
    tiny_dataset(short, "mass-spring", n_train=2, n_test=2, steps=4, noise=0)
    argv = ["evaluate", str(run), "--data", str(short), "--protocol", "extrapolate"]
    message = error_of([*argv, "--out", str(tmp_path / "e")], capsys)
    assert "past the last frame (4)" in message and "longer test set" in message


def test_cli_start_belongs_to_the_extrapolate_protocol(
    run: Path, clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["evaluate", str(run), "--data", str(clean), "--start", "3"]
    assert "--protocol extrapolate" in error_of([*argv, "--out", str(tmp_path / "e")], capsys)


@pytest.mark.parametrize("speed", ["0", "nan", "-2", "inf"])
def test_cli_rollout_refuses_bad_speeds(
    run: Path, clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture, speed: str
) -> None:
    argv = ["rollout", str(run), "--data", str(clean), "--out", str(tmp_path / "r.gif")]
    assert "--speed" in error_of([*argv, "--speed", speed], capsys)


def test_cli_rollout_backward_at_double_speed(
    run: Path, clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "r.png"
    argv = ["rollout", str(run), "--data", str(clean), "--out", str(out), "--frames", "5"]
    assert main([*argv, "--speed", "2", "--backward"]) == 0
    assert iio.imread(out).ndim == 3


@pytest.mark.slow
def test_evaluate_reports_sample_physics(
    run: Path, clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "ev"
    argv = ["evaluate", str(run), "--data", str(clean), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    samples = json.loads((out / "metrics.json").read_text())["samples"]
    for side in ("samples", "ground_truth"):
        assert 0 <= samples[side]["right_body_count_fraction"] <= 1
        assert samples[side]["energy_spread_median"] >= 0
    assert samples["ground_truth"]["right_body_count_fraction"] == 1.0
    assert "frames with exactly the right bodies" in (out / "metrics.md").read_text()


def test_hgnpp_is_scored_from_the_window_start_or_from_its_state(clean: Path) -> None:
    """HGN++ reads 3 frames here and its state is that of the last one. By default it is
    taken back 2 steps and every rollout starts at the window's first frame, exactly as
    its ``predict`` does (so Table 1 and this protocol score the same rollout); with
    ``align="state"`` every rollout starts at start + 2. Its separable leapfrog
    measures as reversible either way."""
    wider = {"encoder_filters": [8, 8, 8], "fpsi_hidden": 16, "energy_hidden": 16}
    model = get_model("hgn++")({**TINY_HGNPP, **wider, "frames": 7, "decoder_filters": [8]}).eval()
    assert model.state_offset == 2
    split = hgn_data.load(clean, "test")
    mean = mean_frame(hgn_data.load(clean, "train"))
    run = functools.partial(ex.run_protocol, model, split, mean, start=3, drift_steps=10)
    results, _ = run(progress=False)
    assert results["state_frame"] == 3 and results["rolled_back_steps"] == 2
    assert results["rollouts"]["backward"]["steps"] == 3
    assert results["rollouts"]["forward"]["frames"] == [3.0, 12.0]
    assert results["reversible"]["reversible"] is True
    window = to_frames(np.array(split.images[:4, 3:6]), torch.device("cpu"))
    with torch.no_grad():
        ours, _ = ex._Rollouts(model, window, back=2)(9, model.config.dt)
        torch.testing.assert_close(ours, model.predict(window, 9)["images"])
    results, _ = run(progress=False, align="state")
    assert results["state_frame"] == 5 and results["rolled_back_steps"] == 0
    assert results["rollouts"]["backward"]["steps"] == 5
    assert results["rollouts"]["forward"]["frames"] == [5.0, 12.0]
    assert results["reversible"]["reversible"] is True
    with pytest.raises(UserError, match="--align must be one of start, state"):
        run(progress=False, align="middle")


def test_hnn_gets_every_number_and_rk4_is_irreversible_by_its_name(clean: Path) -> None:
    """HNN goes through the same interface as HGN: it gets every number, its round trip
    is measured, and RK4 stays irreversible by its name whatever the round trip says."""
    model = get_model("hnn")({"image_size": 16, "dof": 1}).eval()
    split = hgn_data.load(clean, "test")
    mean = mean_frame(hgn_data.load(clean, "train"))
    results, _ = ex.run_protocol(model, split, mean, start=3, drift_steps=10, progress=False)
    assert results["reversible"]["declared"] is False
    assert results["reversible"]["reversible"] is False
    assert results["reversible"]["round_trip_relative_error"] is not None
    assert all(np.isfinite(r["ratio"]) for r in results["rollouts"].values())
