"""`hgn benchmark`: the smoke size end to end through the CLI (files, cells a model
cannot fill marked "cannot", resuming one deleted cell), imported data ("n/a" where
there are no true states), the one-line refusals, and the SyMetric glue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hgn.cli import main
from hgn.experiments.benchmark import metrics
from hgn.experiments.benchmark.profiles import MODEL_ORDER, choose_models
from hgn.models import HGNPP, MODELS, ModelSpec
from hgn.utils import OUTPUT_MARKER

STUB = "one-way"


class OneWay(HGNPP):
    """HGN++ declared one-way and one-speed: stands in for the discrete and recurrent
    baselines (RGN, LSTM, GRU) where they are not registered."""

    can_run_backwards = False
    can_change_speed = False
    prior = "none"


@pytest.fixture(scope="module")
def stub_registered():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODELS._entries, STUB, ModelSpec(OneWay, {}, "test stub: one-way HGN++"))
        yield


def _argv(out: Path, models: str, datasets: str, *extra: str) -> list[str]:
    return [
        "benchmark",
        "--out",
        str(out),
        "--profile",
        "smoke",
        "--models",
        models,
        "--datasets",
        datasets,
        "--minutes",
        "0.03",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, stub_registered: None) -> Path:
    out = tmp_path_factory.mktemp("bench") / "results"
    torch.manual_seed(0)
    assert main(_argv(out, f"hgn++,hnn,{STUB}", "pendulum")) == 0
    return out


def test_files_and_numbers(smoke: Path) -> None:
    for name in ("results.json", "benchmark.md", "report.html", "vpt.png", "strip_pendulum.png"):
        assert (smoke / name).is_file(), name
    summary = json.loads((smoke / "results.json").read_text())
    assert summary["requested_cells"] == summary["finished_cells"] == 3
    assert summary["size"]["name"] == "smoke" and summary["seed"] == 0
    assert summary["minutes_per_cell"] == pytest.approx(0.03)
    assert json.loads((smoke / "settings.json").read_text())["seed"] == 0
    assert json.loads((smoke / OUTPUT_MARKER).read_text())["written_by"] == "hgn benchmark"
    record = summary["cells"]["pendulum"]["hgn++"]
    assert record["train"]["stopped_by"] == "time"
    v = record["dm_vpt"]
    assert 0 <= v["vpt"] <= v["horizon"] and v["backward_median"] is not None
    assert v["style"] == "paper" and not v["discriminates"]
    assert set(record["symetric"]) >= {"score", "r2", "sym", "batches"}
    assert set(record["extrapolation"]["rollouts"]) == {"forward", "backward", "2x", "half"}
    text = (smoke / "benchmark.md").read_text()
    assert "Caveat: DeepMind's VPT divides" in text
    for title in ("## DeepMind valid prediction time", "## SyMetric", "## Samples read back"):
        assert title in text
    # a light background: the number is kept in results.json, the table says why not shown
    assert "n/a: light background" in text
    # the answer, from the cells: the stub stands in for the models without a prior
    found = summary["answer"]["pendulum"]
    assert found["prior"]["verdict"] in {"wins", "ties", "loses"}
    assert found["prior"]["without"].startswith(f"{STUB}: holds ")
    assert set(found["held"][STUB]) <= {"forward"}  # it can make no other rollout
    assert "## The answer: does the Hamiltonian prior win, tie or lose?" in text
    page = (smoke / "report.html").read_text()
    assert "The answer: which rollouts each model holds" in page
    assert 'src="vpt.png"' in page and 'src="strip_pendulum.png"' in page and "<style>" in page


def test_a_model_that_cannot_run_backwards_gets_reasons_not_numbers(smoke: Path) -> None:
    record = json.loads((smoke / "cells/pendulum" / STUB / "result.json").read_text())
    v = record["dm_vpt"]
    assert v["backward_median"] is None and v["backward_per_sequence"] is None
    assert "cannot run backwards" in v["backward_cannot"]
    assert v["vpt"] == v["forward_median"]  # forward alone, never an invented backward
    rollouts = record["extrapolation"]["rollouts"]
    assert rollouts["forward"]["ratio"] > 0  # what it can do is scored
    assert "cannot run backwards" in rollouts["backward"]["skipped"]
    for name in ("2x", "half"):
        assert "ratio" not in rollouts[name] and "vpt_mean" not in rollouts[name]
        assert "another speed" in rollouts[name]["skipped"]
    md = (smoke / "benchmark.md").read_text().splitlines()
    text = "\n".join(line for line in md if line.startswith(f"| {STUB} "))
    assert "bwd cannot · 2× cannot · ½× cannot" in text  # the rollout tables: the word
    assert "cannot run backwards: OneWay cannot run backwards" in text  # the reason, once
    assert "; cannot change speed: OneWay cannot roll out at another speed" in text


def _record(**ratios: float) -> dict:
    return {"extrapolation": {"rollouts": {k: {"ratio": v} for k, v in ratios.items()}}}


def test_the_verdict_ranks_rollouts_held_then_forward_error_with_a_tie_band() -> None:
    from hgn.experiments.benchmark.answer import answer, compare, standing

    both = standing("a", _record(forward=0.002, backward=0.002, **{"2x": 0.1, "half": 0.3}))
    other = standing("b", _record(forward=0.0039, backward=0.19))
    assert both.held == ("forward", "backward", "2x") and other.held == ("forward", "backward")
    assert compare(both, other) == "wins" and compare(other, both) == "loses"  # holds more
    same = standing("c", _record(forward=0.0039, backward=0.01, **{"2x": 0.1}))
    assert compare(both, same) == "ties"  # within a factor of 2
    far = standing("d", _record(forward=0.005, backward=0.01, **{"2x": 0.1}))
    assert compare(both, far) == "wins" and compare(far, both) == "loses"
    assert standing("e", {"extrapolation": {"cannot": "no data"}}) is None
    diverged = standing("f", _record(forward=float("nan"), backward=None))
    assert diverged.held == () and compare(other, diverged) == "wins"
    cells = {"set": {"h": _record(forward=0.5), "n": _record(forward=0.1), "x": _record(forward=9)}}
    priors = {"h": "hamiltonian", "n": "none", "x": "lagrangian"}
    v = answer(cells, ["h", "n", "x"], ["set"], priors)["set"]["prior"]
    assert v["verdict"] == "loses" and v["with_prior"].startswith("h:") and "n:" in v["without"]
    # holding more wins overall; forward alone, the lower ratio beyond the band wins
    two_way = _record(forward=0.27, backward=0.17, half=0.08)
    cells = {"set": {"h": two_way, "n": _record(forward=0.1), "m": _record(forward=0.6, half=0.1)}}
    found = answer(cells, ["h", "n", "m"], ["set"], {**priors, "m": "none"})["set"]
    assert found["prior"]["verdict"] == "wins" and found["prior"]["without"].startswith("n:")
    assert found["forward_alone"]["verdict"] == "loses"
    assert found["forward_alone"]["without"].startswith("n:")
    lonely = answer({"set": {"h": _record(forward=0.5)}}, ["h", "n"], ["set"], priors)
    assert lonely["set"]["prior"] == {"verdict": None, "why": "no trained model without it yet"}


def test_resume_reruns_only_the_deleted_cell(smoke: Path, capsys: pytest.CaptureFixture) -> None:
    results = {m: smoke / "cells/pendulum" / m / "result.json" for m in ("hgn++", "hnn", STUB)}
    before = {m: p.stat().st_mtime_ns for m, p in results.items()}
    kept = results["hnn"].read_text()
    results["hnn"].unlink()
    capsys.readouterr()
    assert main(_argv(smoke, f"hgn++,hnn,{STUB}", "pendulum")) == 0
    said = capsys.readouterr().out  # --no-progress still says the plan and the count
    assert "3 cells, 2 already finished, 1 to run" in said
    assert "estimated training time" in said and "[0 of 1 done] running pendulum × hnn" in said
    assert results["hnn"].is_file()
    assert json.loads(results["hnn"].read_text())["train"] == json.loads(kept)["train"]
    for m in ("hgn++", STUB):
        assert results[m].stat().st_mtime_ns == before[m], f"{m} was recomputed"


def test_other_settings_in_the_same_out_are_refused(smoke: Path, capsys) -> None:
    assert main(_argv(smoke, "hgn++", "pendulum", "--seed", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other settings" in err


def test_imported_data_has_no_symetric_and_hnn_cannot_train(tmp_path: Path) -> None:
    from test_import import moving_square

    np.save(tmp_path / "seqs.npy", moving_square(10, 17, 16, 16))
    data = tmp_path / "imported"
    argv = ["data", "import", str(tmp_path / "seqs.npy"), "--out", str(data), "--size", "16"]
    assert main([*argv, "--test-fraction", "0.3", "--no-progress"]) == 0
    out = tmp_path / "results"
    assert main(_argv(out, "hgn++,hnn", str(data))) == 0
    summary = json.loads((out / "results.json").read_text())
    cells = summary["cells"]["imported"]
    assert cells["hgn++"]["symetric"]["n/a"] == metrics.NO_STATES
    assert "n/a" in cells["hgn++"]["samples"]
    hnn = cells["hnn"]
    assert "degrees of freedom" in hnn["cannot"] and "train" not in hnn
    text = (out / "benchmark.md").read_text()
    assert "n/a: no true states (imported data)" in text
    assert "cannot: hnn needs the true number of degrees of freedom" in text
    assert not summary["datasets"]["imported"]["has_states"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--minutes", "0"], "--minutes must be > 0"),
        (["--minutes", "-1"], "--minutes must be > 0"),
        (["--minutes", "nan"], "--minutes must be > 0"),
        (["--minutes", "1441"], "at most 1440"),
        (["--minutes", "ten"], "--minutes must be a number"),
        (["--jobs", "3"], "--jobs must be 1 or 2"),
        (["--jobs", "0"], "--jobs must be 1 or 2"),
        (["--models", "hgn++,nosuch"], "unknown model 'nosuch'"),
        (["--models", "hgm"], "did you mean 'hgn'"),
        (["--datasets", "pendulm"], "did you mean 'pendulum'"),
        (["--seed", "-1"], "--seed must be a non-negative integer"),
    ],
)
def test_bad_options_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    argv = ["benchmark", "--out", str(tmp_path / "o"), "--no-progress", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_a_users_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["benchmark", "--out", str(tmp_path), "--datasets", "pendulum"]) == 2
    assert "hgn never replaces files" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_default_models_are_the_registered_ones() -> None:
    assert choose_models(None) == [m for m in MODEL_ORDER if m in MODELS]
    assert "hgn++" in choose_models(None)


def test_relative_variance_keeps_varying_deterministic_dims_and_drops_dead_ones() -> None:
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(size=(3, 10)), np.zeros((3, 10))], axis=-1)  # (3,10,2)
    means = np.concatenate([means, means], axis=-1)  # [q, p], 4 dims: 2 vary, 2 never
    rel = metrics.relative_variance(means, np.zeros_like(means))
    assert rel.tolist() == [0.0, 1.0, 0.0, 1.0]
    # posterior spread equal to the spread of the means: half the unit-normal prior
    noisy = metrics.relative_variance(means, np.full_like(means, means[..., 0].var()))
    assert noisy[0] == pytest.approx(0.5)


def test_sliding_states_describe_consecutive_frames() -> None:
    class Last(torch.nn.Module):
        """A model whose state is its window's frame at ``state_offset`` (mean pixel)."""

        context_frames, state_offset = 3, 2

        def encode(self, frames, sample=False):
            x = frames[:, self.state_offset].mean((1, 2, 3))[:, None]
            from hgn.models import State

            return State(x, x)

    frames = torch.arange(10.0)[None, :, None, None, None].expand(2, 10, 3, 2, 2)
    z, var, first = metrics.sliding_states(Last(), frames, steps=5)
    assert first == 2 and z.shape == (2, 5, 2) and not var.any()
    assert z[0, :, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]  # the states of frames 2…6


