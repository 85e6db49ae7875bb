"""hgn/registry.py: every name a user types on the command line is looked up in one
:class:`Registry` type, so that every unknown name is refused alike (one line, the closest
name, the choices or where they are listed)."""

from __future__ import annotations

import pytest

from hgn.data import presets
from hgn.experiments import reproduce
from hgn.flows import FLOWS
from hgn.models import MODELS
from hgn.registry import Registry
from hgn.training import config
from hgn.utils import UserError


@pytest.mark.parametrize(
    "registry",
    [
        MODELS,
        FLOWS,
        presets.PRESETS,
        config.PROFILES,
        reproduce.ROWS,
        reproduce.PROFILES,
    ],
    ids=lambda r: r.kind,
)
def test_every_cli_name_is_looked_up_in_a_registry(registry: Registry) -> None:
    assert isinstance(registry, Registry) and len(registry) > 0
    first = next(iter(registry))
    assert registry.lookup(first) is registry[first]
    with pytest.raises(UserError, match=rf"^unknown {registry.kind} '{first}x' \(did you mean"):
        registry.lookup(first + "x")
    with pytest.raises(KeyError):
        registry[first + "x"]  # the plain mapping stays a mapping


def test_training_profiles_keep_their_names_order_and_errors() -> None:
    assert list(config.PROFILES) == ["paper", "small"]
    assert config.DEFAULT_PROFILE in config.PROFILES
    with pytest.raises(UserError, match=r"^unknown profile 'smal' \(did you mean 'small'\?\)"):
        config.resolve("smal")
    with pytest.raises(UserError, match=r"^unknown profile 'huge'; choose one of: paper, small$"):
        config.resolve("huge")


def test_presets_keep_their_order_copies_and_error() -> None:
    names = list(presets.PRESETS)
    assert names[:4] == [
        f"paper-{s}" for s in ("mass-spring", "pendulum", "two-body", "three-body")
    ]
    assert names[4:6] == ["dm-mass-spring", "dm-mass-spring-colors"]
    settings = presets.preset("dm-pendulum")
    assert "description" not in settings and settings["constants"] == {"factor": 1.0}
    settings["constants"]["factor"] = 2.0  # a copy: the registry's entry is unchanged
    assert presets.PRESETS["dm-pendulum"]["constants"] == {"factor": 1.0}
    with pytest.raises(UserError) as err:
        presets.preset("dm-pendulum-colorz")
    assert str(err.value) == (
        "unknown preset 'dm-pendulum-colorz' (did you mean 'dm-pendulum-colors'?); "
        "`hgn data presets` lists them all"
    )
