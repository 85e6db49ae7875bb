"""`hgn data import`: every source kind on tiny inputs made here, and every bad input."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from helpers import TINY_HGN, model_sets, set_args

from hgn import data
from hgn.cli import main
from hgn.data.sources import resample
from hgn.utils import UserError

RNG = np.random.default_rng(0)


def moving_square(n: int, t: int, h: int = 20, w: int = 20) -> np.ndarray:
    """(n, t, h, w, 3) uint8: a bright square drifting over grey, a sequence per row."""
    frames = np.full((n, t, h, w, 3), 90, np.uint8)
    for k in range(n):
        for i in range(t):
            y, x = (3 + k + i) % (h - 4), (2 + 2 * i) % (w - 4)
            frames[k, i, y : y + 4, x : x + 4] = (230, 40 + 20 * k, 60)
    return frames


def write_frames(folder: Path, frames: np.ndarray, suffix: str = ".png") -> None:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        iio.imwrite(folder / f"frame_{i:03d}{suffix}", frame)


def everything(path: str | Path) -> dict[str, np.ndarray]:
    return {split: np.asarray(data.load(path, split).images) for split in data.SPLITS}


def test_npy_in_either_layout_with_crop_split_and_no_states(tmp_path: Path) -> None:
    frames = moving_square(10, 5, 20, 24)  # wider than tall: centre-cropped
    np.save(tmp_path / "seqs.npy", frames)
    notes: list[str] = []
    out = data.import_sequences(
        tmp_path / "seqs.npy", tmp_path / "d", size=16, test_fraction=0.2, report=notes.append
    )
    assert any("centre-cropped to 20×20" in line for line in notes)
    train, test = data.load(out), data.load(out, "test")
    assert (len(train), len(test)) == (8, 2)
    assert train.images.shape == (8, 5, 16, 16, 3) and not train.has_states
    assert train.q is None and train.meta["has_states"] is False and train.meta["dt"] == 0.125
    # the split is a seeded permutation of all sequences: together they are the source
    expected = resample(frames[:, :, :, 2:22].reshape(-1, 20, 20, 3), 16).reshape(10, 5, 16, 16, 3)
    got = np.concatenate([train.images[:], test.images[:]])
    assert sorted(map(bytes, got)) == sorted(map(bytes, expected))
    assert not np.array_equal(got, expected)  # shuffled, not in source order
    # channels-first floats give the same dataset
    floats = np.moveaxis(frames.astype(np.float32) / 255.0, -1, 2)
    np.savez(tmp_path / "seqs.npz", images=floats, labels=np.arange(10))
    again = data.import_sequences(tmp_path / "seqs.npz", tmp_path / "e", size=16, test_fraction=0.2)
    for split, images in everything(again).items():
        np.testing.assert_allclose(images, everything(out)[split], atol=1)


def test_grayscale_becomes_rgb_and_frames_are_area_averaged() -> None:
    gray = np.zeros((1, 4, 4, 1), np.uint8)
    gray[0, :2, :2] = 200  # one bright quarter
    out = resample(gray, 2)
    assert out.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(out[0, :, :, 0], [[200, 0], [0, 0]])
    assert (out[..., 0] == out[..., 2]).all()
    mixed = np.zeros((1, 4, 4, 3), np.uint8)
    mixed[0, 0, 0] = 255  # one pixel of a 2×2 block: a quarter of its light
    assert resample(mixed, 2)[0, 0, 0, 0] == 64


def test_folders_of_frames_and_one_long_sequence_cut_into_windows(tmp_path: Path) -> None:
    seqs = moving_square(5, 6)
    for k, seq in enumerate(seqs):
        write_frames(tmp_path / "frames" / f"seq{k}", seq)
    out = data.import_sequences(tmp_path / "frames", tmp_path / "d", size=16, test_fraction=0.2)
    meta = data.info(out)
    assert (meta["n_train"], meta["n_test"], meta["steps"]) == (4, 1, 5)
    assert meta["source"] == "imported frames"
    # one folder of 11 frames, windows of 4 every 2 frames: starts 0, 2, 4, 6
    write_frames(tmp_path / "long", moving_square(1, 11)[0], ".jpg")
    out = data.import_sequences(
        tmp_path / "long", tmp_path / "w", size=16, frames=4, stride=2, test_fraction=0.25
    )
    meta = data.info(out)
    assert (meta["n_train"] + meta["n_test"], meta["steps"]) == (4, 3)


@pytest.mark.slow
def test_videos_one_per_sequence_and_one_long_video(tmp_path: Path) -> None:
    clip = moving_square(1, 12, 32, 32)[0]
    (tmp_path / "videos").mkdir()
    for k in range(3):
        iio.imwrite(tmp_path / "videos" / f"v{k}.mp4", clip, plugin="pyav", codec="mpeg4", fps=10)
    out = data.import_sequences(tmp_path / "videos", tmp_path / "d", size=32, test_fraction=0.34)
    split = data.load(out)
    assert split.images.shape[1:] == (12, 32, 32, 3)
    assert split.meta["dt"] == pytest.approx(0.1)  # 1/fps
    assert np.abs(split.images[0].astype(int) - clip).mean() < 8  # lossy, but the same
    out = data.import_sequences(
        tmp_path / "videos" / "v0.mp4", tmp_path / "w", frames=4, stride=4, dt=0.5
    )
    meta = data.info(out)
    assert (meta["n_train"] + meta["n_test"], meta["dt"], meta["size"]) == (3, 0.5, 32)
    (tmp_path / "gifs").mkdir()
    for k in range(2):
        iio.imwrite(tmp_path / "gifs" / f"g{k}.gif", clip[:5], duration=100, loop=0)
    out = data.import_sequences(tmp_path / "gifs", tmp_path / "g", size=16, test_fraction=0.5)
    assert data.load(out).images.shape == (1, 5, 16, 16, 3)


def test_imported_data_trains(tmp_path: Path) -> None:
    """Downstream: `hgn train` reads an imported dataset like a generated one."""
    np.save(tmp_path / "seqs.npy", moving_square(6, 7, 16, 16))
    out = data.import_sequences(tmp_path / "seqs.npy", tmp_path / "d", size=16)
    sets = set_args([*model_sets(TINY_HGN), "train.batch_size=2", "train.lr=1e-3"])
    run = tmp_path / "run"
    argv = ["train", "--data", str(out), "--out", str(run), "--steps", "2", "--model", "hgn"]
    assert main([*argv, *sets]) == 0
    assert (run / "checkpoint.pt").is_file()


def bad(tmp_path: Path, name: str) -> Path:
    """Make the bad input ``name`` under ``tmp_path`` and return it."""
    src = tmp_path / name
    if name == "mixed":
        write_frames(src / "a", moving_square(1, 3)[0])
        iio.imwrite(src / "a" / "frame_009.png", moving_square(1, 1, 24, 24)[0, 0])
        write_frames(src / "b", moving_square(1, 4)[0])
    elif name == "short":
        write_frames(src / "a", moving_square(1, 3)[0])
        write_frames(src / "b", moving_square(1, 1)[0])
    elif name == "empty":
        src.mkdir()
    elif name == "truncated-image":
        write_frames(src / "a", moving_square(1, 3)[0])
        write_frames(src / "b", moving_square(1, 3)[0])
        png = src / "b" / "frame_001.png"
        png.write_bytes(png.read_bytes()[:40])
    elif name == "truncated-video":
        src.mkdir()
        clip = moving_square(1, 12, 32, 32)[0]
        for k in range(2):
            iio.imwrite(src / f"v{k}.mp4", clip, plugin="pyav", codec="mpeg4", fps=10)
        (src / "v1.mp4").write_bytes((src / "v1.mp4").read_bytes()[:300])
    elif name in ("nan.npy", "inf.npy", "range.npy", "rank.npy"):
        frames = moving_square(4, 3).astype(np.float32) / 255.0
        if name == "nan.npy":
            frames[2, 1, 3, 3, 0] = np.nan
        elif name == "inf.npy":
            frames[1, 0, 0, 0, 1] = np.inf
        elif name == "range.npy":
            frames[3] *= 255.0
        else:
            frames = frames[0]
        np.save(src, frames)
    elif name == "truncated.npy":
        np.save(src, moving_square(4, 3))
        src.write_bytes(src.read_bytes()[:500])
    return src


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mixed", r"frame_009.png: 24×24 frame in a sequence of 20×20 frames \(mixed"),
        ("short", r"b: a sequence of 1 frame\(s\); sequences need at least 2"),
        ("empty", "empty folder"),
        ("truncated-image", r"frame_001.png: unreadable or truncated image"),
        pytest.param(  # writes an MP4 first: seconds
            "truncated-video", r"v1.mp4: unreadable or truncated video", marks=pytest.mark.slow
        ),
        ("nan.npy", r"nan.npy: float frames must be finite and in \[0, 1\]; found NaN"),
        ("inf.npy", r"inf.npy: .*found Inf"),
        ("range.npy", r"range.npy: .*found values from"),
        ("rank.npy", r"rank.npy: an array of shape \(3, 20, 20, 3\) \(rank 4\); expected rank 5"),
        ("truncated.npy", r"truncated.npy: unreadable or truncated array file"),
    ],
)
def test_bad_inputs_are_one_line_and_leave_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str, message: str
) -> None:
    src = bad(tmp_path, name)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message):
        data.import_sequences(src, out, size=16, test_fraction=0.5)
    assert not out.exists()
    capsys.readouterr()
    assert main(["data", "import", str(src), "--out", str(out), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hgn: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_bad_options(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", moving_square(4, 3, 16, 16))
    src = tmp_path / "s.npy"
    for kwargs, message in [
        ({"size": 20}, "--size must be one of 16, 32, 64, 128"),
        ({"test_fraction": 1.0}, "--test-fraction must be between 0 and 1"),
        ({"frames": 9}, "no sequence has 9 frames"),
        ({"stride": 2}, "--stride needs --frames"),
        ({"dt": -1.0}, "--dt must be a positive number"),
    ]:
        with pytest.raises(UserError, match=message):
            data.import_sequences(src, tmp_path / "o", **kwargs)
    np.save(tmp_path / "one.npy", moving_square(1, 5, 16, 16))
    with pytest.raises(UserError, match=r"1 sequence\(s\) cannot be split .* use --frames"):
        data.import_sequences(tmp_path / "one.npy", tmp_path / "o")
    with pytest.raises(UserError, match="no such file or folder"):
        data.import_sequences(tmp_path / "nothing", tmp_path / "o")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a source hgn can import"):
        data.import_sequences(tmp_path / "notes.txt", tmp_path / "o")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep")
    with pytest.raises(UserError, match="holds no hgn dataset; refusing"):
        data.import_sequences(src, mine, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "o").exists()
