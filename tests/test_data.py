"""Datasets: what is stored, reproducibility, sharded writes into one store, fsspec URLs,
safety on bad input, the CLI."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
import zarr

from hgn import data
from hgn.cli import main
from hgn.data import store
from hgn.data.legacy import ConcatRows
from hgn.physics.systems import get_system
from hgn.utils import UserError

SMALL = {"n_train": 20, "n_test": 6, "steps": 4, "size": 16, "block": 8, "progress": False}


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(data.generate(tmp_path_factory.mktemp("ds") / "pendulum", **SMALL))


def arrays(path: str | Path, split: str = "train") -> dict[str, np.ndarray]:
    """Every array of a split, read whole."""
    s = data.load(path, split)
    named = {"images": s.images, "q": s.q, "p": s.p, "q_noisy": s.q_noisy, "p_noisy": s.p_noisy}
    named.update(s.values)
    return {k: np.asarray(v) for k, v in named.items() if v is not None}


def test_stored_arrays_shapes_and_meta(pendulum: Path) -> None:
    train = data.load(pendulum)
    assert len(train) == 20
    assert train.images.shape == (20, 5, 16, 16, 3) and train.images.dtype == np.uint8
    for name in ("q", "p", "q_noisy", "p_noisy"):
        array = getattr(train, name)
        assert array.shape == (20, 5, 1) and array.dtype == np.float32
        assert isinstance(array, data.ChunkedArray)  # lazily read
    meta = train.meta
    for key in ("system", "constants", "dt", "steps", "noise", "seed", "size", "dof", "n"):
        assert key in meta
    assert meta["split"] == "train" and meta["version"] and meta["noise"] == 0.1
    assert meta["has_states"] and meta["complete"]
    assert meta["constants"]["g"] == 3.0 and meta["constants"]["friction"] == 0.0
    test = data.load(pendulum, split="test")
    assert len(test) == 6 and test.meta["split"] == "test"
    assert not np.array_equal(test.q[:6], train.q[:6])


def test_other_tools_read_the_store_with_zarr(pendulum: Path) -> None:
    """The README's three lines: zarr reads every array hgn wrote, unchanged."""
    root = zarr.open_group(pendulum, mode="r")
    assert root.attrs["hgn"]["system"] == "pendulum"
    images = root["train/images"]
    np.testing.assert_array_equal(images[:], data.load(pendulum).images[:])
    np.testing.assert_array_equal(root["test/q_noisy"][:], data.load(pendulum, "test").q_noisy[:])
    assert images.metadata.dimension_names == ("trajectory", "time", "y", "x", "rgb")


def test_hgn_reads_chunks_that_zarr_wrote(tmp_path: Path, pendulum: Path) -> None:
    """The chunk format is zarr's own: chunks rewritten by zarr read back through hgn."""
    copy = tmp_path / "copy"
    data.generate(copy, **SMALL)
    images = zarr.open_array(copy / "train" / "images", mode="r+")
    changed = np.asarray(images[:]).copy()
    changed[3] = 7
    images[:] = changed
    np.testing.assert_array_equal(data.load(copy).images[:], changed)


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
        [np.asarray(split.q_noisy) - split.q[:], np.asarray(split.p_noisy) - split.p[:]]
    )
    assert residual.std() == pytest.approx(0.3, rel=0.15) and abs(residual.mean()) < 0.1
    clean = data.load(data.generate(tmp_path / "c", system="mass-spring", noise=0, **SMALL))
    np.testing.assert_array_equal(clean.q_noisy[:], clean.q[:])
    assert clean.meta["noise"] == 0


def test_generation_is_reproducible_by_seed(tmp_path: Path, pendulum: Path) -> None:
    again = data.generate(tmp_path / "again", **SMALL)
    for split in data.SPLITS:
        for name, array in arrays(again, split).items():
            np.testing.assert_array_equal(array, arrays(pendulum, split)[name])
    other = data.load(data.generate(tmp_path / "other", seed=1, **SMALL))
    assert not np.array_equal(other.q[:], data.load(pendulum).q[:])


