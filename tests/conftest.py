"""Session-wide settings and fixtures shared by more than one test module (the shared
tiny configs, datasets and runs are in helpers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread per test process: the suite runs on two shared cores, where
    torch's default (a thread per core) oversubscribes them and tiny models run slower."""
    torch.set_num_threads(1)


SLOW_UNMARKED = frozenset(
    {
        "tests/test_data.py::test_killed_cli_generation_never_reads_as_complete",
        "tests/test_data.py::test_terminated_cli_generation_leaves_nothing_behind",
        "tests/test_data.py::test_shard_jobs_write_one_store_equal_to_the_unsharded_one",
        "tests/test_safety.py::test_evaluate_never_deletes_the_run_or_a_users_folder",
        "tests/test_data.py::test_metadata_writers_started_together_all_finish",
        "tests/test_safety.py::test_no_progress_silences_the_bars",
        "tests/test_safety.py::test_prefix_protocol_averages_over_predicted_frames_only",
        "tests/test_safety.py::test_evaluate_on_another_systems_data_says_so",
    }
)
"""Slow tests of modules that do not mark them in place yet (``@pytest.mark.slow`` is
how every other module marks its own); marked here by node id, parameters aside."""


LONGEST_FIRST = ("tests/test_reproduce.py",)
"""Modules whose tests run first under ``pytest -n`` (``make test``): the smoke run of
``hgn reproduce`` that they share is the suite's longest piece of work (a third of its
CPU time), and started last it would leave the other worker idle at the end."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark :data:`SLOW_UNMARKED`; under pytest-xdist, move :data:`LONGEST_FIRST` to the
    front, whole modules in their own order (``make test`` hands out whole files,
    ``--dist loadfile``, so that each module's shared tiny runs and datasets are built
    once, in the order collected: ``--no-loadscope-reorder``)."""
    for item in items:
        if item.nodeid.partition("[")[0] in SLOW_UNMARKED:
            item.add_marker(pytest.mark.slow)
    if hasattr(config, "workerinput"):  # a pytest-xdist worker (the order it reports counts)
        items.sort(key=lambda item: item.nodeid.partition("::")[0] not in LONGEST_FIRST)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Back to one thread before each test, should a command run by an earlier test
    (``--threads``) have changed it."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _torchrun(args: list[str], ranks: int = 2) -> None:
    """Run ``python -m <args>`` under ``torchrun`` on ``ranks`` CPU ranks (gloo).

    ``--standalone`` lets the rendezvous take a free port of its own: a port chosen
    from the process id collided on a shared CI machine. A failure carries the ranks'
    own output, which ``capture_output`` would otherwise hide.
    """
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    argv += ["--nproc-per-node", str(ranks), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        output = f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        pytest.fail(f"torchrun exited {done.returncode}:\n{output}")


@pytest.fixture
def torchrun() -> Callable[..., None]:
    """``torchrun(["-m", "hgn", "train", ...])``: launch on two gloo ranks or fail with
    the ranks' output."""
    return _torchrun
