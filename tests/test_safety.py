"""The defects of issue 9 on the HGN side, each as the behaviour a user relies on:
no command deletes or replaces what it did not write; no NaN reaches a checkpoint;
every numeric config value is range-checked; budgets on resume; DDP collectives on the
training device; prefix-protocol MSE over predicted frames only; a noise-aware valid
prediction time; evaluation on another system's data says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import error_of, sets

from hgn import data as hgn_data
from hgn import runs
from hgn.cli import main
from hgn.evaluation.metrics import valid_prediction_time, vpt_threshold
from hgn.models import HGN
from hgn.runs import CHECKPOINT
from hgn.training import train as hgn_train
from hgn.training.config import resolve
from hgn.utils import OUTPUT_MARKER, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "ms16"
    hgn_data.generate(out, "mass-spring", n_train=8, n_test=4, steps=6, size=16, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("safety-runs") / "run"
    argv = ["train", "--data", str(data), "--out", str(out), "--steps", "2", "--no-progress"]
    assert main([*argv, *sets()]) == 0
    return out


def user_folder(path: Path) -> Path:
    """A directory holding a file of the user's, which no command may touch."""
    path.mkdir()
    (path / "notes.txt").write_text("my notes\n")
    return path


def untouched(path: Path) -> bool:
    return sorted(p.name for p in path.iterdir()) == ["notes.txt"] and (
        (path / "notes.txt").read_text() == "my notes\n"
    )


# ----------------------------------------------------------------------------- defect 1


def test_train_refuses_a_users_folder(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = user_folder(tmp_path / "mine")
    argv = ["train", "--data", str(data), "--out", str(folder), "--steps", "1", *sets()]
    assert "holds files hgn did not write" in error_of(argv, capsys)
    assert untouched(folder)


def test_train_into_an_empty_folder_marks_it(data: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "empty"), "--steps", "1"]
    assert main([*argv, "--no-progress", *sets()]) == 0
    marker = json.loads((tmp_path / "empty" / OUTPUT_MARKER).read_text())
    assert marker == {"written_by": "hgn train"}


