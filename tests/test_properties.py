"""Property tests of issue 25: hostile stores and hostile numbers.

Hypothesis mutates a valid store's metadata and chunks at random (types, shapes,
missing keys, dtypes, sizes, damaged or missing chunks), and gives every numeric CLI
option 0, negatives, NaN, infinities and huge values. Every command must then either
work or exit 2 with one line, never raise (a traceback), never run past a time limit,
and never write, delete or replace a file outside its own ``--out`` (checked by listing
every file before and after).

The default run tries a few examples of each, derandomised; ``pytest -m exhaustive`` tries
500 of each, at random.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability import TINY_DATA, listing
from test_train import sets

from hgn import data as hgn_data
from hgn.cli import main

torch.set_num_threads(1)

TIME_LIMIT_S = 120
"""Longer than any tiny command takes even on a loaded 2-core machine; a hang meets it."""

FAST = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW = settings(FAST, max_examples=500, derandomize=False)


# ----------------------------------------------------------------------------- running


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail (rather than hang) when the body runs longer than ``seconds``."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the command ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def hgn(argv: list[str]) -> tuple[int, str]:
    """Run ``hgn ARGV`` in-process within the time limit: (exit status, stderr). Any
    exception other than the CLI's own exits propagates: that is a traceback."""
    err = io.StringIO()
    quiet = contextlib.redirect_stdout(io.StringIO())
    with time_limit(TIME_LIMIT_S), contextlib.redirect_stderr(err), quiet:
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = int(exit_.code or 0)
    return code, err.getvalue()


def works_or_one_line(argv: list[str]) -> int:
    """Assert the command worked (0) or said what is wrong in one line (2)."""
    code, err = hgn(argv)
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("hgn: error: ")]
        # besides the error, only the size estimate of `data generate` and warnings
        said = ("on disk (an estimate", "hgn: warning: ")
        others = [line for line in err.splitlines() if line and not any(s in line for s in said)]
        assert len(errors) == 1 and others == errors, (argv, err)
    return code


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny store, a run trained on it and a tiny import source, made once."""
    root = tmp_path_factory.mktemp("props")
    store = Path(hgn_data.generate(root / "ms16", "mass-spring", **TINY_DATA))
    run = root / "run"
    argv = ["train", "--data", str(store), "--out", str(run), "--steps", "1", "--no-progress"]
    assert main([*argv, *sets()]) == 0
    rng = np.random.default_rng(0)
    np.save(root / "seq.npy", rng.integers(0, 255, (6, 5, 16, 16, 3), np.uint8))
    return {"root": root, "store": store, "run": run, "source": root / "seq.npy"}


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A fresh folder per example (function-scoped fixtures do not reset per example)."""
    folder = Path(tempfile.mkdtemp(prefix="hgn-prop-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- stores

JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 2, 3, 16, 32, 10**12, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "uint8", "float32", "int16", "float64", "bool", "../..", "\x1b[2J"]),
    st.lists(st.integers(-2, 40), max_size=6),
    st.dictionaries(st.sampled_from(["n", "name", "configuration", "x"]), st.integers(-1, 9)),
)
META_KEYS = [
    "format", "system", "constants", "noise", "dt", "steps", "seed", "size", "dof",
    "has_states", "n_train", "n_test", "block", "variant", "splits", "parts", "complete",
    "fingerprint", "source", "integrator", "render",
]  # fmt: skip
ARRAY_KEYS = [
    "shape", "data_type", "chunk_grid", "codecs", "chunk_key_encoding", "fill_value",
    "dimension_names", "node_type", "zarr_format",
]  # fmt: skip
ARRAYS = ["train/images", "train/q", "test/images", "test/p_noisy"]


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple]:
    """One to three damages: a metadata key set or deleted (the store's, an array's, or
    a split's entry), a chunk truncated, garbled or deleted, an array's zarr.json gone."""
    found = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["meta", "split", "array", "chunk", "node"]))
        if kind == "meta":
            found.append(("meta", draw(st.sampled_from(META_KEYS)), draw(st.booleans())))
        elif kind == "split":
            found.append(("split", draw(st.sampled_from(["train", "test"])), None))
        elif kind == "array":
            key = draw(st.sampled_from(ARRAY_KEYS))
            found.append(("array", draw(st.sampled_from(ARRAYS)), key, draw(st.booleans())))
        elif kind == "chunk":
            how = draw(st.sampled_from(["truncate", "garble", "delete"]))
            found.append(("chunk", draw(st.sampled_from(ARRAYS)), how, draw(st.integers(0, 50))))
        else:
            found.append(("node", draw(st.sampled_from(ARRAYS)), None))
        found[-1] = (*found[-1], draw(JSON_VALUES))
    return found


