"""The benchmark's answer to its question, read from the finished cells by rules fixed
before any table was run (docs/SCIENCE.md §7, "The answer"):

* a rollout **holds** when its MSE is at most :data:`HOLDS` of the mean image's over the
  whole rollout (hgn's protocol: 60 steps forward, 30 backward, 2× and ½× speed), the
  bar of the learned-dynamics targets; a rollout the model cannot make does not hold;
* a model **finds the phase space** on a dataset when its SyMetric score is 1;
* per dataset the Hamiltonian prior **wins, ties or loses**: the best model built on it
  (``prior == "hamiltonian"``) against the best without a physics prior
  (``prior == "none"``). Models are ranked by the rollouts they hold, then by the
  forward MSE / mean-image MSE; two forward ratios within a factor of
  :data:`TIE_FACTOR` tie (one seed per cell: a smaller gap is within what another seed
  moves). The same rule compares each pair in :data:`PAIRS`, models that differ in
  nothing but the prior.

Every verdict carries the numbers it was made from, so a reader can disagree with the
rule and still use the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HOLDS = 0.2
"""A rollout holds when its MSE is at most this fraction of the mean image's."""
TIE_FACTOR = 2.0
"""Forward ratios closer than this factor tie."""
ROLLOUTS = {"forward": "fwd", "backward": "bwd", "2x": "2×", "half": "½×"}
PAIRS = (("hgn++", "ode"),)
"""(with the prior, without it) pairs that share every other part (docs/SCIENCE.md §7)."""


@dataclass(frozen=True)
class Standing:
    """What one trained cell shows: the rollouts it holds and its forward ratio."""

    row: str
    held: tuple[str, ...]
    forward: float

    def words(self) -> str:
        return f"{self.row}: holds {held_words(self.held)}; fwd {self.forward:.3g}"


def held_words(held: Sequence[str]) -> str:
    """``("forward", "half")`` → ``"fwd, ½×"``; nothing held → ``"none"``."""
    return ", ".join(ROLLOUTS[r] for r in held) or "none"


def standing(row: str, record: Mapping[str, Any]) -> Standing | None:
    """The cell's standing, or None where it has no forward ratio (not trained, refused)."""
    rollouts = (record.get("extrapolation") or {}).get("rollouts") or {}
    ratios = {key: (rollouts.get(key) or {}).get("ratio") for key in ROLLOUTS}
    if ratios["forward"] is None:
        return None
    held = tuple(key for key, r in ratios.items() if r is not None and r <= HOLDS)
    forward = float(ratios["forward"])  # a diverged model's NaN ranks last
    return Standing(row, held, forward if math.isfinite(forward) else math.inf)


def compare(a: Standing, b: Standing, forward_only: bool = False) -> str:
    """``"wins"``, ``"ties"`` or ``"loses"``: how ``a`` does against ``b`` (by the
    forward ratio alone with ``forward_only``)."""
    if not forward_only and len(a.held) != len(b.held):
        return "wins" if len(a.held) > len(b.held) else "loses"
    low, high = sorted((a.forward, b.forward))
    if high <= TIE_FACTOR * low:  # two infinities (both diverged) tie too
        return "ties"
    return "wins" if a.forward < b.forward else "loses"


def best(standings: Sequence[Standing], forward_only: bool = False) -> Standing | None:
    """The first by rollouts held, then by forward ratio (by that alone with
    ``forward_only``)."""
    if forward_only:
        return min(standings, key=lambda s: s.forward, default=None)
    return min(standings, key=lambda s: (-len(s.held), s.forward), default=None)