def test_resume_of_a_run_written_before_markers_works_and_marks_it(
    trained: Path, data: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old-run"
    old.mkdir()
    for name in (CHECKPOINT, "config.yaml"):
        (old / name).write_bytes((trained / name).read_bytes())
    argv = ["train", "--data", str(data), "--out", str(old), "--resume", "--steps", "3"]
    assert main([*argv, "--no-progress"]) == 0
    assert load_checkpoint(old / CHECKPOINT)["step"] == 3
    assert json.loads((old / OUTPUT_MARKER).read_text())["written_by"] == "hgn train"


def test_evaluate_never_deletes_the_run_or_a_users_folder(
    trained: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = (trained / CHECKPOINT).read_bytes()
    evaluate = ["evaluate", str(trained), "--data", str(data), "--no-progress", "--out"]
    assert "holds the output of `hgn train`" in error_of([*evaluate, str(trained)], capsys)
    assert (trained / CHECKPOINT).read_bytes() == before  # it used to be deleted
    folder = user_folder(tmp_path / "important")
    assert "holds files hgn did not write" in error_of([*evaluate, str(folder)], capsys)
    assert untouched(folder)
    # its own earlier output is replaced, file by file; a file of the user's stays
    out = tmp_path / "eval"
    assert main([*evaluate, str(out)]) == 0
    (out / "metrics.md").write_text("stale\n")
    assert main([*evaluate, str(out)]) == 0
    assert (out / "metrics.md").read_text().startswith("# Evaluation")


@pytest.mark.parametrize("command", ["rollout", "sample"])
def test_pictures_replace_an_existing_file_only_with_overwrite(
    trained: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, command: str
) -> None:
    target = tmp_path / "holiday.gif"
    target.write_bytes(b"the user's animation")
    argv = [command, str(trained), "--steps", "2"]
    if command == "rollout":
        argv += ["--data", str(data)]
    argv += ["--out", str(target)]
    assert "already exists; pass --overwrite" in error_of(argv, capsys)
    assert target.read_bytes() == b"the user's animation"
    folder = user_folder(tmp_path / "pictures.gif")
    assert "is a directory" in error_of([*argv[:-1], str(folder)], capsys)
    assert untouched(folder)
    assert main([*argv, "--overwrite"]) == 0
    assert target.read_bytes()[:3] == b"GIF"


# ----------------------------------------------------------------------------- defect 2


def test_a_non_finite_gradient_skips_the_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN gradient with a finite loss (here injected at the third step) must not
    reach the optimiser: it used to write NaN into the weights and the checkpoint."""
    real_loss = HGN.loss
    calls = {"loss": 0}

    def poisoned(self, frames):
        loss, metrics = real_loss(self, frames)
        calls["loss"] += 1
        if calls["loss"] == 3:
            loss.register_hook(lambda grad: grad * float("nan"))
        return loss, metrics

    monkeypatch.setattr(HGN, "loss", poisoned)
    config = resolve("small", model="hgn", sets=[*sets()[3::2], "train.log_every=1"])
    result = hgn_train.train(data, tmp_path / "run", config, steps=4, progress=False)
    assert result.step == 4
    assert [h.get("skipped_steps", 0.0) for h in result.history] == [0.0, 0.0, 1.0, 1.0]
    saved = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    # the optimiser took three steps: the skipped one left its moments and count alone
    assert {float(s["step"]) for s in saved["state"]["optimizer"]["state"].values()} == {3.0}
    assert all(torch.isfinite(v).all() for v in saved["state"]["model"].values())


# ----------------------------------------------------------------------------- defect 3


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("train.grad_clip=.nan", "train.grad_clip must be a finite number ≥ 0, got nan"),
        ("model.kl_weight=.nan", "model.kl_weight must be a finite number ≥ 0, got nan"),
        ("model.geco_speed=-1", "model.geco_speed must be a finite number > 0, got -1.0"),
        ("train.lr=.inf", "train.lr must be a finite number > 0, got inf"),
        ("train.max_minutes=-2", "train.max_minutes must be a finite number > 0"),
    ],
)
def test_out_of_range_config_values_fail_with_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, option: str, message: str
) -> None:
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "r"), *sets(option)]
    assert message in error_of(argv, capsys)
    assert not (tmp_path / "r").exists()


def test_max_minutes_must_be_finite(data: Path, tmp_path: Path, capsys) -> None:
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--minutes"]
    assert "--minutes must be a finite number > 0" in error_of([*argv, "nan"], capsys)
    assert "--minutes must be a finite number > 0" in error_of([*argv, "inf"], capsys)


# ----------------------------------------------------------------------------- defect 4


def test_max_minutes_on_resume_counts_from_this_invocation(
    trained: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The README's `--resume --steps N` after a spent budget: without --minutes
    the saved budget applies (nothing is left, and the command says how to go on); with
    it, the run trains on (it used to stop after one step either way)."""
    run = tmp_path / "run"
    run.mkdir()
    saved = load_checkpoint(trained / CHECKPOINT)
    saved["config"]["train"]["max_minutes"] = 5.0
    save_checkpoint(run / CHECKPOINT, {**saved, "seconds": 5 * 60.0 + 1})  # budget spent
    resume = ["train", "--data", str(data), "--out", str(run), "--resume", "--no-progress"]
    capsys.readouterr()
    assert main([*resume, "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "trained 2 steps" in out and "pass --minutes" in out
    assert main([*resume, "--steps", "4", "--minutes", "5"]) == 0
    assert load_checkpoint(run / CHECKPOINT)["step"] == 4


def test_help_says_how_max_minutes_counts(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "counted from the start of this command" in text and "--no-progress" in text


# ----------------------------------------------------------------------------- defect 7


def test_collectives_use_the_training_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """NCCL rejects CPU tensors: the loss average and the stop verdict must be reduced
    on the device the model trains on (gloo on CPU takes the same path)."""
    seen: list[torch.device] = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, op=None: seen.append(t.device))
    device = torch.device("cpu")
    loss = torch.tensor([3.0], device=device)
    assert hgn_train._all_mean(loss).item() == 1.5  # the mocked sum leaves one rank's value
    assert hgn_train._agree_on(device)(True) is True
    assert seen == [device, device]


# ----------------------------------------------------------------------------- defects 8, 9


def test_vpt_threshold_sits_between_the_noise_floor_and_the_mean_image() -> None:
    assert vpt_threshold(1.0, 0.6, 0.5) == pytest.approx(0.8)
    assert vpt_threshold(1.0, None, 0.5) == 0.5  # no floor known: ½ × mean image
    # a perfect model on noisy data sits at the floor (here above ½ × the mean image):
    # it used to score 0 predicted frames, it now scores all of them
    perfect = np.full((3, 10), 0.6)
    assert (valid_prediction_time(perfect, 4, 0.5 * 1.0) == 0).all()
    assert (valid_prediction_time(perfect, 4, vpt_threshold(1.0, 0.6)) == 6).all()


def test_prefix_protocol_averages_over_predicted_frames_only(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "prefix"
    argv = ["train", "--data", str(data), "--out", str(run), "--steps", "1", "--no-progress"]
    assert main([*argv, *sets("model.input_frames=3")]) == 0
    out = tmp_path / "eval"
    argv = ["evaluate", str(run), "--data", str(data), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["first_scored_frame"] == 3
    for s in metrics["splits"].values():
        curve, base = s["mse"]["per_step_mean"], s["baseline_mse"]["per_step_mean"]
        assert len(curve) == 7  # the curve still shows every frame
        assert s["mse"]["mean"] == pytest.approx(np.mean(curve[3:]))
        assert s["mse"]["mean"] != pytest.approx(np.mean(curve))
        assert s["ratio_to_baseline"] == pytest.approx(np.mean(curve[3:]) / np.mean(base[3:]))
        floor = s["noise_floor_mse"]
        assert s["vpt"]["threshold"] == pytest.approx(floor + 0.5 * (np.mean(base[3:]) - floor))
    assert "predicted frames 3…6" in (out / "metrics.md").read_text()


# ----------------------------------------------------------------------------- defect 11


def test_no_progress_silences_the_bars(
    trained: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--steps", "1"]
    assert main([*argv, "--no-progress", *sets()]) == 0
    assert "|" not in capsys.readouterr().err
    argv = ["evaluate", str(trained), "--data", str(data), "--out", str(tmp_path / "e")]
    assert main([*argv, "--no-progress"]) == 0
    assert "|" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- defect 12


def test_evaluate_on_another_systems_data_says_so(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    other = tmp_path / "pd16"
    hgn_data.generate(other, "pendulum", n_train=4, n_test=2, steps=6, size=16, progress=False)
    record = load_checkpoint(trained / CHECKPOINT)["trained_on"]
    assert record["system"] == "mass-spring" and record["size"] == 16
    assert record["dt"] == 0.125 and record["noise"] == 0.1 and Path(record["path"]).is_dir()
    out = tmp_path / "eval"
    argv = ["evaluate", str(trained), "--data", str(other), "--out", str(out), "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 0  # the numbers are still computed
    err = capsys.readouterr().err
    assert "hgn: warning: this data differs from the run's training data: system" in err
    first = (out / "metrics.md").read_text().splitlines()[0]
    assert "'pendulum' (trained on 'mass-spring')" in first
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data_mismatch"] and metrics["splits"]["test"]["mse"]["mean"] > 0
    resume = ["train", "--data", str(other), "--out", str(trained), "--resume", "--steps", "3"]
    assert "on the data it was trained on" in error_of(resume, capsys)


def test_usage_mistakes_are_one_line_too(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--minutes", "soon"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hgn: error: hgn train: argument --minutes")


def test_data_from_before_friction_and_offset_is_not_another_dataset() -> None:
    """Datasets written before the shared constants existed lack friction and offset:
    they were 0, so the same constants with them spelled out are no difference; a
    different friction still is."""
    old = {"system": "mass-spring", "constants": {"k": 2.0, "m": 0.5}, "noise": 0.0}
    new = {**old, "constants": {"k": 2.0, "m": 0.5, "friction": 0.0, "offset": 0.0}}
    assert runs.data_mismatch(old, new) is None
    damped = {**old, "constants": {"k": 2.0, "m": 0.5, "friction": 0.05, "offset": 0.0}}
    assert "constants" in (runs.data_mismatch(old, damped) or "")