def test_symetric_reads_a_recurrent_models_decoded_latent_as_its_phase_space() -> None:
    """An LSTM's or GRU's p is its memory, not q's partner: SyMetric gets the latent q
    (read as its halves); a model whose q and p are partners gets [q, p]."""
    from hgn.experiments.benchmark.metrics import flat
    from hgn.models import State

    q, memory = torch.randn(2, 32), torch.randn(2, 41)
    assert torch.equal(flat(State(q, memory)), q)
    assert flat(State(q, q + 1)).shape == (2, 64)


def test_every_model_declares_what_the_sweep_turns() -> None:
    """The sweep's β and width name real config keys of every default model, and a
    variant scales exactly its knob."""
    import dataclasses

    from hgn.experiments.benchmark import tuning
    from hgn.training import config as hgn_config

    for model in choose_models(None):
        values = dataclasses.asdict(hgn_config.resolve("small", model=model).model)
        for variant, (knob, factor) in tuning.VARIANTS.items():
            new, train = dict(values), {"lr": 1e-3}
            tuning.apply_variant(model, variant, new, train)
            changed = {k for k in values if new[k] != values[k]} | (
                {"lr"} if train["lr"] != 1e-3 else set()
            )
            assert changed, f"{model} {variant} changed nothing"
            if knob == "lr":
                assert changed == {"lr"} and train["lr"] == pytest.approx(1e-3 * factor)
            elif knob == "beta":
                key = tuning.BETA.get(model, "kl_weight")
                assert changed == {key} and new[key] == pytest.approx(values[key] * factor)
            else:
                assert changed == set(tuning.WIDTH[model])


