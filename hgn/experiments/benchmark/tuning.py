"""The benchmark's tuning sweep: the same small, recorded search for every model.

A fair table gives every model an equal tuning effort (docs/SCIENCE.md §7). ``hgn
benchmark --tune`` trains, beside each model's ``small`` profile, the four variants of
:data:`VARIANTS` (the learning rate ÷ 3 and × 3, β ÷ 10, the dynamics network twice as
wide), each as a row of its own (``lstm@lr-x3``) at the same minutes per cell, and
writes ``tune.md`` and ``tune.json``: every variant's score and, per model, the one
chosen by :data:`CRITERION`. ``hgn benchmark --tuned DIR`` then trains each model of
the table with its chosen variant, and records which.

One knob at a time around the profile, not a grid: four extra runs per model keep the
sweep within the table's own order of cost, and the same four for every model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hgn.utils import UserError, write_json, write_text

SEPARATOR = "@"
"""Between a model and its variant in a row's name (``lstm@lr-x3``)."""

DEFAULT = "profile"
"""The variant that changes nothing: the model's ``small`` profile as it is."""

VARIANTS: dict[str, tuple[str, float]] = {
    "lr-d3": ("lr", 1 / 3),
    "lr-x3": ("lr", 3.0),
    "beta-d10": ("beta", 0.1),
    "width-x2": ("width", 2.0),
}
"""Each variant: the knob it turns and the factor it applies to the profile's value."""

BETA: dict[str, str] = {"hnn": "hnn_weight"}
"""The config key of β per model (default ``kl_weight``, the posterior's KL weight).
HNN has no KL term; its β is the weight of its dynamics loss against reconstruction,
the same kind of balance."""

WIDTH: dict[str, tuple[str, ...]] = {
    "hgn++": ("energy_hidden",),
    "ode": ("dynamics_hidden",),
    "rgn": ("dynamics_hidden",),
    "lgn": ("dynamics_hidden",),
    "lstm": ("recurrent_hidden",),
    "gru": ("recurrent_hidden",),
    "hgn": ("hamiltonian_filters",),
    "hnn": ("hamiltonian_hidden",),
}
"""The config keys of the dynamics network's width per model: what differs between the
models (the encoder and decoder they share are not swept)."""

CRITERION = "forward MSE / mean-image MSE (hgn's protocol), mean over the datasets; lower wins"


def split_row(row: str) -> tuple[str, str | None]:
    """``"lstm@lr-x3"`` → ``("lstm", "lr-x3")``; ``"lstm"`` → ``("lstm", None)``."""
    model, _, variant = row.partition(SEPARATOR)
    return model, variant or None


def variant_of(row: str, tuned: Mapping[str, str]) -> tuple[str, str]:
    """A row's model and the variant it trains with: its own (``lstm@lr-x3``), else the
    one ``--tuned`` chose for the model, else :data:`DEFAULT`."""
    model, variant = split_row(row)
    return model, variant or tuned.get(model) or DEFAULT


def row_of(model: str, variant: str) -> str:
    """The row of ``model`` trained with ``variant`` (:data:`DEFAULT`: the model's name)."""
    return model if variant == DEFAULT else f"{model}{SEPARATOR}{variant}"


def rows(models: Sequence[str]) -> list[str]:
    """The sweep's rows: each model's profile, then its variants."""
    return [row_of(m, v) for m in models for v in (DEFAULT, *VARIANTS)]


def _scaled(value: Any, factor: float, key: str) -> Any:
    if isinstance(value, bool) or value is None:
        raise UserError(f"cannot scale {key}={value!r}")
    if isinstance(value, int):
        return max(1, round(value * factor))
    if isinstance(value, list | tuple):
        return [_scaled(v, factor, key) for v in value]
    return value * factor


