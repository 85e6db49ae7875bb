"""A newcomer's first hour (issue 24): defaults that fit together, a printed config that
loads back on other data, runs that sample alike wherever they are, and a run given to
the wrong command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import model_sets, set_args

from hgn import data as hgn_data
from hgn.cli import main
from hgn.runs import CHECKPOINT, METRICS_LOG
from hgn.utils import load_checkpoint, save_checkpoint

_TINY = {
    "encoder_filters": [4, 4, 4, 4], "fpsi_hidden": 8, "energy_hidden": 8,
    "latent_channels": 4, "decoder_filters": [4], "state_dim": 2,
}  # fmt: skip
TINY_HGNPP = [*set_args([*model_sets(_TINY), "train.batch_size=2"]), "--no-progress"]
"""A tiny HGN++ that keeps the default image size free to follow the data (four encoder
layers reach the 4×4 or 8×8 latent map from 32×32 or 64×64 frames)."""


@pytest.fixture(scope="module")
def pendulum64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hgn data generate``'s default image size (64), which the default profile was
    not written for (32)."""
    out = tmp_path_factory.mktemp("newcomer") / "d64"
    hgn_data.generate(out, "pendulum", n_train=6, n_test=2, steps=8, progress=False)
    return out


def test_the_default_model_trains_on_the_default_data(pendulum64: Path, tmp_path: Path) -> None:
    """The image size follows the data like dt and frames do, with the latent map scaled
    so the networks keep their depth; a size the user set that the data contradicts is
    still refused."""
    run = tmp_path / "r"
    assert (
        main(["train", "--data", str(pendulum64), "--out", str(run), "--steps", "1", *TINY_HGNPP])
        == 0
    )
    model = load_checkpoint(run / CHECKPOINT)["config"]["model"]
    assert (model["image_size"], model["latent_size"], model["frames"]) == (64, 8, 9)
    bad = ["train", "--data", str(pendulum64), "--out", str(tmp_path / "b"), "--steps", "1"]
    assert main([*bad, "--set", "model.image_size=32", *TINY_HGNPP]) == 2
    assert not (tmp_path / "b").exists()


def test_a_printed_config_loads_back_on_other_data(
    pendulum64: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--print-config`` writes the keys that follow the data as ``auto``; the file then
    trains on data of another size, time step and number of degrees of freedom, and the
    run records the data's values, not the printing's."""
    for model in ("hgn++", "hnn"):
        capsys.readouterr()
        assert main(["train", "--model", model, "--print-config"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        follows = {"dt", "frames", "image_size"} | ({"dof"} if model == "hnn" else set())
        assert all(printed["model"][key] == "auto" for key in follows), printed["model"]
        (tmp_path / f"{model}.yaml").write_text(yaml.safe_dump(printed))
    other = tmp_path / "dp"
    hgn_data.generate(
        other, "double-pendulum", n_train=4, n_test=2, steps=6, size=16, dt=0.05, progress=False
    )
    for model in ("hgn++", "hnn"):
        run = tmp_path / f"run-{model}"
        argv = ["train", "--config", str(tmp_path / f"{model}.yaml"), "--data", str(other)]
        assert main([*argv, "--out", str(run), "--steps", "1", "--no-progress"]) == 0
        saved = load_checkpoint(run / CHECKPOINT)["config"]["model"]
        assert saved["dt"] == 0.05 and saved["image_size"] == 16
        assert model != "hnn" or saved["dof"] == 2


def test_a_set_value_that_contradicts_the_data_is_refused_in_one_line(
    pendulum64: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", str(pendulum64), "--out", str(tmp_path / "r"), "--steps", "1"]
    assert main([*argv, "--set", "model.dt=0.05", *TINY_HGNPP]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.dt is 0.05 but the data's dt is 0.125" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
    assert main([*argv, *TINY_HGNPP, "--set", "model.state_dim=auto"]) == 2
    assert "cannot be auto" in capsys.readouterr().err


def test_a_run_samples_alike_after_its_data_moved(
    pendulum64: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sampler is fitted when training ends and kept in the checkpoint: moving the
    data away changes nothing, and ``hgn sample`` says what it samples from."""
    data = tmp_path / "D"
    shutil.copytree(pendulum64, data)
    run = tmp_path / "R"
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "2", *TINY_HGNPP]) == 0
    assert load_checkpoint(run / CHECKPOINT)["sampler"]["sequences"] == 6
    capsys.readouterr()
    assert (
        main(["sample", str(run), "--out", str(tmp_path / "a.png"), "--n", "2", "--frames", "4"])
        == 0
    )
    assert "aggregate posterior of 6 training sequences" in capsys.readouterr().out
    data.rename(tmp_path / "moved")
    assert (
        main(["sample", str(run), "--out", str(tmp_path / "b.png"), "--n", "2", "--frames", "4"])
        == 0
    )
    assert "aggregate posterior of 6 training sequences" in capsys.readouterr().out
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_a_run_given_to_the_wrong_command_names_the_right_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = Path(__file__).parent / "fixtures" / "legacy-v0.1-flow.pt"
    run = tmp_path / "nhf"
    run.mkdir()
    shutil.copy(flow, run / CHECKPOINT)
    assert main(["sample", str(run), "--out", str(tmp_path / "s.gif")]) == 2
    assert "is a flow run" in capsys.readouterr().err


