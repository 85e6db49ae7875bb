"""The defects of issue 25 ("nothing lost, nothing hung"), each as the behaviour a user
relies on: one job's store never mixes with another's; no command deletes or replaces
what it did not write; --resume trains on the data it was trained on; a store's arrays
agree with its metadata; a store whose parts are all done gets finished; sizes are
bounded by the machine; bad input is one line and exit 2, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import sets

from hgn import data as hgn_data
from hgn.cli import main
from hgn.data import store
from hgn.runs import CHECKPOINT
from hgn.utils import (
    OUTPUT_MARKER,
    UserError,
    atomic_path,
    load_checkpoint,
    save_checkpoint,
)

torch.set_num_threads(1)

TINY_DATA = {"n_train": 8, "n_test": 4, "steps": 6, "size": 16, "progress": False}


# ----------------------------------------------------------------------------- helpers


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run ``hgn ARGV`` in-process: (exit status, stdout, stderr). A usage error's
    SystemExit counts as its status; any other exception propagates (a traceback)."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run a command that must be refused: exit 2, one line ``hgn: error: ...``."""
    code, _, err = run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hgn: error: "), (code, err)
    return lines[0]


def listing(root: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``root`` with its bytes (None for a folder)."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = path.read_bytes() if path.is_file() else None
    return found


def edit_json(path: Path, change) -> None:
    """Rewrite the JSON file ``path`` through ``change(document)`` (in place)."""
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "ms16"
    hgn_data.generate(out, "mass-spring", **TINY_DATA)
    return out


@pytest.fixture
def copy(dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset, free to damage."""
    return Path(shutil.copytree(dataset, tmp_path / "copy"))


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rel-runs") / "run"
    argv = ["train", "--data", str(dataset), "--out", str(out), "--steps", "2"]
    assert main([*argv, "--no-progress", *sets()]) == 0
    return out


def train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    argv = ["train", "--data", str(data), "--out", str(out), "--steps", "1", "--no-progress"]
    return [*argv, *extra]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


# ----------------------------------------------------------------------------- defect 1


def test_two_jobs_started_together_with_different_seeds_never_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both jobs pass the emptiness check before either creates the store (a barrier
    holds them there): exactly one creates it, the other is refused before it writes a
    chunk, and the store is complete with the creator's content only."""
    out = tmp_path / "shared"
    barrier = threading.Barrier(2, timeout=60)
    real_create = store.create

    def create_together(*args, **kwargs):
        barrier.wait()
        return real_create(*args, **kwargs)

    monkeypatch.setattr(store, "create", create_together)
    outcome: dict[int, BaseException | None] = {}

    def job(seed: int) -> None:
        try:
            hgn_data.generate(out, "mass-spring", seed=seed, **TINY_DATA)
            outcome[seed] = None
        except BaseException as exc:
            outcome[seed] = exc

    threads = [threading.Thread(target=job, args=(seed,)) for seed in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    failed = [seed for seed, exc in outcome.items() if exc is not None]
    assert len(failed) == 1, outcome
    assert isinstance(outcome[failed[0]], UserError)
    assert "already holds a different dataset" in str(outcome[failed[0]])
    winner = 1 - failed[0]
    meta = hgn_data.info(out)
    assert meta["complete"] and meta["seed"] == winner
    monkeypatch.setattr(store, "create", real_create)
    alone = hgn_data.generate(tmp_path / "alone", "mass-spring", seed=winner, **TINY_DATA)
    for split in ("train", "test"):
        np.testing.assert_array_equal(
            hgn_data.load(out, split).images[:], hgn_data.load(alone, split).images[:]
        )


# ----------------------------------------------------------------------------- defect 6


def test_overwrite_keeps_a_users_files_inside_the_dataset(copy: Path) -> None:
    (copy / "train" / "my_labels.csv").write_text("0,1\n")
    (copy / "test" / "notes").mkdir()
    (copy / "test" / "notes" / "n.txt").write_text("mine")
    hgn_data.generate(copy, "mass-spring", seed=3, overwrite=True, **TINY_DATA)
    assert hgn_data.info(copy)["seed"] == 3
    assert (copy / "train" / "my_labels.csv").read_text() == "0,1\n"
    assert (copy / "test" / "notes" / "n.txt").read_text() == "mine"


def test_show_replaces_its_own_preview_but_never_a_users(
    copy: Path, capsys: pytest.CaptureFixture
) -> None:
    code, _, _ = run(["data", "show", str(copy)], capsys)
    assert code == 0 and (copy / "preview-train.png").is_file()
    assert run(["data", "show", str(copy), "--n", "2"], capsys)[0] == 0  # its own: replaced
    (copy / "preview-train.png").write_bytes(b"the user's picture")
    assert "already exists" in refused(["data", "show", str(copy)], capsys)
    assert (copy / "preview-train.png").read_bytes() == b"the user's picture"
    hgn_data.generate(copy, "mass-spring", seed=4, overwrite=True, **TINY_DATA)
    assert (copy / "preview-train.png").read_bytes() == b"the user's picture"
    assert not (copy / "preview-train.gif").exists()  # hgn's own, removed with its dataset


def test_resume_into_an_unmarked_folder_keeps_a_users_config(
    trained: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(trained / CHECKPOINT, folder / CHECKPOINT)
    (folder / "config.yaml").write_text("my: own settings\n")
    before = listing(folder)
    argv = [*train_argv(dataset, folder), "--resume"]
    assert "config.yaml is not the one hgn wrote" in refused(argv, capsys)
    assert listing(folder) == before


def test_a_stray_rank_changes_nothing(
    trained: Path, dataset: Path, tmp_path: Path, capsys, clean_env
) -> None:
    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    before = listing(run_dir)
    clean_env.setenv("RANK", "1")
    refused([*train_argv(dataset, run_dir), *sets("train.lr=2e-3")], capsys)
    assert listing(run_dir) == before


# ----------------------------------------------------------------------------- defect 4


def test_resume_refuses_another_seeds_data(
    trained: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    other = hgn_data.generate(tmp_path / "seed1", "mass-spring", seed=1, **TINY_DATA)
    record = load_checkpoint(trained / CHECKPOINT)["trained_on"]
    assert record["fingerprint"] == hgn_data.info(dataset)["fingerprint"]
    assert hgn_data.info(other)["fingerprint"] != record["fingerprint"]
    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    before = listing(run_dir)
    argv = [*train_argv(Path(other), run_dir), "--resume", "--steps", "3"]
    assert "fingerprint" in refused(argv, capsys)
    assert listing(run_dir) == before


def test_imports_of_equal_size_have_different_fingerprints(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    prints = []
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 255, (6, 5, 16, 16, 3), np.uint8))
        out = hgn_data.import_sequences(tmp_path / f"{name}.npy", tmp_path / f"{name}-ds")
        prints.append(hgn_data.info(out)["fingerprint"])
    assert prints[0] != prints[1] and all(len(p) == 32 for p in prints)


def test_old_records_without_fingerprint_compare_seeds() -> None:
    from hgn.runs import data_mismatch

    record = {"system": "pendulum", "seed": 0, "steps": 30, "n_train": 10}
    meta = {**record, "seed": 1}
    assert data_mismatch(record, meta) is None  # evaluate: other data of a kind is fine
    assert "seed 1 (trained on 0)" in (data_mismatch(record, meta, same_data=True) or "")
    assert data_mismatch(record, record, same_data=True) is None


# ----------------------------------------------------------------------------- defect 3


def test_a_wrong_dtype_in_the_array_metadata_is_refused(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    edit_json(copy / "train" / "images" / "zarr.json", lambda d: d.update(data_type="float32"))
    out = tmp_path / "run"
    assert "train/images is float32, hgn stores uint8" in refused(
        [*train_argv(copy, out), *sets()], capsys
    )
    assert not out.exists()


def test_arrays_must_agree_with_the_metadata_size(copy: Path) -> None:
    edit_json(copy / "zarr.json", lambda d: d["attributes"]["hgn"].update(size=32))
    with pytest.raises(UserError, match=r"train/images has shape \(8, 7, 16, 16, 3\)"):
        hgn_data.load(copy)


# ----------------------------------------------------------------------------- defect 5


def test_a_store_whose_parts_are_all_done_is_finished_by_a_rerun(copy: Path) -> None:
    edit_json(copy / "zarr.json", lambda d: d["attributes"]["hgn"].update(complete=False))
    with pytest.raises(UserError, match="all 1 part"):
        hgn_data.info(copy)
    hgn_data.generate(copy, "mass-spring", **TINY_DATA)
    assert hgn_data.info(copy)["complete"]


def test_sharded_store_with_every_marker_is_finished_by_any_shard(tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    settings = {**TINY_DATA, "n_train": 8, "block": 4}
    for index in range(2):
        hgn_data.generate(out, "mass-spring", shard=f"{index}/2", **settings)
    edit_json(out / "zarr.json", lambda d: d["attributes"]["hgn"].update(complete=False))
    with pytest.raises(UserError, match="all 2 part"):
        hgn_data.info(out)
    hgn_data.generate(out, "mass-spring", shard="1/2", **settings)
    assert hgn_data.info(out)["complete"]


# ----------------------------------------------------------------------------- defect 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shard", "0/99999999999"], "--shard I/N allows N up to 9999"),
        (["--frames", "100000001"], "of memory"),
        (["--set", "g=1e308"], "sub-steps per frame"),
        (["--train", "10000000000000"], "free"),
    ],
)
def test_generate_bounds_its_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    argv = ["data", "generate", "--train", "4", "--test", "2", "--frames", "5", "--size", "16"]
    argv += ["--no-progress", "--out", str(tmp_path / "d"), *extra]
    code, _, err = run(argv, capsys)
    lines = err.strip().splitlines()  # the size estimate may come first
    assert code == 2 and lines[-1].startswith("hgn: error: ") and message in lines[-1]
    assert len(lines) <= 2 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_info_of_a_store_claiming_a_huge_part_count_returns(copy: Path) -> None:
    edit_json(copy / "zarr.json", lambda d: d["attributes"]["hgn"].update(parts=99999999999))
    with pytest.raises(UserError, match="parts"):
        hgn_data.info(copy)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "{run}", "--n", "100000000", "--out", "{tmp}/s.gif"], "--n must be at most"),
        (["sample", "{run}", "--frames", "10000001", "--out", "{tmp}/s.gif"], "--frames must"),
        (
            [
                "rollout",
                "{run}",
                "--data",
                "{data}",
                "--frames",
                "10000001",
                "--out",
                "{tmp}/r.gif",
            ],
            "--frames must be at most",
        ),
        (["sample", "{run}", "--seed", "-1", "--out", "{tmp}/s.gif"], "--seed must be"),
    ],
)
def test_picture_commands_bound_their_sizes(
    trained: Path,
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    argv: list[str],
    message: str,
) -> None:
    filled = [a.format(run=trained, data=dataset, tmp=tmp_path) for a in argv]
    assert message in refused(filled, capsys)
    assert list(tmp_path.iterdir()) == []


