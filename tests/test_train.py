"""End to end: `hgn train | evaluate | rollout | sample` on a tiny 16×16 dataset, plus
the bad inputs each command must refuse with one clear line and nothing overwritten."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from helpers import TINY_HGN, model_sets, set_args, tiny_dataset, train_tiny

import hgn
from hgn import data as hgn_data
from hgn.cli import main
from hgn.data import to_frames
from hgn.data.prefetch import ChunkShuffle
from hgn.models import HGN
from hgn.runs import CHECKPOINT, open_sequence_model
from hgn.training import train as hgn_train
from hgn.training.config import FOLLOWS_DATA, resolve
from hgn.training.train import Average, Batches, SkippingAdam, decay_factor, ema_with_warmup
from hgn.utils import UserError, load_checkpoint

TINY = [
    *model_sets(TINY_HGN),
    "train.batch_size=4",
    "train.checkpoint_every=2",
    "train.image_every=2",
    "train.lr=1e-3",
]


def sets(*extra: str) -> list[str]:
    """The tiny conv HGN (``--model hgn``: the small profile's default is HGN++)."""
    return ["--model", "hgn", *set_args([*TINY, *extra])]


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ms16")


@pytest.fixture(scope="session")
def run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(dataset, tmp_path_factory.mktemp("runs") / "run", 3, *sets())


def error_of(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run a command that must fail; return its one-line message."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if "hgn: error: " in line]
    assert len(errors) == 1 and lines[-1].startswith("hgn: error: "), lines
    assert "Traceback" not in lines
    return errors[0]


# ----------------------------------------------------------------------------- train


def test_train_writes_checkpoint_config_and_tensorboard(run: Path) -> None:
    saved = load_checkpoint(run / CHECKPOINT)
    assert saved["step"] == 3
    assert saved["config"]["model"]["name"] == "hgn"
    assert saved["config"]["model"]["image_size"] == 16
    assert saved["config"]["train"]["batch_size"] == 4
    assert "geco" not in saved["state"]["model"] and "optimizer" in saved["state"]
    assert (run / "config.yaml").read_text().startswith("model:")
    assert any((run / "tensorboard").iterdir())


def test_resume_continues_to_more_steps(run: Path, dataset: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / CHECKPOINT).write_bytes((run / CHECKPOINT).read_bytes())
    assert (
        main(["train", "--data", str(dataset), "--out", str(copy), "--resume", "--steps", "5"]) == 0
    )
    assert load_checkpoint(copy / CHECKPOINT)["step"] == 5


@pytest.mark.slow
def test_resume_is_exact(dataset: Path, tmp_path: Path) -> None:
    base = ["train", "--data", str(dataset), *sets("model.name=hgn-determ")]
    assert main([*base, "--out", str(tmp_path / "a"), "--steps", "4"]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--steps", "2"]) == 0
    resume = ["train", "--data", str(dataset), "--out", str(tmp_path / "b"), "--resume"]
    assert main([*resume, "--steps", "4"]) == 0
    a = load_checkpoint(tmp_path / "a" / CHECKPOINT)["state"]["model"]
    b = load_checkpoint(tmp_path / "b" / CHECKPOINT)["state"]["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_moving_average_resumes_exactly_and_is_what_loads(dataset: Path, tmp_path: Path) -> None:
    """``train.ema``: the average is checkpointed (a resumed run ends with the same one
    as an uninterrupted run), it is the decay's average of the weights the steps
    visited, and ``open_sequence_model`` returns it unless asked for the last step's weights."""
    base = ["train", "--data", str(dataset), *sets("model.name=hgn-determ", "train.ema=0.5")]
    assert main([*base, "--out", str(tmp_path / "a"), "--steps", "4"]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--steps", "2"]) == 0
    resume = ["train", "--data", str(dataset), "--out", str(tmp_path / "b"), "--resume"]
    assert main([*resume, "--steps", "4"]) == 0
    a = load_checkpoint(tmp_path / "a" / CHECKPOINT)["state"]
    b = load_checkpoint(tmp_path / "b" / CHECKPOINT)["state"]
    for key, value in a["averaged"]["weights"].items():
        torch.testing.assert_close(value, b["averaged"]["weights"][key], rtol=0, atol=1e-6)
    assert int(a["averaged"]["n_averaged"]) == int(b["averaged"]["n_averaged"]) == 4
    averaged, _ = open_sequence_model(tmp_path / "a")
    last, _ = open_sequence_model(tmp_path / "a", averaged=False)
    moved = 0
    for name, weight in averaged.named_parameters():
        torch.testing.assert_close(weight, a["averaged"]["weights"][name])
        torch.testing.assert_close(dict(last.named_parameters())[name], a["model"][name])
        moved += not torch.equal(weight, a["model"][name])
    assert moved  # four steps at decay 0.5 leave the average behind the last weights
    with pytest.raises(UserError, match=r"train\.ema"):
        resolve("small", None, "hgn", ["train.ema=1"])


def test_moving_average_decay_warms_up() -> None:
    """After n updates the average moves by 1 − min(decay, (1 + n) / (10 + n)) towards
    the weights: fast at first, the plain moving average later."""
    update = ema_with_warmup(0.99)
    for n, decay in ((1, 2 / 11), (100, 101 / 110), (2000, 0.99)):
        avg, cur = [torch.zeros(3)], [torch.ones(3)]
        update(avg, cur, torch.tensor(n))
        torch.testing.assert_close(avg[0], torch.full((3,), 1 - decay))


def test_a_skipped_step_leaves_the_average_and_adam_alone() -> None:
    """The step skipped on the device (``keep``/``skip`` tensors, no host check) leaves
    the average, its count, the weights and Adam's moments and count as they were."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    average, opt = Average(model, 0.9), SkippingAdam(model.parameters(), lr=0.1)
    for skip in (False, False, True):
        before = (copy.deepcopy(average.state_dict()), copy.deepcopy(opt.state_dict()))
        model(torch.randn(4, 3)).square().sum().backward()
        opt.step_unless(torch.tensor(skip))
        average.update(model, keep=torch.tensor(not skip))
    assert float(average.state_dict()["n_averaged"]) == 2
    assert {float(s["step"]) for s in opt.state_dict()["state"].values()} == {2.0}
    for name, value in before[0]["weights"].items():
        assert torch.equal(value, average.state_dict()["weights"][name])
    for index, state in before[1]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[key], opt.state_dict()["state"][index][key])
    # the first update copies the weights, later ones move by the warm-up's share
    fresh = Average(model, 0.9)
    fresh.update(model)
    for name, value in model.named_parameters():
        assert torch.equal(fresh.state_dict()["weights"][name], value.detach())


def test_skipping_adam_resumes_the_state_of_an_unfused_adam() -> None:
    """Runs saved before issue 27 hold a plain Adam's state (unfused, its step counts on
    the host): a resumed run loads it, fused, and steps on."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    plain = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).square().sum().backward()
    plain.step()
    resumed = SkippingAdam(model.parameters(), lr=0.1)
    resumed.load_state_dict(copy.deepcopy(plain.state_dict()))
    assert all(group["fused"] for group in resumed.param_groups)
    resumed.step_unless(torch.tensor(False))
    assert {float(s["step"]) for s in resumed.state_dict()["state"].values()} == {2.0}


def test_yaml_config_and_model_flag(dataset: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  integrator: euler\ntrain:\n  seed: 3\n")
    cfg = resolve("small", config, "hgn-no-fpsi", ["lr=0.01", "model.dt=0.1"])
    assert cfg.name == "hgn-no-fpsi" and not cfg.model.use_fpsi
    assert cfg.model.integrator == "euler" and cfg.model.dt == 0.1
    assert cfg.train.seed == 3 and cfg.train.lr == 0.01
    assert resolve("paper").model.image_size == 64 and resolve("paper").train.lr == 1.5e-4


def test_print_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The printed file gives back the config it was printed from: every key under the
    profile it was printed with, and every key but those that follow the data (printed
    as ``auto``, derived from the data at training) under any other profile."""
    assert main(["train", "--print-config", "--profile", "paper"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "paper.yaml").write_text(text)
    assert resolve("paper", tmp_path / "paper.yaml").to_dict() == resolve("paper").to_dict()
    elsewhere = resolve("small", tmp_path / "paper.yaml").to_dict()
    want = resolve("paper").to_dict()
    for key in FOLLOWS_DATA:
        elsewhere["model"].pop(key, None)
        want["model"].pop(key, None)
    assert elsewhere == want


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    real = HGN.loss
    calls = {"n": 0}

    def poisoned(self, frames):
        loss, metrics = real(self, frames)
        calls["n"] += 1
        return (loss * float("nan"), metrics) if calls["n"] == 3 else (loss, metrics)

    monkeypatch.setattr(HGN, "loss", poisoned)
    out = tmp_path / "nan"
    argv = ["train", "--data", str(dataset), "--out", str(out), "--steps", "6"]
    message = error_of([*argv, *sets("train.checkpoint_every=2")], capsys)
    assert "loss became nan at step 2" in message
    saved = load_checkpoint(out / CHECKPOINT)
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state"]["model"].values())


def test_batches_are_fixed_by_the_step_seed(dataset: Path) -> None:
    batches = Batches(hgn_data.load(dataset, "train"), 4, 3, torch.device("cpu"))
    torch.manual_seed(0)
    x = batches()
    assert x.shape == (3, 4, 3, 16, 16) and x.dtype == torch.float32 and x.max() <= 1
    torch.manual_seed(0)
    torch.testing.assert_close(batches(), x)


def test_chunk_shuffle_reads_every_row_once_an_epoch_a_few_chunks_at_a_time() -> None:
    order = ChunkShuffle(n=50, rows_per_chunk=8, batch=4, window=2, seed=1)
    epoch = np.concatenate([order(k) for k in range(order.per_epoch)])
    assert order.per_epoch == 12 and len(np.unique(epoch)) == 48 and epoch.max() < 50
    for k in range(order.per_epoch):  # a batch spans at most two windows of two chunks
        assert len(np.unique(order(k) // 8)) <= 4
    again = ChunkShuffle(n=50, rows_per_chunk=8, batch=4, window=2, seed=1)
    assert np.array_equal(again(17), order(17))  # a function of (seed, batch): resumable
    assert not np.array_equal(order(12), order(0))  # the next epoch has its own order
    other = ChunkShuffle(n=50, rows_per_chunk=8, batch=4, window=2, seed=2)
    assert not np.array_equal(other(0), order(0))


def test_batches_of_a_split_larger_than_memory(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of core, batches built ahead in the chunk-aware order: windows of the data's
    own sequences where the plan says, the same for a fresh sampler (a resumed run) at
    any step, and the same whether or not they were built in the background."""
    monkeypatch.setattr(hgn_train, "IN_MEMORY_BYTES", 0)
    split = hgn_data.load(dataset, "train")
    images = torch.from_numpy(np.asarray(split.images))
    first = Batches(split, 4, 3, torch.device("cpu"), seed=7)
    assert first.chunked is not None
    drawn = [first(step) for step in range(5)]
    plans = [first.chunked.plan(step) for step in range(5)]
    first.close()
    resumed = Batches(split, 4, 3, torch.device("cpu"), seed=7)
    torch.testing.assert_close(resumed(3), drawn[3], rtol=0, atol=0)
    assert resumed.chunked is not None
    torch.testing.assert_close(resumed.chunked.build(4), drawn[4], rtol=0, atol=0)
    resumed.close()
    for x, (rows, starts) in zip(drawn, plans, strict=True):
        expected = images[
            torch.from_numpy(rows)[:, None], torch.from_numpy(starts)[:, None] + torch.arange(4)
        ]
        torch.testing.assert_close(x, to_frames(expected, "cpu"), rtol=0, atol=0)


# ----------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_writes_metrics_and_plots(run: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--data", str(dataset), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("train", "test"):
        s = metrics["splits"][split]
        assert len(s["mse"]["per_step_mean"]) == 7 and s["mse"]["mean"] > 0
        assert s["mse"]["mean_x1e4"] == pytest.approx(s["mse"]["mean"] * 1e4)
        assert s["baseline_mse"]["mean"] > 0 and s["energy"]["var_mean"] >= 0
        assert 0 < s["noise_floor_mse"] < s["baseline_mse"]["mean"]
        assert s["vpt"] is None  # the encoder saw every frame
    assert "| test |" in (out / "metrics.md").read_text()
    assert iio.imread(out / "mse_per_step.png").ndim == 3
    assert (out / "energy.png").is_file()


@pytest.mark.slow
def test_prefix_protocol_reports_valid_prediction_time(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "prefix"
    argv = ["train", "--data", str(dataset), "--out", str(run), "--steps", "2"]
    assert main([*argv, *sets("model.input_frames=3", "model.warmup=2")]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--data", str(dataset), "--out", str(out)]) == 0
    vpt = json.loads((out / "metrics.json").read_text())["splits"]["test"]["vpt"]
    assert vpt["of"] == 4 and 0 <= vpt["steps_mean"] <= 4


# ----------------------------------------------------------------------------- pictures


@pytest.mark.parametrize("suffix", [".gif", ".png"])
def test_rollout_renders_truth_and_prediction(
    run: Path, dataset: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"roll{suffix}"
    argv = ["rollout", str(run), "--data", str(dataset), "--index", "1", "--frames", "7"]
    # (an animation shows the truth at every step; GIF writers drop repeated frames)
    options = ["--speed", "2", "--backward"] if suffix == ".png" else []
    assert main([*argv, *options, "--out", str(out)]) == 0
    image = iio.imread(out)
    if suffix == ".gif":
        assert image.shape[0] == 7  # --frames, truth | prediction side by side
        assert image.shape[2] > 2 * image.shape[1] - 8
    else:
        assert image.shape[1] > 6 * image.shape[0] / 2  # 2 rows × 7 columns


def test_sample_writes_pictures(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples.png"
    assert main(["sample", str(run), "--n", "3", "--frames", "5", "--out", str(out)]) == 0
    assert iio.imread(out).shape == (3 * 129 + 1, 5 * 129 + 1, 3)  # n rows, --frames columns
    gif = tmp_path / "samples.gif"
    assert main(["sample", str(run), "--n", "3", "--frames", "5", "--out", str(gif)]) == 0
    assert iio.imread(gif).shape[-3:] == (129 + 1, 3 * 129 + 1, 3)


def test_load_api(run: Path, dataset: Path) -> None:
    model = hgn.load(run)
    frames = hgn_data.SequenceDataset(dataset, "test")[0][None]
    state = model.encode(frames)
    states = model.rollout(state, 4, dt=0.1)
    assert model.decode(states).shape == (1, 5, 3, 16, 16)
    assert model.hamiltonian(states).shape == (1, 5)
    assert model.sample(2, 3).shape == (2, 4, 3, 16, 16)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_fail_with_one_line(
    run: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, new = str(dataset), str(tmp_path / "new")
    train = ["train", "--data", data, "--out", new]
    # the image size follows the data unless set; a set one the data contradicts is refused
    assert "expects 32×32" in error_of([*train, "--set", "model.image_size=32"], capsys)
    assert "model.nope" in error_of([*train, "--set", "model.nope=1"], capsys)
    assert "train.lr must be float" in error_of([*train, "--set", "train.lr=fast"], capsys)
    assert "does not parse" in error_of([*train, "--set", "lr"], capsys)
    assert "does not parse" in error_of([*train, "--set", "model.encoder_filters=[8,"], capsys)
    assert "--steps must be a positive" in error_of([*train, "--steps", "0"], capsys)
    assert "nothing to resume" in error_of([*train, "--resume"], capsys)
    assert not Path(new).exists()
    again = ["train", "--data", data, "--out", str(run), "--steps", "9", *sets()]
    before = (run / CHECKPOINT).read_bytes()
    assert "already holds a run" in error_of(again, capsys)
    assert (run / CHECKPOINT).read_bytes() == before

    empty = tmp_path / "empty"
    empty.mkdir()
    evaluate = ["evaluate", str(empty), "--data", data, "--out", str(tmp_path / "e")]
    assert "no checkpoint" in error_of(evaluate, capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CHECKPOINT).write_bytes(before[: len(before) // 2])
    assert "corrupt or truncated" in error_of(
        ["sample", str(broken), "--out", new + ".gif"], capsys
    )
    missing = str(tmp_path / "no" / "dir" / "r.gif")
    assert "does not exist" in error_of(
        ["rollout", str(run), "--data", data, "--out", missing], capsys
    )
    assert "--frames must be an integer of at least 2" in error_of(
        ["sample", str(run), "--frames", "1", "--out", new + ".gif"], capsys
    )
    assert "out of range" in error_of(
        ["rollout", str(run), "--data", data, "--index", "99", "--out", new + ".gif"], capsys
    )
    assert not list(tmp_path.glob("new*"))


def test_resolve_rejects_unknown_profile_and_section(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown profile"):
        resolve("huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimiser:\n  lr: 1\n")
    with pytest.raises(UserError, match="unknown config section 'optimiser'"):
        resolve("small", bad)
    bad.write_text("model: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve("small", bad)


_RANK = """
import os, sys
sys.path.insert(0, os.getcwd())  # the hgn that `python -m hgn` would import
from hgn.cli import main
code = main(sys.argv[1:])
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
left = [name for name in names if "gloo" in name]
sys.exit(f"gloo threads outlive the process group: {left}" if left else code)
"""
"""Each rank: ``hgn train`` (its arguments), then no gloo worker thread may be left. The
group must die before interpreter shutdown: a gloo worker still alive then can abort a
rank whose training succeeded (seen on CI). Checked in the DDP run below, which was a
torchrun launch of its own (three more processes, each importing torch)."""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's thread list")
def test_ddp_on_two_cpu_ranks_matches_one_process_and_leaves_no_gloo_thread(
    dataset: Path, tmp_path: Path, torchrun: Callable[..., None]
) -> None:
    """gloo, 2 ranks × batch 2 == 1 process × batch 4 for the deterministic model; after
    training, each rank has joined gloo's threads (:data:`_RANK`)."""
    script = tmp_path / "rank.py"
    script.write_text(_RANK)
    common = ["train", "--data", str(dataset), "--steps", "2"]
    common += [*sets("train.image_every=0"), "--model", "hgn-determ"]  # the last --model wins
    torchrun([str(script), *common, "--set", "train.batch_size=2", "--out", str(tmp_path / "ddp")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = [sys.executable, "-m", "hgn", *common, "--set", "train.batch_size=4"]
    one += ["--out", str(tmp_path / "one")]
    subprocess.run(one, check=True, env=env, capture_output=True, timeout=300)
    a = load_checkpoint(tmp_path / "ddp" / CHECKPOINT)
    b = load_checkpoint(tmp_path / "one" / CHECKPOINT)
    assert a["step"] == b["step"] == 2
    for key, value in a["state"]["model"].items():
        torch.testing.assert_close(value, b["state"]["model"][key], rtol=0, atol=1e-6)


def test_learning_rate_warm_down() -> None:
    """``train.lr_decay``: constant until the last share of the run, then linear to 0."""
    assert decay_factor(0.5, 0.0) == 1.0 and decay_factor(1.0, 0.0) == 1.0
    assert decay_factor(0.6, 0.3) == 1.0
    assert decay_factor(0.85, 0.3) == pytest.approx(0.5)
    assert decay_factor(1.0, 0.3) == 0.0
    with pytest.raises(UserError, match=r"train\.lr_decay"):
        resolve("small", None, "hgn", ["train.lr_decay=1.5"])


def test_prioritised_batches_draw_by_error_and_resume_their_state(dataset: Path) -> None:
    """``train.prioritize``: a share of the draws follows each sequence's latest error;
    a sequence drawn twice keeps the mean of its errors; the errors are saved state."""
    split = hgn_data.load(dataset, "train")
    batches = Batches(split, 4, 400, torch.device("cpu"), prioritize=0.5)
    torch.manual_seed(0)
    batches()
    assert set(batches.rows.tolist()) == set(range(len(split)))  # unseen ones come first
    batches.record(torch.where(batches.rows == 3, 0.5, 0.01))
    expect = torch.full((8,), 0.01, dtype=torch.float64)
    expect[3] = 0.5
    torch.testing.assert_close(batches.errors, expect)
    batches()
    share = float((batches.rows == 3).double().mean())
    expected = 0.5 / 8 + 0.5 * 0.5 / (0.5 + 7 * 0.01)  # uniform share + error share
    assert abs(share - expected) < 0.08, (share, expected)
    batches.rows = torch.tensor([2, 2])
    batches.record(torch.tensor([0.1, 0.3]))
    assert float(batches.errors[2]) == pytest.approx(0.2)
    again = Batches(split, 4, 400, torch.device("cpu"), prioritize=0.5)
    again.load_state_dict(batches.state_dict())
    torch.manual_seed(1)
    first = batches()
    torch.manual_seed(1)
    torch.testing.assert_close(again(), first)
    torch.testing.assert_close(again.rows, batches.rows)
    with pytest.raises(UserError, match="sampling state covers 3 sequences"):
        again.load_state_dict({"errors": torch.ones(3)})


def test_prioritised_sampling_needs_a_model_that_reports_errors(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    train = ["train", "--data", str(dataset), "--out", str(tmp_path / "r"), "--steps", "1"]
    message = error_of([*train, *sets("train.prioritize=0.5")], capsys)
    assert "train.prioritize needs a model that reports per-sequence errors" in message
    assert not (tmp_path / "r").exists()
    assert "train.prioritize" in error_of([*train, *sets("train.prioritize=1.5")], capsys)
