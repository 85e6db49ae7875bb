"""Everything downstream of `hgn data import` (issue 11 §3): train, evaluate (both
protocols), rollout and sample on a tiny imported dataset without states; the noise floor
of random-variant data; the one `--no-progress` flag."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from helpers import TINY_HGN, model_sets, set_args, short_drift

from hgn import data as hgn_data
from hgn.cli import build_parser, main
from hgn.evaluation.extrapolate import NO_STATES_EXTRAPOLATE
from hgn.evaluation.metrics import NO_STATES, noise_floor
from hgn.utils import UserError

FRAMES = 14
TINY = {**TINY_HGN, "frames": 5}


def moving_square(n: int, t: int, size: int = 16) -> np.ndarray:
    """(n, t, size, size, 3) uint8: a bright square drifting over grey, one per row."""
    frames = np.full((n, t, size, size, 3), 90, np.uint8)
    for k in range(n):
        for i in range(t):
            y, x = (2 + k + i) % (size - 4), (1 + i) % (size - 4)
            frames[k, i, y : y + 4, x : x + 4] = (230, 40 + 30 * k, 60)
    return frames


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of sequences of PNG frames (written with imageio), imported by the CLI."""
    root = tmp_path_factory.mktemp("imported")
    for k, seq in enumerate(moving_square(6, FRAMES)):
        folder = root / "frames" / f"seq{k}"
        folder.mkdir(parents=True)
        for i, frame in enumerate(seq):
            iio.imwrite(folder / f"{i:03d}.png", frame)
    out = root / "data"
    argv = ["data", "import", str(root / "frames"), "--out", str(out), "--no-progress"]
    assert main([*argv, "--test-fraction", "0.34"]) == 0
    return out


@pytest.fixture(scope="module")
def run(imported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    sets = [*model_sets(TINY), "train.batch_size=2"]
    argv = ["train", "--data", str(imported), "--out", str(out), "--steps", "10", "--no-progress"]
    argv += ["--model", "hgn"]  # the tiny conv HGN (the small profile's default is HGN++)
    assert main([*argv, *set_args(sets)]) == 0
    return out


def test_the_dataset_has_no_states(imported: Path) -> None:
    split = hgn_data.load(imported, "test")
    assert not split.has_states and split.meta["dof"] is None and split.meta["system"] is None
    assert split.images.shape[1:] == (FRAMES, 16, 16, 3)


@pytest.mark.slow
def test_evaluate_skips_what_needs_states_and_says_so_once(
    run: Path, imported: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(imported), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count(NO_STATES) == 1
    assert "Traceback" not in captured.err
    md = (out / "metrics.md").read_text()
    assert md.count(NO_STATES) == 1 and "Samples from the prior" not in md
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped"] == NO_STATES and metrics["samples"] is None
    assert metrics["system"] == hgn_data.load(imported).meta["source"]
    for split in metrics["splits"].values():
        assert split["noise_floor_mse"] is None and split["noise_floor_ratio"] is None
        assert split["mse"]["mean"] > 0 and split["baseline_mse"]["mean"] > 0
        # the valid prediction time still exists, its threshold on a floor of 0
        base = np.mean(split["baseline_mse"]["per_step_mean"][TINY["frames"] :])
        assert split["vpt"]["threshold"] == pytest.approx(0.5 * base)
    assert (out / "mse_per_step.png").is_file() and (out / "energy.png").is_file()


@pytest.mark.slow
def test_extrapolate_compares_stored_frames_only(
    run: Path,
    imported: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short_drift(monkeypatch)  # what is checked is the comparison at stored frames
    out = tmp_path / "extra"
    argv = ["evaluate", str(run), "--data", str(imported), "--out", str(out)]
    capsys.readouterr()
    assert main([*argv, "--protocol", "extrapolate", "--start", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count(NO_STATES_EXTRAPOLATE) == 1
    results = json.loads((out / "extrapolate.json").read_text())
    assert results["has_states"] is False and results["position_units"] is None
    assert results["noise"] is None and results["noise_floor_mse_x1e4"] == 0
    assert results["truth"]["between_frames"].startswith("not available")
    last = FRAMES - 1
    rollouts = results["rollouts"]
    assert rollouts["forward"]["compared_steps"] == last - 2
    assert rollouts["backward"]["compared_steps"] == 2
    # ½ speed lands on a stored frame every other step: only those are compared
    half = rollouts["half"]
    assert half["compared_steps"] == half["steps"] // 2
    assert all(v is None for v in half["per_step_mse"][1::2])
    assert all("position_rms" not in r for r in rollouts.values())
    md = (out / "extrapolate.md").read_text()
    assert md.count(NO_STATES_EXTRAPOLATE) == 1 and "observation noise unknown" in md
    assert (out / "extrapolate-rollouts.png").is_file()


def test_extrapolate_refuses_a_too_short_imported_set(
    run: Path, imported: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["evaluate", str(run), "--data", str(imported), "--out", str(tmp_path / "e")]
    capsys.readouterr()
    assert main([*argv, "--protocol", "extrapolate", "--start", str(FRAMES - 2)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hgn: error:") and "hgn data import" in err[0]
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "options", [[], ["--backward", "--frames", "4"], ["--speed", "0.5"], ["--speed", "2"]]
)
def test_rollout(run: Path, imported: Path, tmp_path: Path, options: list[str]) -> None:
    out = tmp_path / "rollout.png"
    argv = ["rollout", str(run), "--data", str(imported), "--frames", "7", *options]
    assert main([*argv, "--out", str(out)]) == 0
    assert iio.imread(out).ndim == 3


def test_sample(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples.gif"
    assert main(["sample", str(run), "--n", "2", "--frames", "5", "--out", str(out)]) == 0
    assert out.is_file()


def test_noise_floor_of_imported_data_is_refused(imported: Path) -> None:
    with pytest.raises(UserError, match="no true states"):
        noise_floor(hgn_data.load(imported, "test"), 2)


@pytest.mark.parametrize("name", ["dm-pendulum-colors", "dm-pendulum-random", "dm-pendulum-offset"])
def test_noise_floor_redraws_random_variants_as_stored(name: str, tmp_path: Path) -> None:
    """The suite's presets are noise-free: redrawing the stored states with the dataset's
    own simulator (style, colours, constants and shifts per sequence) gives the stored
    frames, so the floor is 0; a simulator built from the system name alone drew the
    paper's style and palette and put a floor of ~0.27 under clean data."""
    settings = hgn_data.preset(name)
    constants = settings.pop("constants")
    settings.update(n_train=1, n_test=3, steps=3, size=16, progress=False)
    hgn_data.generate(tmp_path / "d", **settings, **constants)
    split = hgn_data.load(tmp_path / "d", "test")
    assert split.values and split.meta["noise"] == 0
    assert noise_floor(split, 3, draws=2) < 1e-10


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "generate", "--out", "d"],
        ["data", "import", "src", "--out", "d"],
        ["train", "--data", "d", "--out", "r"],
        ["evaluate", "r", "--data", "d", "--out", "e"],
    ],
)
def test_no_progress_is_one_flag(argv: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(argv).progress is True
    assert parser.parse_args([*argv, "--no-progress"]).progress is False