def apply_variant(
    model: str, variant: str | None, values: dict[str, Any], train: dict[str, Any]
) -> None:
    """Turn ``variant``'s knob in a run's model ``values`` and ``train`` settings (in
    place); ``None`` or :data:`DEFAULT` changes nothing, an unknown name is one line."""
    if variant in (None, DEFAULT):
        return
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r}; choose {DEFAULT} or {', '.join(VARIANTS)}")
    knob, factor = VARIANTS[variant]
    if knob == "lr":
        train["lr"] = train["lr"] * factor
        return
    keys = (BETA.get(model, "kl_weight"),) if knob == "beta" else WIDTH.get(model, ())
    missing = [k for k in keys if k not in values]
    if not keys or missing:
        raise UserError(f"{model} has no {knob} to sweep ({', '.join(missing) or 'none declared'})")
    for key in keys:
        values[key] = _scaled(values[key], factor, key)


def _score(record: Mapping[str, Any]) -> float | None:
    forward = record.get("extrapolation", {}).get("rollouts", {}).get("forward", {})
    ratio = forward.get("ratio") if isinstance(forward, Mapping) else None
    return float(ratio) if isinstance(ratio, int | float) and math.isfinite(ratio) else None


def summarise(
    cells: Mapping[str, Mapping[str, Any]], models: Sequence[str], columns: Sequence[str]
) -> dict[str, Any]:
    """Every variant's score per model and the chosen one: the lowest mean score over
    ``columns``, among the variants finished on all of them (a model is chosen for only
    once all its variants are, so that resuming cannot change a choice)."""
    result: dict[str, Any] = {"criterion": CRITERION, "datasets": list(columns), "models": {}}
    for model in models:
        scores: dict[str, float | None] = {}
        finished = True
        for variant in (DEFAULT, *VARIANTS):
            records = [cells.get(c, {}).get(row_of(model, variant)) for c in columns]
            finished &= all(r is not None for r in records)
            scored = [s for s in (_score(r) for r in records if r) if s is not None]
            scores[variant] = sum(scored) / len(scored) if scored else None
        valid = {v: s for v, s in scores.items() if s is not None}
        chosen = min(valid, key=lambda v: (valid[v], v != DEFAULT)) if finished and valid else None
        result["models"][model] = {"scores": scores, "chosen": chosen}
    return result


def write(out: Path, summary: Mapping[str, Any], minutes: float, command: str) -> None:
    """``tune.json`` (read back by ``--tuned``) and ``tune.md``."""
    payload = {**summary, "minutes_per_cell": minutes, "command": command}
    write_json(out / "tune.json", payload)
    head = ["model", DEFAULT, *VARIANTS, "chosen"]
    lines = [
        "# Benchmark tuning sweep",
        "",
        f"Built by `{command}`; {minutes:g} minutes per run, on "
        f"{', '.join(summary['datasets'])}. Criterion: {CRITERION}. Variants: "
        + "; ".join(f"`{v}`: {k} × {f:g}" for v, (k, f) in VARIANTS.items())
        + " (β: the KL weight; HNN's dynamics-loss weight). — = not finished.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for model, entry in summary["models"].items():
        scores = entry["scores"]
        cells = ["—" if scores[v] is None else f"{scores[v]:.3g}" for v in (DEFAULT, *VARIANTS)]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {entry['chosen'] or '—'} |")
    write_text(out / "tune.md", "\n".join(lines) + "\n")


def read_tuned(path: str | Path, models: Sequence[str]) -> dict[str, str]:
    """The chosen variant of each of ``models`` from a tuning sweep's directory (or its
    ``tune.json``); one line if it is missing, unfinished or lacks a model."""
    path = Path(path)
    file = path / "tune.json" if path.is_dir() else path
    try:
        summary = json.loads(file.read_text())
        entries = summary["models"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise UserError(
            f"--tuned: {file} is not a tuning sweep's tune.json; run `hgn benchmark --tune` first"
        ) from None
    chosen: dict[str, str] = {}
    for model in models:
        entry = entries.get(model) if isinstance(entries, Mapping) else None
        if not entry or entry.get("chosen") not in (DEFAULT, *VARIANTS):
            raise UserError(
                f"--tuned: {file} has no finished choice for {model}; finish its sweep "
                "(rerun the same `hgn benchmark --tune` command) or leave the model out"
            )
        chosen[model] = entry["chosen"]
    return chosen