def damage(store: Path, changes: list[tuple]) -> None:
    """Apply :func:`mutations` to the store at ``store``."""
    for change in changes:
        kind, value = change[0], change[-1]
        if kind in ("meta", "split"):
            node = json.loads((store / "zarr.json").read_text())
            meta = node["attributes"]["hgn"]
            if kind == "split":
                if isinstance(meta.get("splits"), dict):  # an earlier change may have taken it
                    meta["splits"][change[1]] = value
            elif change[2]:
                meta.pop(change[1], None)
            else:
                meta[change[1]] = value
            (store / "zarr.json").write_text(json.dumps(node))
        elif kind == "array":
            path = store / change[1] / "zarr.json"
            if path.is_file():
                node = json.loads(path.read_text())
                node.pop(change[2], None) if change[3] else node.update({change[2]: value})
                path.write_text(json.dumps(node))
        elif kind == "chunk":
            chunks = sorted((store / change[1]).glob("c.*"))
            if chunks:
                chunk = chunks[0]
                blob = chunk.read_bytes()
                if change[2] == "delete":
                    chunk.unlink()
                elif change[2] == "truncate":
                    chunk.write_bytes(blob[: change[3]])
                else:
                    chunk.write_bytes(bytes(b ^ 0x5A for b in blob[: change[3] + 16]) + blob)
        else:
            (store / change[1] / "zarr.json").unlink(missing_ok=True)


def check_damaged_store(base: dict[str, Path], changes: list[tuple], train: bool) -> None:
    """Every command on a damaged copy: works or one line, in time, writing only into
    its own ``--out``."""
    with workspace() as here:
        store = Path(shutil.copytree(base["store"], here / "store"))
        damage(store, changes)
        shared, damaged = listing(base["root"]), listing(store)
        readable = works_or_one_line(["data", "info", str(store)]) == 0
        works_or_one_line(["data", "info", "--json", str(store)])
        works_or_one_line(["data", "show", str(store), "--out", str(here / "p"), "--n", "2"])
        assert listing(store) == damaged  # the readers wrote nothing into the store
        assert {p.name for p in here.iterdir()} <= {"store", "p.png", "p.gif"}
        if train and readable:  # else train and evaluate stop where info did (load calls it)
            run = here / "run"
            argv = ["train", "--data", str(store), "--out", str(run), "--steps", "1"]
            works_or_one_line([*argv, "--no-progress", *sets()])
            assert listing(store) == damaged
            evaluate = ["evaluate", str(base["run"]), "--data", str(store), "--no-progress"]
            works_or_one_line([*evaluate, "--out", str(here / "eval")])
            assert listing(store) == damaged
        # a rerun of the command that wrote it: finishes, does nothing, or refuses
        argv = ["data", "generate", "--system", "mass-spring", "--train", "8", "--test", "4"]
        argv += ["--frames", "7", "--size", "16", "--no-progress", "--out", str(store)]
        works_or_one_line(argv)
        assert listing(base["root"]) == shared  # nothing outside the workspace changed
        assert {p.name for p in here.iterdir()} <= {"store", "p.png", "p.gif", "run", "eval"}


@FAST
@given(changes=mutations())
def test_damaged_stores_are_read_or_refused_in_one_line(
    base: dict[str, Path], changes: list[tuple]
) -> None:
    check_damaged_store(base, changes, train=False)


