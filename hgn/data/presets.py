"""Named dataset settings: ``hgn data generate --preset NAME`` (listed by
``hgn data presets``).

``paper-*``: the HGN paper's four datasets (docs/SCIENCE.md §2): 64×64, Δt 0.125, 31 frames,
50,000 + 10,000 trajectories, per-frame observation noise.

``dm-*``: the DeepMind Hamiltonian dynamics suite's settings where they are public
(docs/SCIENCE.md §2): Δt 0.05, 32×32, no noise, 50,000 + 20,000 trajectories, the suite's
pictures (soft discs with a sigmoid edge, radius √(m/π), hues on dark grey), its
pendulum Hamiltonian (m g l (1 − cos q), no factor 2) and 64 frames (the 4 context + 60
target frames its HGN++ trains on). Each system comes in variants:

- ``-colors``: random body colours per trajectory;
- ``-random``: constants drawn per trajectory from the ranges below (hgn's choice: the
  suite's exact ranges are not public);
- ``-friction``: friction 0.05 (damped, **not Hamiltonian**);
- ``-offset``: the scene shifted by up to 0.3 world units per trajectory;
- ``-long``: 256 frames (the suite's long test sets), 5,000 + 1,000 trajectories.

Where hgn differs from the suite: the canvas of each system is hgn's (sized so nothing
leaves the frame at any constant in the ranges) and the mass-spring moves horizontally.
"""

from __future__ import annotations

from typing import Any

from hgn.registry import Registry

PAPER = {"dt": 0.125, "size": 64, "steps": 30, "n_train": 50_000, "n_test": 10_000}
DM = {
    "dt": 0.05,
    "size": 32,
    "steps": 63,
    "n_train": 50_000,
    "n_test": 20_000,
    "noise": 0.0,
    "style": "dm",
}
DM_SYSTEMS: dict[str, dict[str, Any]] = {
    "mass-spring": {"constants": {}, "vary": {"k": (1.0, 3.0), "m": (0.3, 0.7)}},
    "pendulum": {
        "constants": {"factor": 1.0},
        "vary": {"m": (0.5, 1.5), "l": (0.5, 1.0), "g": (3.0, 4.0)},
    },
    "double-pendulum": {
        "constants": {},
        "vary": {"m1": (0.4, 0.6), "m2": (0.4, 0.6), "l1": (0.8, 1.2), "l2": (0.8, 1.2)},
    },
    "two-body": {"constants": {}, "vary": {"m": (0.5, 1.5), "g": (0.5, 1.5)}},
}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "": ("", {}),
    "-colors": ("random body colours", {"random_colours": True}),
    "-random": ("random constants", {}),
    "-friction": ("friction 0.05, not Hamiltonian", {"constants": {"friction": 0.05}}),
    "-offset": ("canvas offset up to 0.3", {"constants": {"offset": 0.3}}),
    "-long": ("256 frames", {"steps": 255, "n_train": 5_000, "n_test": 1_000}),
}


def _build() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for system in ("mass-spring", "pendulum", "two-body", "three-body"):
        presets[f"paper-{system}"] = {
            "system": system,
            **PAPER,
            "description": "the HGN paper's dataset",
        }
    for system, base in DM_SYSTEMS.items():
        for suffix, (what, extra) in VARIANTS.items():
            settings = {"system": system, **DM, **{k: v for k, v in extra.items()}}
            settings["constants"] = {**base["constants"], **extra.get("constants", {})}
            if suffix == "-random":
                settings["vary"] = base["vary"]
            settings["description"] = "DeepMind suite" + (f", {what}" if what else "")
            presets[f"dm-{system}{suffix}"] = settings
    return presets


PRESETS: Registry[dict[str, Any]] = Registry(
    "preset", _build(), choices="`hgn data presets` lists them all"
)
"""Every preset by name: keyword arguments of :func:`hgn.data.generate` plus a
``description``."""


def preset(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` (a copy, so a caller may change it), or one line
    naming the closest name."""
    settings = dict(PRESETS.lookup(name))
    settings.pop("description")
    settings["constants"] = dict(settings.get("constants", {}))
    return settings
