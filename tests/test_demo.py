"""`make demo` (``python -m hgn.demo``) end to end at tiny sizes: its files, the long
protocol with the backward window at the end and the oracle, and a second run that
reuses what the first wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hgn import demo
from hgn.evaluation.reports import FILES

TRAIN = {"n_train": 8, "n_test": 2, "steps": 12}
LONG = {"n_train": 2, "n_test": 3, "steps": 40}


@pytest.mark.slow
def test_demo_end_to_end_and_again(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "demo"
    demo.run(root, minutes=0.01, train_data_size=TRAIN, long_data_size=LONG)
    printed = capsys.readouterr().out
    assert "[4/4]" in printed and "The oracle" in printed
    results = json.loads((root / "extrapolate" / FILES["json"]).read_text())
    rollouts = results["rollouts"]
    assert rollouts["forward"]["steps"] == LONG["steps"] - demo.START
    assert rollouts["backward"]["frames"][-1] == 0
    assert rollouts["backward"]["steps"] > rollouts["forward"]["steps"]  # from the end
    assert results["oracle"]["rollouts"]["backward"]["steps"] == rollouts["backward"]["steps"]
    for key in ("strip", "errors", "energy", "gif"):
        assert (root / "extrapolate" / FILES[key]).stat().st_size > 0
    assert (root / "samples.gif").is_file()
    demo.run(root, minutes=0.01, train_data_size=TRAIN, long_data_size=LONG)
    assert "reusing the trained model" in capsys.readouterr().out