def test_every_run_logs_plain_metrics_and_hgn_info_reads_them(
    pendulum64: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``metrics.jsonl`` holds one line per log step; a resumed run drops the lines past
    the step it resumes from, so the log of an interrupted run reads like an
    uninterrupted one's; ``hgn info`` prints what the run is and its last metrics."""
    run = tmp_path / "r"
    argv = ["train", "--data", str(pendulum64), "--out", str(run), *TINY_HGNPP]
    logged = ["--set", "train.log_every=1", "--set", "train.checkpoint_every=2"]
    assert main([*argv, *logged, "--steps", "3"]) == 0
    lines = [json.loads(x) for x in (run / METRICS_LOG).read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3] and all("mse" in x for x in lines)
    save = load_checkpoint(run / CHECKPOINT)
    save_checkpoint(run / CHECKPOINT, {**save, "step": 2})  # as if killed after step 2's save
    resume = ["train", "--data", str(pendulum64), "--out", str(run), "--resume", "--steps", "4"]
    assert main([*resume, "--no-progress"]) == 0
    steps = [json.loads(x)["step"] for x in (run / METRICS_LOG).read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "a sequence run (hgn train), model hgn++" in out
    assert "pendulum, 64×64" in out and "last metrics (step 4)" in out


def test_rollout_on_another_systems_data_warns_as_evaluate_does(
    pendulum64: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    argv = ["train", "--data", str(pendulum64), "--out", str(run), "--steps", "1"]
    assert main([*argv, *TINY_HGNPP]) == 0
    other = tmp_path / "ms"
    hgn_data.generate(other, "mass-spring", n_train=2, n_test=2, steps=8, progress=False)
    capsys.readouterr()
    rollout = ["rollout", str(run), "--data", str(other), "--out", str(tmp_path / "r.png")]
    assert main([*rollout, "--frames", "4"]) == 0
    err = capsys.readouterr().err
    assert "hgn: warning: this data differs from the run's training data: system" in err


def test_flow_evaluate_is_seeded_and_writes_where_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same seed gives the same NLL (the seed is recorded); ``--out`` writes there
    and refuses an existing file without ``--overwrite``."""
    run = Path(__file__).parent / "fixtures" / "legacy-v0.1-flow.pt"
    argv = ["flow", "evaluate", str(run), "--n-test", "32", "--n-importance", "4", "--no-progress"]
    out = tmp_path / "a.json"
    assert main([*argv, "--out", str(out)]) == 0
    first = json.loads(out.read_text())
    assert first["seed"] == 0
    assert main([*argv, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["nll"] == first["nll"]
    assert main([*argv, "--out", str(tmp_path / "b.json"), "--seed", "1"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["nll"] != first["nll"]


def test_version_and_usage_mistakes_answer_without_loading_torch() -> None:
    """``hgn --version`` and a usage mistake import neither torch nor zarr (it took 1.5 s
    on an idle machine); a usage mistake is one line with one ``hgn: error:`` prefix."""
    code = (
        "import sys\n"
        "from hgn.cli import main\n"
        "assert main(['--version']) == 0\n"
        "assert not {'torch', 'zarr'} & set(sys.modules), sorted(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().startswith("hgn "), done.stderr
    bare = subprocess.run([sys.executable, "-m", "hgn"], capture_output=True, text=True)
    assert bare.returncode == 2 and bare.stderr.count("hgn: error:") == 1
    assert "hgn: error: hgn" not in bare.stderr and len(bare.stderr.strip().splitlines()) == 1


def test_output_read_only_in_part_ends_quietly(pendulum64: Path) -> None:
    """``hgn data info D | head -1``: the reader leaves early; hgn ends without a
    BrokenPipeError traceback."""
    hgn = [sys.executable, "-m", "hgn", "data", "info", str(pendulum64)]
    head = subprocess.Popen(["head", "-1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    done = subprocess.run(hgn, stdout=head.stdin, stderr=subprocess.PIPE, text=True)
    head.stdin.close()  # type: ignore[union-attr]
    head.wait()
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_shell_completion_knows_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """``hgn completion bash`` is generated from the parser: every command and its
    options are there, the newest included."""
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    for word in ("train", "benchmark", "info", "flow", "--minutes", "--print-config"):
        assert word in script, word
    with pytest.raises(SystemExit) as refused:  # not a shell it writes for: one line
        main(["completion", "fish"])
    assert refused.value.code == 2