def test_shard_jobs_write_one_store_equal_to_the_unsharded_one(tmp_path: Path) -> None:
    settings = {**SMALL, "system": "two-body", "n_train": 37, "n_test": 9}
    whole = data.generate(tmp_path / "whole", **settings)
    shards = tmp_path / "shards"
    for index in (2, 0):  # any order; the store is incomplete until shard 1 is there
        data.generate(shards, shard=f"{index}/3", **settings)
    with pytest.raises(UserError, match=r"incomplete: 2 of 3 shards are done; missing 1"):
        data.load(shards)
    assert not zarr.open_group(shards, mode="r").attrs["hgn"]["complete"]
    data.generate(shards, shard=(1, 3), **settings)
    assert sorted(p.name for p in shards.glob("hgn-part-*")) == [
        f"hgn-part-000{i}-of-0003.json" for i in range(3)
    ]
    parts = [json.loads(p.read_text()) for p in sorted(shards.glob("hgn-part-*"))]
    assert [p["rows"]["train"][0] for p in parts] == [0, 8, 24]  # whole blocks of 8
    assert [p["rows"]["test"] for p in parts] == [[0, 0], [0, 8], [8, 9]]  # an empty part
    for split in data.SPLITS:
        assert data.load(shards, split).meta["n"] == data.load(whole, split).meta["n"]
        for name, array in arrays(whole, split).items():
            np.testing.assert_array_equal(arrays(shards, split)[name], array)
    # rerunning a finished shard is a no-op; another partition is refused
    assert data.generate(shards, shard="1/3", **settings) == str(shards)
    with pytest.raises(UserError, match="already holds a different dataset"):
        data.generate(shards, shard="0/2", **{**settings, "seed": 4})