def test_train_bounds_threads_and_model_size(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    argv = [*train_argv(dataset, out), *sets()]
    assert "--threads must be at most" in refused([*argv, "--threads", "100000"], capsys)
    huge = sets("model.latent_channels=100000", "model.hamiltonian_filters=[100000, 100000]")
    assert "of memory" in refused([*train_argv(dataset, out), *huge], capsys)
    assert not out.exists()


# ----------------------------------------------------------------------------- defect 7


def test_an_out_under_a_file_is_one_line(
    dataset: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    under = str(afile / "sub")
    commands = [
        ["data", "generate", "--train", "4", "--test", "2", "--size", "16", "--out", under],
        [*train_argv(dataset, Path(under)), *sets()],
        ["evaluate", str(trained), "--data", str(dataset), "--out", under, "--no-progress"],
    ]
    for argv in commands:
        assert "afile.txt" in refused(argv, capsys)
    assert afile.read_text() == "x"


def test_a_read_only_out_is_refused_before_the_work(
    dataset: Path,
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-only folder (for root, who writes anywhere, a read-only mount is
    simulated: creating a file there fails with EROFS) is refused before evaluating."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    real = tempfile.TemporaryFile

    def read_only_mount(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == locked:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    if os.geteuid() == 0:
        monkeypatch.setattr(tempfile, "TemporaryFile", read_only_mount)
    try:
        argv = ["evaluate", str(trained), "--data", str(dataset), "--no-progress"]
        assert "cannot write" in refused([*argv, "--out", str(locked / "e")], capsys)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def _root_meta(change):
    return lambda d: change(d["attributes"]["hgn"])


MALFORMED = {
    "splits missing": ("zarr.json", _root_meta(lambda m: m.pop("splits"))),
    "splits a string": ("zarr.json", _root_meta(lambda m: m.update(splits="train"))),
    "attributes null": ("zarr.json", lambda d: d.update(attributes=None)),
    "size a string": ("zarr.json", _root_meta(lambda m: m.update(size="16"))),
    "steps negative": ("zarr.json", _root_meta(lambda m: m.update(steps=-3))),
    "codecs a string": ("train/images/zarr.json", lambda d: d.update(codecs="blosc")),
    "int16 images": ("train/images/zarr.json", lambda d: d.update(data_type="int16")),
    "shape of 32": (
        "train/images/zarr.json",
        lambda d: d.update(shape=[8, 7, 32, 32, 3]),
    ),
    "chunks of 0 rows": (
        "train/q/zarr.json",
        lambda d: d["chunk_grid"]["configuration"].update(chunk_shape=[0, 7, 1]),
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_store_metadata_is_one_line(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    name, change = MALFORMED[case]
    edit_json(copy / name, change)
    before = listing(copy)
    refused(["data", "show", str(copy), "--out", str(tmp_path / "p")], capsys)
    refused([*train_argv(copy, tmp_path / "run"), *sets()], capsys)
    assert listing(copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_value_names_cannot_lead_outside_the_store(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A per-trajectory value's name becomes a path part: ``../../outside`` once made
    hgn read an array beside the store."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(copy / "train" / "q" / "zarr.json", outside / "zarr.json")
    for chunk in (copy / "train" / "q").glob("c.*"):
        shutil.copy(chunk, outside / chunk.name)
    values = {"values": ["../../outside"]}
    edit_json(copy / "zarr.json", _root_meta(lambda m: m["variant"].update(values)))
    assert "are not array names" in refused(
        ["data", "show", str(copy), "--out", str(tmp_path / "p")], capsys
    )


@pytest.mark.parametrize(
    "payload",
    [
        torch.zeros(3),
        {"config": {}, "step": 1},
        {"config": {}, "state": {}, "step": "abc"},
    ],
    ids=["plain tensor", "no state", "step abc"],
)
def test_a_checkpoint_that_is_not_hgns_is_one_line(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, payload: object
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save(payload, folder / CHECKPOINT)
    (folder / OUTPUT_MARKER).write_text('{"written_by": "hgn train"}\n')
    before = listing(folder)
    assert "not an hgn checkpoint" in refused([*train_argv(dataset, folder), "--resume"], capsys)
    argv = ["sample", str(folder), "--out", str(tmp_path / "s.gif")]
    assert "not an hgn checkpoint" in refused(argv, capsys)
    assert listing(folder) == before


def test_bad_import_sources_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    np.save(tmp_path / "empty.npy", np.zeros((0, 5, 16, 16, 3), np.uint8))
    np.save(tmp_path / "zero.npy", np.zeros((4, 5, 0, 0, 3), np.uint8))
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for source in ("empty.npy", "zero.npy", "loop"):
        argv = ["data", "import", str(tmp_path / source), "--out", str(tmp_path / "o")]
        refused(argv, capsys)
    assert not (tmp_path / "o").exists()


def test_flow_data_beyond_float32_squares_is_one_line(tmp_path: Path) -> None:
    from hgn.flows.targets import load_array

    points = np.zeros((8, 2), np.float32)
    points[0, 0], points[1, 1] = 1e38, -1e38
    np.save(tmp_path / "big.npy", points)
    with pytest.raises(UserError, match="beyond"):
        load_array(tmp_path / "big.npy")


def test_a_truncated_cell_result_is_one_line(tmp_path: Path) -> None:
    from hgn.experiments.reproduce.cells import finished_cells

    cell = tmp_path / "cells" / "pendulum" / "hgn"
    cell.mkdir(parents=True)
    (cell / "result.json").write_text('{"system": "pend')
    with pytest.raises(UserError, match=r"result\.json is unreadable or truncated"):
        finished_cells(tmp_path)


@pytest.mark.parametrize(
    ("env", "option", "message"),
    [
        ({"RANK": "abc"}, [], "RANK='abc' is not a valid count"),
        ({"WORLD_SIZE": "2"}, [], "launch with torchrun"),
        ({}, ["--device", "meta"], "unknown device 'meta'"),
    ],
)
def test_launch_environment_and_device_are_checked_first(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    clean_env: pytest.MonkeyPatch,
    env: dict[str, str],
    option: list[str],
    message: str,
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    out = tmp_path / "run"
    assert message in refused([*train_argv(dataset, out), *sets(), *option], capsys)
    assert not out.exists()


# ----------------------------------------------------------------------------- defect 8


def test_a_killed_checkpoint_write_leaves_no_temporary_for_good(tmp_path: Path) -> None:
    stale = tmp_path / ".checkpoint.abc123.tmp.pt"
    stale.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / CHECKPOINT, {"config": {}, "state": {}, "step": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]


def test_atomic_path_hands_out_an_exclusive_file(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "x.json") as tmp:
        assert tmp.is_file() and tmp.name.startswith(".x.")  # made with O_EXCL, kept
        tmp.write_text("1")
    assert (tmp_path / "x.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_info_escapes_control_characters(copy: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(1)
    source = copy.parent / "seq.npy"
    np.save(source, rng.integers(0, 255, (4, 5, 16, 16, 3), np.uint8))
    out = Path(hgn_data.import_sequences(source, copy.parent / "imp"))
    edit_json(
        out / "zarr.json",
        _root_meta(lambda m: m.update(imported_from="\x1b]0;owned\x07\x1b[2J")),
    )
    code, printed, _ = run(["data", "info", str(out)], capsys)
    assert code == 0 and "\x1b" not in printed and "\\x1b" in printed


def test_discard_reports_what_it_could_not_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def fail(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(store, "remove_dataset", fail)
    store.discard(store.locate(tmp_path / "d"), {})
    assert "could not remove the unfinished dataset" in capsys.readouterr().err
