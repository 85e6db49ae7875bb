"""The paper's tables from finished cells: Table 1 (pixel MSE), Table 2 (energy
variance), the training actually done, the prefix protocol, and the acceptance checks;
as Markdown and as HTML. Values are shown ×1e4 like the paper's, beside its numbers."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hgn.evaluation.evaluate import SCALE
from hgn.experiments.reproduce.profiles import MODEL_LABELS, MODEL_ORDER

PUBLISHED_MSE: dict[str, dict[str, tuple[float, float]]] = {
    "hgn": {
        "mass-spring": (3.84, 6.23),
        "pendulum": (4.90, 11.72),
        "two-body": (6.36, 16.47),
        "three-body": (7.88, 9.80),
    },
    "hgn-euler": {
        "mass-spring": (3.67, 6.20),
        "pendulum": (5.43, 10.93),
        "two-body": (6.62, 15.06),
        "three-body": (7.51, 9.40),
    },
    "hgn-determ": {
        "mass-spring": (0.23, 3.07),
        "pendulum": (0.79, 10.68),
        "two-body": (2.34, 14.47),
        "three-body": (4.10, 5.17),
    },
}
"""Table 1 of the paper (×1e4, train / test), as far as our copy of it has the numbers
(SPEC.md §5): the HNN, HNN Conv and no-f_ψ rows and Table 2 were lost with the tables'
layout; the paper says HNN was an order of magnitude worse on all four systems."""

Cells = Mapping[str, Mapping[str, Any]]
"""Finished cells as ``{system: {model: result}}`` (see ``cells.finished_cells``)."""


def fmt(value: float | None) -> str:
    """A number for a table: two decimals, or scientific where that would hide it."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value != 0 and (abs(value) >= 1000 or abs(value) < 0.01):
        return f"{value:.2e}"
    return f"{value:.2f}"


def _cell_text(stats: Mapping[str, Any] | None, key: str, published: float | None) -> str:
    """``ours ± sd [paper]`` for one table cell, scaled by 1e4."""
    ours = (
        "—" if stats is None else f"{fmt(stats[key] * SCALE)} ± {fmt(stats[key + '_std'] * SCALE)}"
    )
    return ours if published is None else f"{ours} [{published:.2f}]"


def table_rows(cells: Cells, key: str, systems: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of Table 1 (``key='mse'``) or Table 2 (``key='energy_var'``)."""
    header = ["model"] + [f"{s} {split}" for s in systems for split in ("train", "test")]
    rows = []
    for model in MODEL_ORDER:
        row = [MODEL_LABELS[model]]
        for system in systems:
            record = cells.get(system, {}).get(model)
            published = PUBLISHED_MSE.get(model, {}).get(system) if key == "mse" else None
            for i, split in enumerate(("train", "test")):
                stats = None if record is None else record["paper"][split]
                row.append(_cell_text(stats, key, None if published is None else published[i]))
        rows.append(row)
    if key == "mse":  # what a model that ignores its input scores (HNN's collapse)
        row = ["Mean image (reference)"]
        for system in systems:
            record = next(iter(cells.get(system, {}).values()), None)
            for split in ("train", "test"):
                mean = None if record is None else record["paper"][split]["mean_image_mse"]
                row.append("—" if mean is None else fmt(mean * SCALE))
        rows.append(row)
    return header, rows


def training_rows(cells: Cells, systems: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Optimisation steps each run actually made, and what stopped it (the step budget
    or the wall-clock cap): models are compared at equal time, not equal steps."""
    header = ["model"] + [f"{s} {run}" for s in systems for run in ("paper", "prefix")]
    rows = []
    for model in MODEL_ORDER:
        row = [MODEL_LABELS[model]]
        for system in systems:
            trained = (cells.get(system, {}).get(model) or {}).get("train", {})
            for run in ("paper", "prefix"):
                info = trained.get(run)
                row.append("—" if info is None else f"{info['steps']} ({info['stopped_by']})")
        rows.append(row)
    return header, rows


def prefix_rows(cells: Cells, systems: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Valid prediction time (steps) and mean MSE (×1e4) over the predicted horizon;
    only the models evaluated on the prefix protocol get a row."""
    header = ["model"] + [f"{s} {what}" for s in systems for what in ("VPT", "MSE")]
    rows = []
    for model in MODEL_ORDER:
        row, filled = [MODEL_LABELS[model]], False
        for system in systems:
            prefix = (cells.get(system, {}).get(model) or {}).get("prefix")
            if prefix is None:
                row += ["—", "—"]
                continue
            filled = True
            row.append(f"{prefix['vpt']:.1f} ± {prefix['vpt_std']:.1f}")
            row.append(f"{fmt(prefix['mse'] * SCALE)} ± {fmt(prefix['mse_std'] * SCALE)}")
        if filled:
            rows.append(row)
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (for table1.md, table2.md, prefix.md)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table as :func:`markdown_table`, in HTML (cell texts escaped)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def checks(cells: Cells) -> dict[str, dict[str, Any]]:
    """The issue's acceptance figures per system, where both cells exist.

    ``hgn_vs_hnn``: HNN's test MSE divided by HGN's (target ≥ 5).
    ``leapfrog_vs_euler``: HGN's and HGN Euler's test energy variance (target: leapfrog
    lower), with the scale-free std(H)/|mean H| beside it, since a learned H's scale is
    arbitrary and a nearly constant H has a small variance for any integrator.
    """
    out: dict[str, dict[str, Any]] = {"hgn_vs_hnn": {}, "leapfrog_vs_euler": {}}
    for system, row in cells.items():
        if "hgn" in row and "hnn" in row:
            ratio = row["hnn"]["paper"]["test"]["mse"] / max(
                row["hgn"]["paper"]["test"]["mse"], 1e-12
            )
            out["hgn_vs_hnn"][system] = {"ratio": ratio, "passed": ratio >= 5.0}
        if "hgn" in row and "hgn-euler" in row:
            lf, eu = row["hgn"]["paper"]["test"], row["hgn-euler"]["paper"]["test"]
            out["leapfrog_vs_euler"][system] = {
                "leapfrog": lf["energy_var"],
                "euler": eu["energy_var"],
                "leapfrog_relative_std": lf.get("energy_relative_std"),
                "euler_relative_std": eu.get("energy_relative_std"),
                "passed": lf["energy_var"] < eu["energy_var"],
            }
    return out