def test_metadata_writers_started_together_all_finish(tmp_path: Path) -> None:
    """Shard jobs a scheduler starts at the same moment all write the store's metadata;
    each must write under its own temporary name (a shared one let one job's rename take
    another's file: FileNotFoundError, seen with six shards on 16 cores)."""
    from concurrent.futures import ThreadPoolExecutor

    from hgn.data import store

    loc = store.Location(str(tmp_path), fsspec.filesystem("file"), str(tmp_path))

    def write(i: int) -> None:
        for _ in range(200):
            loc.write_json({"writer": i % 2}, "zarr.json")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    assert json.loads((tmp_path / "zarr.json").read_text())["writer"] in (0, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["zarr.json"]


def test_chunked_array_indexes_like_numpy(tmp_path: Path) -> None:
    out = data.generate(tmp_path / "d", **{**SMALL, "n_train": 45})
    lazy = data.load(out).images
    assert lazy.rows == 8  # chunks of 8 trajectories: 16x16x5 frames are small
    whole = np.asarray(lazy)
    for key in (
        0,
        -1,
        44,
        slice(3, 30),
        slice(None, None, -3),
        [40, 0, 2, 2, 17],
        np.array([9, 1, 44]),
        (slice(None), 1),
        (..., 2),
        (np.array([3, 1]), slice(1, 3)),
        np.arange(45) % 3 == 0,
    ):
        np.testing.assert_array_equal(lazy[key], whole[key])
    with pytest.raises(IndexError):
        lazy[45]


def test_concat_rows_of_old_shards_indexes_like_numpy() -> None:
    parts = [np.arange(12).reshape(3, 4), np.empty((0, 4), int), np.arange(12, 20).reshape(2, 4)]
    rows, whole = ConcatRows(parts), np.concatenate(parts)
    assert rows.shape == whole.shape and len(rows) == 5
    for key in (0, -1, 3, slice(1, 4), [4, 0, 2], (..., 2), np.array([True, False] * 2 + [True])):
        np.testing.assert_array_equal(rows[key], whole[key])


def test_old_npy_datasets_still_load(tmp_path: Path, pendulum: Path) -> None:
    old = tmp_path / "old"
    meta = {**data.info(pendulum), "format": 1, "shard": None}
    meta["splits"] = {
        s: {"start": 0, "stop": v["n"], "n": v["n"]} for s, v in meta["splits"].items()
    }
    for split in data.SPLITS:
        (old / split).mkdir(parents=True)
        for name, array in arrays(pendulum, split).items():
            np.save(old / split / f"{name}.npy", array)
    (old / "meta.json").write_text(json.dumps(meta))
    legacy = data.load(old)
    assert isinstance(legacy.images, np.memmap)
    np.testing.assert_array_equal(legacy.images, data.load(pendulum).images[:])
    assert data.info(old)["format"] == 1


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


def test_training_batches_read_random_rows(pendulum: Path) -> None:
    """What the trainer does when a split does not fit in memory: fancy row indexing."""
    images = data.load(pendulum).images
    rows = np.unique(np.random.default_rng(0).integers(0, 20, 8))
    np.testing.assert_array_equal(images[rows], np.asarray(images)[rows])


def test_rerun_is_a_no_op_and_a_different_dataset_is_refused(tmp_path: Path) -> None:
    out = Path(data.generate(tmp_path / "d", **SMALL))
    stamp = (out / "zarr.json").stat().st_mtime_ns
    assert data.generate(out, **SMALL) == str(out)
    assert (out / "zarr.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="already holds a different dataset"):
        data.generate(out, **{**SMALL, "seed": 5})
    (out / "notes.txt").write_text("mine")  # a user's file inside a dataset directory
    data.generate(out, overwrite=True, **{**SMALL, "seed": 5})
    assert data.info(out)["seed"] == 5
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite replaced only the dataset


def test_overwrite_never_touches_a_directory_hgn_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(UserError, match="holds no hgn dataset; refusing"):
            data.generate(mine, overwrite=overwrite, **SMALL)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        data.generate(tmp_path / "file", **SMALL)


def test_damaged_stores_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no dataset at"):
        data.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"not an hgn dataset \(no zarr.json\)"):
        data.load(tmp_path / "empty")
    out = Path(data.generate(tmp_path / "d", **SMALL))
    chunk = sorted((out / "test" / "images").glob("c.*"))[0]
    chunk.write_bytes(chunk.read_bytes()[:20])
    data.load(out, "train").images[:]  # the intact split still reads
    with pytest.raises(UserError, match="damaged: a chunk of test/images does not decode"):
        data.load(out, "test").images[:]
    chunk.unlink()
    with pytest.raises(UserError, match="damaged: chunk 0 of test/images is missing"):
        data.load(out, "test").images[0]
    (out / "zarr.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        data.load(out)


def test_interrupted_generation_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    render = get_system("pendulum").render.__func__

    def flaky(self, q, size, out=None):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return render(self, q, size, out)

    monkeypatch.setattr("hgn.physics.systems.System.render", flaky)
    with pytest.raises(KeyboardInterrupt):
        data.generate(tmp_path / "d", **{**SMALL, "n_train": 200})
    assert list(tmp_path.iterdir()) == []


def _cli_job(out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "hgn", "data", "generate", "--train", "20000"]
    command += ["--test", "1", "--size", "32", "--no-progress", "--out", str(out)]
    job = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "train" / "images").is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until it is writing chunks
    time.sleep(0.5)
    return job


def test_terminated_cli_generation_leaves_nothing_behind(tmp_path: Path) -> None:
    """What a cluster scheduler does to a job: SIGTERM mid-way."""
    job = _cli_job(tmp_path / "d")
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=180)  # generous: CI machines may be loaded
    assert job.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_killed_cli_generation_never_reads_as_complete(tmp_path: Path) -> None:
    """SIGKILL leaves chunks behind, but the store reads as incomplete, and the same
    command finishes it."""
    job = _cli_job(tmp_path / "d")
    job.kill()
    job.communicate(timeout=60)
    with pytest.raises(UserError, match="incomplete: its generation was interrupted"):
        data.load(tmp_path / "d")
    assert main(["data", "info", str(tmp_path / "d")]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"system": "pendulumm"}, "unknown system 'pendulumm' \\(did you mean 'pendulum'"),
        ({"n_train": 0}, "--train"),
        ({"n_test": -3}, "--test"),
        ({"steps": 0}, "--steps"),
        ({"size": 0}, "--size must be one of 16, 32, 64, 128"),
        ({"size": 4000}, "--size must be one of 16, 32, 64, 128"),
        ({"size": 24}, "--size must be one of"),
        ({"dt": 0.0}, "--dt must be a non-zero"),
        ({"shard": "3/3"}, "0 <= I < N"),
        ({"shard": "half"}, "I/N"),
        ({"length": 2.0}, "unknown constant"),
        ({"noise": -1.0}, "noise must be >= 0"),
        ({"seed": -1}, "--seed"),
        ({"vary": {"r_min": (0.1, 0.2)}}, "cannot vary 'r_min'"),
        ({"vary": {"l": (2.0, 1.0)}}, "0 < low <= high"),
        ({"style": "neon"}, "unknown style"),
    ],
)
def test_bad_arguments_are_user_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        data.generate(tmp_path / "d", **{**SMALL, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_size_on_disk_is_printed_and_checked_against_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    data.generate(tmp_path / "d", report=lines.append, **SMALL)
    assert len(lines) == 1 and "on disk (an estimate from compressing" in lines[0]
    monkeypatch.setattr(store.Location, "free_bytes", lambda self: 1000)
    with pytest.raises(UserError, match=r"needs about .* but .* has only 1.0 KB free"):
        data.generate(tmp_path / "e", **SMALL)
    assert not (tmp_path / "e").exists()


def test_stores_on_fsspec_filesystems(tmp_path: Path) -> None:
    url = data.generate("memory://hgn-test/pendulum", **SMALL)
    assert url == "memory://hgn-test/pendulum"
    split = data.load(url)
    reference = get_system("pendulum").render(np.asarray(split.q_noisy), 16)
    np.testing.assert_array_equal(split.images[:], reference)
    assert pickle.loads(pickle.dumps(split)).images[2].shape == (5, 16, 16, 3)
    as_file = data.generate(f"file://{tmp_path}/f", **SMALL)
    np.testing.assert_array_equal(data.load(as_file).images[:], data.load(tmp_path / "f").images[:])
    with pytest.raises(UserError, match=r"needs the s3fs package \(pip install s3fs\)"):
        data.generate("s3://bucket/data", **SMALL)
    with pytest.raises(UserError, match="not a protocol fsspec knows"):
        data.load("nosuch://x/y")


def test_random_variants_are_recorded_per_trajectory(tmp_path: Path) -> None:
    out = data.generate(
        tmp_path / "v",
        system="pendulum",
        vary={"l": (0.5, 1.0), "m": (0.5, 1.5)},
        random_colours=True,
        offset=0.2,
        friction=0.05,
        style="dm",
        **{**SMALL, "size": 32},
    )
    split = data.load(out)
    assert set(split.values) == {"l", "m", "colours", "shift"}
    lengths = np.asarray(split.values["l"])
    assert lengths.shape == (20,) and 0.5 <= lengths.min() < lengths.max() <= 1.0
    assert np.asarray(split.values["colours"]).shape == (20, 1, 3)
    assert np.abs(np.asarray(split.values["shift"])).max() <= 0.2
    meta = split.meta
    assert meta["variant"]["hamiltonian"] is False and meta["variant"]["style"] == "dm"
    # the pictures are what the recorded values draw
    system = data.system_of(meta)
    values = {k: torch.from_numpy(np.asarray(v)) for k, v in split.values.items()}
    drawn = system.bind(values).render(torch.from_numpy(np.asarray(split.q_noisy)), 32)
    np.testing.assert_array_equal(drawn.numpy(), split.images[:])


def test_cli_generate_info_show_presets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["--system", "three-body", "--train", "10", "--test", "4", "--frames", "4"]
    common += ["--size", "16", "--no-progress", "--set", "orbit_noise=0.05"]
    for index in range(2):
        args = ["data", "generate", *common, "--shard", f"{index}/2", "--out"]
        assert main([*args, str(tmp_path / "s")]) == 0
    assert "on disk (an estimate" in capsys.readouterr().err
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
    assert main(["data", "show", str(tmp_path / "s")]) == 0  # its own previews: replaced
    (tmp_path / "look.png").write_text("a user's picture")
    capsys.readouterr()
    assert main(["data", "show", str(tmp_path / "s"), "--out", str(tmp_path / "look")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "look.png").read_text() == "a user's picture"
    args = ["data", "show", str(tmp_path / "s"), "--out", str(tmp_path / "look"), "--overwrite"]
    assert main(args) == 0

    assert main(["data", "presets"]) == 0
    listing = capsys.readouterr().out
    assert "dm-double-pendulum-colors" in listing and "paper-pendulum" in listing
    preset = ["data", "generate", "--preset", "dm-pendulum", "--train", "8", "--test", "2"]
    assert main([*preset, "--frames", "4", "--no-progress", "--out", str(tmp_path / "p")]) == 0
    meta = data.info(tmp_path / "p")
    assert (meta["dt"], meta["size"], meta["noise"], meta["constants"]["factor"]) == (
        0.05,
        32,
        0.0,
        1.0,
    )
    assert meta["steps"] == 3 and meta["render"]["style"] == "dm"  # explicit flags win

    capsys.readouterr()
    assert main(["data", "generate", "--preset", "dm-pendulum-colorz", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hgn: error: unknown preset 'dm-pendulum-colorz' (did you mean")
    assert err.count("\n") == 1
    assert main(["data", "generate", "--system", "rocket", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hgn: error: unknown system 'rocket'") and err.count("\n") == 1
    assert main(["data", "generate", *common, "--set", "l", "--out", str(tmp_path / "x")]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["data", "generate", *common[:-2], "--vary", "g=1", "--out", "x"]) == 2
    assert "LOW:HIGH" in capsys.readouterr().err
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "not an hgn dataset" in capsys.readouterr().err
    assert main(["data", "generate", "--out", "gs://bucket/d", "--train", "4"]) == 2
    assert "needs the gcsfs package" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
