"""The reproduction's rows and profiles as registries (issue 22): one ``ROWS`` entry per
table row, the old constants as its views, and every row trained exactly as before."""

from __future__ import annotations

from typing import Any

import pytest

from hgn.experiments import reproduce as rep
from hgn.experiments.reproduce import cells
from hgn.models import MODELS
from hgn.registry import Registry
from hgn.utils import UserError

# What the rows were before ROWS, spelled out once so the views cannot drift.
OLD_ORDER = (
    "hnn",
    "hnn-conv",
    "hnn-ac",
    "hnn-conv-ac",
    "hgn",
    "hgn-euler",
    "hgn-no-fpsi",
    "hgn-determ",
    "hgn++",
)
OLD_REGISTRY = {"hnn-ac": "hnn", "hnn-conv-ac": "hnn-conv"}
OLD_HNN = ("hnn", "hnn-conv", "hnn-ac", "hnn-conv-ac")


def _old_model_config(profile: rep.Profile, model: str, meta: dict[str, Any]) -> dict:
    values: dict[str, Any] = {
        "image_size": meta["size"],
        "frames": meta["steps"] + 1,
        "dt": meta["dt"],
    }
    if model in OLD_HNN:
        values.update(profile.hnn, dof=meta["dof"])
        if model.endswith("-ac"):
            values.update(profile.hnn_ac)
    elif model == "hgn++":
        values.update(profile.hgnpp)
    else:
        values.update(profile.hgn)
    return values


def test_rows_are_one_registry_and_the_old_constants_its_views() -> None:
    assert isinstance(rep.ROWS, Registry) and isinstance(rep.PROFILES, Registry)
    assert tuple(rep.ROWS) == rep.MODEL_ORDER == OLD_ORDER
    assert rep.HNN_MODELS == OLD_HNN and rep.LONG_MODELS == ("hgn++",)
    assert rep.MODEL_LABELS["hnn-conv-ac"] == "HNN Conv (anti-collapse)"
    assert rep.MODEL_LABELS["hgn-no-fpsi"] == "HGN no f_ψ"
    for name, row in rep.ROWS.items():
        assert row.model == OLD_REGISTRY.get(name, name) and row.model in MODELS
        assert rep.MODEL_LABELS[name] == row.label
    assert dict(rep.ROWS["hnn-ac"].settings["model"]) == rep.ANTI_COLLAPSE
    with pytest.raises(TypeError):
        rep.ROWS["hnn-ac"].settings["model"]["ae_warmup"] = 1  # type: ignore[index]


@pytest.mark.parametrize("profile", list(rep.PROFILES))
def test_every_row_is_configured_and_budgeted_as_before(profile: str) -> None:
    chosen = rep.PROFILES[profile]
    meta = {"size": 16, "steps": 8, "dt": 0.125, "dof": 1}
    for model in rep.ROWS:
        config = cells.model_config(chosen, model, meta)
        assert config == _old_model_config(chosen, model, meta), model
        minutes = cells.train_settings(chosen, model)["max_minutes"]
        if model in OLD_HNN and chosen.baseline_minutes is not None:
            assert minutes == chosen.baseline_minutes
        else:
            assert minutes == chosen.max_minutes
    assert cells.model_config(rep.PROFILES["smoke"], "hnn-ac", meta)["ae_warmup"] == 1


def test_unknown_rows_and_profiles_are_refused_in_one_line() -> None:
    with pytest.raises(UserError, match=r"^unknown table row 'hgn-eular' \(did you mean"):
        rep.ROWS.lookup("hgn-eular")
    with pytest.raises(UserError, match=r"^unknown profile 'smal' \(did you mean 'small'\?\)"):
        rep.get_profile("smal")
    assert rep.get_profile(" paper ") is rep.PROFILES["paper"]
    with pytest.raises(UserError, match=r"^unknown profile 'huge'; choose one of: smoke") as err:
        rep.get_profile("huge")
    assert "\n" not in str(err.value)