def answer(
    cells: Mapping[str, Mapping[str, Any]],
    rows: Sequence[str],
    columns: Sequence[str],
    priors: Mapping[str, str],
) -> dict[str, Any]:
    """Per dataset: what each row holds, whether it finds the phase space, and the
    prior's verdict (overall and per pair in :data:`PAIRS`). ``priors``: each row's
    declared prior (rows of unregistered models are left out of the verdicts)."""
    found: dict[str, Any] = {}
    for col in columns:
        records = cells.get(col, {})
        stand = {r: s for r in rows if r in records and (s := standing(r, records[r]))}
        groups = {
            kind: [s for r, s in stand.items() if priors.get(r) == kind]
            for kind in ("hamiltonian", "none")
        }
        with_prior, without = best(groups["hamiltonian"]), best(groups["none"])
        ahead = [best(groups[kind], forward_only=True) for kind in ("hamiltonian", "none")]
        found[col] = {
            "held": {r: list(s.held) for r, s in stand.items()},
            "forward": {r: s.forward for r, s in stand.items()},
            "phase_space": {
                r: records[r]["symetric"]["score"]
                for r in rows
                if r in records and "score" in (records[r].get("symetric") or {})
            },
            "prior": _verdict(with_prior, without),
            "forward_alone": _verdict(*ahead, forward_only=True),
            "pairs": {
                f"{a} vs {b}": _verdict(stand.get(a), stand.get(b))
                for a, b in PAIRS
                if a in rows and b in rows
            },
        }
    return found


def _verdict(
    with_prior: Standing | None, without: Standing | None, forward_only: bool = False
) -> dict[str, Any]:
    if with_prior is None or without is None:
        missing = "with the prior" if with_prior is None else "without it"
        return {"verdict": None, "why": f"no trained model {missing} yet"}
    return {
        "verdict": compare(with_prior, without, forward_only),
        "with_prior": with_prior.words(),
        "without": without.words(),
    }


def verdict_cell(v: Mapping[str, Any]) -> str:
    if v["verdict"] is None:
        return f"— ({v['why']})"
    return f"{v['verdict']} ({v['with_prior']} — {v['without']})"


def tables(
    found: Mapping[str, Any], rows: Sequence[str], columns: Sequence[str]
) -> tuple[tuple[list[str], list[list[str]]], tuple[list[str], list[list[str]]]]:
    """Two tables: rows × datasets, what each holds (and its SyMetric score); and per
    dataset, the prior's verdict overall and for each pair."""
    held_rows = []
    for r in rows:
        line = [r]
        for col in columns:
            f = found.get(col, {})
            if r not in f.get("held", {}):
                line.append("—")
                continue
            score = f["phase_space"].get(r)
            tail = "" if score is None else f"; SyMetric {score:.2g}"
            line.append(held_words(f["held"][r]) + tail)
        held_rows.append(line)
    pair_names = list(dict.fromkeys(p for f in found.values() for p in f["pairs"]))
    verdict_rows = [
        [
            col,
            verdict_cell(found[col]["prior"]),
            verdict_cell(found[col]["forward_alone"]),
            *(
                verdict_cell(found[col]["pairs"][p]) if p in found[col]["pairs"] else "—"
                for p in pair_names
            ),
        ]
        for col in columns
    ]
    return (
        (["model", *columns], held_rows),
        (
            [
                "dataset",
                "best with the Hamiltonian prior vs best without",
                "forward alone",
                *pair_names,
            ],
            verdict_rows,
        ),
    )


HOLD_RULE = (
    f"A rollout holds when its MSE is at most {HOLDS:g} of the mean image's over the whole "
    "rollout (fwd 60 steps, bwd 30, 2× and ½× speed); one the model cannot make does not "
    "hold. SyMetric: the mean over batches of 1 (the latent is a symplectic image of the "
    "true phase space) or 0 (docs/SCIENCE.md §7)."
)
VERDICT_RULE = (
    "Per dataset, the best model with a Hamiltonian prior (HGN++, HGN, HNN) against the "
    "best without a physics prior (ODE, RGN, LSTM, GRU), ranked by the rollouts held, then "
    f"by the forward ratio, where a factor under {TIE_FACTOR:g} is a tie (one seed per "
    "cell). Forward alone: the lowest forward ratio on each side, by the same tie band "
    "(every model rolls forward; only some run backwards or at other speeds). HGN++ "
    "against the ODE: the same model but for the prior (docs/SCIENCE.md §7)."
)
