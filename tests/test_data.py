"""Datasets: what is stored, reproducibility, sharding, safety on bad input, the CLI."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hgn import data
from hgn.cli import main
from hgn.physics.systems import get_system
from hgn.utils import UserError

SMALL = {"n_train": 20, "n_test": 6, "steps": 4, "size": 16, "block": 8, "progress": False}


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.generate(tmp_path_factory.mktemp("ds") / "pendulum", **SMALL)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("preview")
    }


def test_stored_arrays_shapes_and_meta(pendulum: Path) -> None:
    train = data.load(pendulum)
    assert len(train) == 20
    assert train.images.shape == (20, 5, 16, 16, 3) and train.images.dtype == np.uint8
    for name in ("q", "p", "q_noisy", "p_noisy"):
        array = getattr(train, name)
        assert array.shape == (20, 5, 1) and array.dtype == np.float32
        assert isinstance(array, np.memmap)  # lazily read
    meta = train.meta
    for key in ("system", "constants", "dt", "steps", "noise", "seed", "size", "dof", "n"):
        assert key in meta
    assert meta["split"] == "train" and meta["version"] and meta["noise"] == 0.1
    assert meta["constants"] == {"g": 3.0, "m": 0.5, "l": 1.0, "r_min": 1.3, "r_max": 2.3}
    test = data.load(pendulum, split="test")
    assert len(test) == 6 and test.meta["split"] == "test"
    assert not np.array_equal(test.q[:6], train.q[:6])


def test_images_show_the_noisy_states_and_states_follow_the_physics(pendulum: Path) -> None:
    split = data.load(pendulum)
    system = get_system("pendulum")
    np.testing.assert_array_equal(split.images[:], system.render(np.asarray(split.q_noisy), 16))
    q, p = (torch.from_numpy(np.array(x)).double() for x in (split.q, split.p))
    energy = system.hamiltonian(q, p)
    torch.testing.assert_close(energy, energy[:, :1].expand_as(energy), rtol=1e-5, atol=1e-5)
    qs, _ = system.simulate(q[:, 0], p[:, 0], 0.125, 4)
    torch.testing.assert_close(qs.float(), q.float(), rtol=0, atol=1e-5)  # float32 storage


def test_noise_is_gaussian_with_the_requested_std(tmp_path: Path) -> None:
    out = data.generate(tmp_path / "n", system="mass-spring", noise=0.3, **SMALL)
    split = data.load(out)
    residual = np.concatenate(
        [np.asarray(split.q_noisy) - split.q, np.asarray(split.p_noisy) - split.p]
    )
    assert residual.std() == pytest.approx(0.3, rel=0.15) and abs(residual.mean()) < 0.1
    clean = data.load(data.generate(tmp_path / "c", system="mass-spring", noise=0, **SMALL))
    np.testing.assert_array_equal(clean.q_noisy, clean.q)
    assert clean.meta["noise"] == 0


def test_generation_is_reproducible_by_seed(tmp_path: Path, pendulum: Path) -> None:
    again = data.generate(tmp_path / "again", **SMALL)
    assert files(again) == files(pendulum)
    other = data.load(data.generate(tmp_path / "other", seed=1, **SMALL))
    assert not np.array_equal(other.q, data.load(pendulum).q)


def test_shards_read_and_merge_to_the_unsharded_dataset_bit_for_bit(tmp_path: Path) -> None:
    settings = {**SMALL, "system": "two-body", "n_train": 37, "n_test": 9}
    whole = data.generate(tmp_path / "whole", **settings)
    shards = tmp_path / "shards"
    for index in (2, 0):  # any order; the set is incomplete until shard 1 is there
        data.generate(shards, shard=f"{index}/3", **settings)
    with pytest.raises(UserError, match=r"holds 2 of 3 shards; missing 1"):
        data.load(shards)
    data.generate(shards, shard=(1, 3), **settings)
    ranges = [json.loads((d / "meta.json").read_text())["splits"] for d in sorted(shards.iterdir())]
    assert [r["train"]["start"] for r in ranges] == [0, 8, 24]  # whole blocks of 8
    assert [r["test"]["n"] for r in ranges] == [0, 8, 1]  # an empty shard is fine

    for split in data.SPLITS:
        lazy, full = data.load(shards, split), data.load(whole, split)
        assert isinstance(lazy.images, data.ConcatRows)
        assert lazy.meta == full.meta
        for name in data.ARRAYS:
            np.testing.assert_array_equal(np.asarray(getattr(lazy, name)), getattr(full, name))

    merged = data.merge(shards, tmp_path / "merged")
    assert files(merged) == files(whole)
    assert data.merge(shards) == shards  # in place: the shards become one dataset
    assert files(shards) == files(whole)


def test_concat_rows_indexes_like_numpy() -> None:
    parts = [np.arange(12).reshape(3, 4), np.empty((0, 4), int), np.arange(12, 20).reshape(2, 4)]
    rows, whole = data.ConcatRows(parts), np.concatenate(parts)
    assert rows.shape == whole.shape and len(rows) == 5
    for key in (
        0,
        -1,
        3,
        slice(1, 4),
        slice(None, None, -2),
        [4, 0, 2],
        (slice(None), 1),
        (..., 2),
        (np.array([3, 1]), slice(1, 3)),
        np.array([True, False, True, False, True]),
    ):
        np.testing.assert_array_equal(rows[key], whole[key])
    np.testing.assert_array_equal(np.asarray(rows), whole)
    with pytest.raises(IndexError):
        rows[5]


def test_sequence_dataset_yields_float_frames(pendulum: Path) -> None:
    dataset = data.SequenceDataset(pendulum)
    assert len(dataset) == 20
    item = dataset[3]
    assert item.shape == (5, 3, 16, 16) and item.dtype == torch.float32
    assert item.min() >= 0.0 and item.max() <= 1.0
    expected = torch.from_numpy(np.array(data.load(pendulum).images[3])).permute(0, 3, 1, 2)
    torch.testing.assert_close(item * 255.0, expected.float())
    # workers get the path, not a copy of the data
    clone = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 2000
    assert torch.equal(clone[3], item)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch.shape == (4, 5, 3, 16, 16)
    test = data.SequenceDataset(data.load(pendulum, "test"))
    assert len(test) == 6


def test_rerun_is_a_no_op_and_a_different_dataset_is_refused(tmp_path: Path) -> None:
    out = data.generate(tmp_path / "d", **SMALL)
    stamp = (out / "meta.json").stat().st_mtime_ns
    assert data.generate(out, **SMALL) == out
    assert (out / "meta.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="already holds a different dataset"):
        data.generate(out, **{**SMALL, "seed": 5})
    data.generate(out, overwrite=True, **{**SMALL, "seed": 5})
    assert data.info(out)["seed"] == 5
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an hgn dataset; refusing"):
        data.generate(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_truncated_or_foreign_directories_are_refused(tmp_path: Path, pendulum: Path) -> None:
    with pytest.raises(UserError, match="no dataset at"):
        data.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"not an hgn dataset \(no meta.json\)"):
        data.load(tmp_path / "empty")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, content in files(pendulum).items():
        (copy / name).parent.mkdir(exist_ok=True)
        (copy / name).write_bytes(content)
    with open(copy / "test" / "images.npy", "r+b") as f:
        f.truncate(1000)
    data.load(copy, "train")  # the intact split still opens
    with pytest.raises(UserError, match=r"images\.npy is truncated"):
        data.load(copy, "test")
    (copy / "meta.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        data.load(copy)


def test_interrupted_generation_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    render = get_system("pendulum").render.__func__

    def flaky(self, q, size):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return render(self, q, size)

    monkeypatch.setattr("hgn.physics.systems.System.render", flaky)
    with pytest.raises(KeyboardInterrupt):
        data.generate(tmp_path / "d", **{**SMALL, "n_train": 200})
    assert list(tmp_path.iterdir()) == []


def test_terminated_cli_generation_leaves_nothing_behind(tmp_path: Path) -> None:
    """What a cluster scheduler does to a job: SIGTERM mid-way."""
    command = [sys.executable, "-m", "hgn", "data", "generate", "--train", "20000"]
    command += ["--test", "1", "--no-progress", "--out", str(tmp_path / "d")]
    job = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until it is writing its temporary directory
    time.sleep(0.3)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=180)  # generous: CI machines may be loaded
    assert job.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"system": "pendulumm"}, "unknown system"),
        ({"n_train": 0}, "--train"),
        ({"n_test": -3}, "--test"),
        ({"steps": 0}, "--steps"),
        ({"size": 0}, "--size"),
        ({"size": 8}, "minimum is 11"),
        ({"dt": 0.0}, "--dt must be a non-zero"),
        ({"shard": "3/3"}, "0 <= I < N"),
        ({"shard": "half"}, "I/N"),
        ({"length": 2.0}, "unknown constant"),
        ({"noise": -1.0}, "noise must be >= 0"),
        ({"seed": -1}, "--seed"),
    ],
)
def test_bad_arguments_are_user_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        data.generate(tmp_path / "d", **{**SMALL, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_cli_generate_info_show_merge(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["--system", "three-body", "--train", "10", "--test", "4", "--steps", "3"]
    common += ["--size", "16", "--no-progress", "--set", "orbit_noise=0.05"]
    for index in range(2):
        assert (
            main(
                ["data", "generate", *common, "--shard", f"{index}/2", "--out", str(tmp_path / "s")]
            )
            == 0
        )
    assert main(["data", "merge", str(tmp_path / "s")]) == 0
    assert main(["data", "info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "three-body" in out and "orbit_noise=0.05" in out and "train 10, test 4" in out
    assert main(["data", "info", "--json", str(tmp_path / "s")]) == 0
    assert json.loads(capsys.readouterr().out)["constants"]["orbit_noise"] == 0.05

    assert main(["data", "show", str(tmp_path / "s"), "--split", "test", "--n", "3"]) == 0
    import imageio.v3 as iio

    grid = iio.imread(tmp_path / "s" / "preview-test.png")
    assert grid.shape[0] > 3 * 16 and grid.shape[2] == 3
    gif = iio.imread(tmp_path / "s" / "preview-test.gif", index=None)
    assert gif.shape[0] == 4  # one GIF frame per time step
    assert main(["data", "show", str(tmp_path / "s"), "--out", str(tmp_path / "look")]) == 0
    assert (tmp_path / "look.png").is_file() and (tmp_path / "look.gif").is_file()

    capsys.readouterr()
    assert main(["data", "generate", "--system", "rocket", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hgn: error: unknown system 'rocket'") and err.count("\n") == 1
    assert main(["data", "generate", *common, "--set", "l", "--out", str(tmp_path / "x")]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "not an hgn dataset" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