@pytest.mark.exhaustive
@SLOW
@given(changes=mutations())
def test_damaged_stores_slow(base: dict[str, Path], changes: list[tuple]) -> None:
    check_damaged_store(base, changes, train=True)


# ----------------------------------------------------------------------------- numbers

HOSTILE = st.one_of(
    st.sampled_from([0, -1, -(2**63), 2**63, 10**12, 10**30]),
    st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 1e-320]),
    st.integers(-(10**40), 0),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 1e-6 < abs(x) < 1e9),
)
"""0, negatives, NaN, infinities, the tiny and the huge: no value a sane run would use
(those do real work, and a valid moderate count can legitimately take long)."""

OPTIONS: dict[str, list[str]] = {
    "generate": [
        "--train", "--test", "--frames", "--dt", "--size", "--seed", "--noise",
        "--set g=", "--set friction=", "--shard 0/", "--vary k=1:",
    ],
    "import": ["--size", "--test-fraction", "--frames", "--stride", "--dt", "--seed"],
    "show": ["--n", "--frames"],
    "train": [
        "--steps", "--minutes", "--threads", "--set train.lr=", "--set train.batch_size=",
        "--set model.latent_channels=", "--set train.seed=", "--set train.grad_clip=",
        "--set model.dt=",
    ],
    "evaluate": ["--max-sequences", "--batch-size", "--vpt-fraction"],
    "sample": ["--n", "--frames", "--fps", "--seed"],
    "rollout": ["--index", "--frames", "--speed", "--fps"],
}  # fmt: skip


def base_argv(command: str, base: dict[str, Path], here: Path) -> list[str]:
    """A tiny, valid invocation of ``command`` writing into ``here``."""
    out = str(here / "out")
    if command == "generate":
        return ["data", "generate", "--system", "mass-spring", "--train", "2", "--test", "1",
                "--frames", "3", "--size", "16", "--no-progress", "--out", out]  # fmt: skip
    if command == "import":
        return ["data", "import", str(base["source"]), "--out", out, "--no-progress"]
    if command == "show":
        return ["data", "show", str(base["store"]), "--out", str(here / "p"), "--overwrite"]
    if command == "train":
        return ["train", "--data", str(base["store"]), "--out", out, "--steps", "1",
                "--minutes", "0.05", "--no-progress", *sets()]  # fmt: skip
    if command == "evaluate":
        return ["evaluate", str(base["run"]), "--data", str(base["store"]), "--out", out,
                "--max-sequences", "2", "--no-progress"]  # fmt: skip
    if command == "sample":
        return ["sample", str(base["run"]), "--n", "2", "--frames", "3", "--out", f"{out}.gif"]
    return ["rollout", str(base["run"]), "--data", str(base["store"]), "--frames", "3",
            "--out", f"{out}.gif"]  # fmt: skip


def with_value(option: str, value: float | int) -> list[str]:
    """``--opt VALUE`` or, for ``--set k=``-style options, ``--set k=VALUE``."""
    text = repr(value) if isinstance(value, float) and math.isfinite(value) else str(value)
    text = {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(text, text)
    if " " in option:
        flag, prefix = option.split(" ", 1)
        return [flag, prefix + text]
    return [option, text]


def check_option(base: dict[str, Path], command: str, option: str, value: Any) -> None:
    with workspace() as here:
        shared = listing(base["root"])
        works_or_one_line([*base_argv(command, base, here), *with_value(option, value)])
        assert listing(base["root"]) == shared
        assert {n.split("/")[0] for n in listing(here)} <= {"out", "out.gif", "p.png", "p.gif"}


@st.composite
def option_values(draw: st.DrawFn) -> tuple[str, str, Any]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    return command, draw(st.sampled_from(OPTIONS[command])), draw(HOSTILE)


@FAST
@given(case=option_values())
def test_hostile_numbers_work_or_are_one_line(base: dict[str, Path], case: tuple) -> None:
    check_option(base, *case)


@pytest.mark.exhaustive
@SLOW
@given(case=option_values())
def test_hostile_numbers_slow(base: dict[str, Path], case: tuple) -> None:
    check_option(base, *case)