@pytest.mark.slow
def test_a_tuning_sweep_chooses_and_the_table_trains_the_choice(tmp_path: Path) -> None:
    from hgn.experiments.benchmark import tuning

    sweep = tmp_path / "sweep"
    assert main(_argv(sweep, "rgn", "pendulum", "--tune")) == 0
    tune = json.loads((sweep / "tune.json").read_text())
    entry = tune["models"]["rgn"]
    assert set(entry["scores"]) == {tuning.DEFAULT, *tuning.VARIANTS}
    finite = {v: s for v, s in entry["scores"].items() if s is not None}
    assert entry["chosen"] == min(finite, key=finite.get)
    cell = json.loads((sweep / "cells/pendulum/rgn@lr-x3/result.json").read_text())
    profile = json.loads((sweep / "cells/pendulum/rgn/result.json").read_text())
    assert cell["variant"] == "lr-x3" and profile["variant"] == tuning.DEFAULT
    assert "| rgn |" in (sweep / "tune.md").read_text()
    table = tmp_path / "table"
    assert main(_argv(table, "rgn", "pendulum", "--tuned", str(sweep))) == 0
    record = json.loads((table / "cells/pendulum/rgn/result.json").read_text())
    assert record["variant"] == entry["chosen"]
    settings = json.loads((table / "settings.json").read_text())
    assert settings["tuned"] == {"rgn": entry["chosen"]} and settings["clock"] == "cpu"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tune", "--tuned", "x"], "give one of them"),
        (["--tuned", "nowhere"], "is not a tuning sweep's tune.json"),
        (["--clock", "moon"], "--clock must be one of wall, cpu, got 'moon'"),
    ],
)
def test_bad_tuning_options_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    argv = ["benchmark", "--out", str(tmp_path / "o"), "--no-progress", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err.splitlines()[-1], err
    assert not (tmp_path / "o").exists()


def test_the_estimate_spreads_the_budgets_over_the_jobs_longest_first() -> None:
    from hgn.experiments.reproduce.run import estimate

    line = estimate([10.0] * 35, 2, "cpu clock")
    assert "3 h 00 min with 2 job(s)" in line
    assert "5 h 50 min of training budgets by the cpu clock" in line
    assert "20 min with 1 job(s)" in estimate([5.0, 15.0], 1, "wall clock")
    assert "15 min with 2 job(s)" in estimate([5.0, 15.0, 10.0], 2, "wall clock")
