"""Everything a reproduction shows, rebuilt from its finished cells: ``results.json``,
``table1.md``, ``table2.md``, ``prefix.md``, the figures and a static ``report.html``.

Rebuilding is cheap (small files, a few plots), so it runs at the end of every run and a
partial run still yields a readable, honestly labelled report. The page's layout lives in
``report.html.template`` beside this file; this module fills in its tables and lists.
"""

from __future__ import annotations

import datetime
import html
import platform
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import torch

from hgn import __version__
from hgn.evaluation.evaluate import SCALE
from hgn.experiments.reproduce.cells import VPT_FRACTION, finished_cells
from hgn.experiments.reproduce.figures import draw_figures
from hgn.experiments.reproduce.profiles import MODEL_LABELS, MODEL_ORDER, SYSTEM_ORDER, Profile
from hgn.experiments.reproduce.tables import (
    PUBLISHED_MSE,
    checks,
    fmt,
    html_table,
    markdown_table,
    prefix_rows,
    table_rows,
    training_rows,
)
from hgn.utils import write_json, write_text

TEMPLATE = "report.html.template"
"""The page's fixed part (styles, headings, notes, the image check), package data."""


def _template() -> Template:
    source = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    return Template(source)


def _img(src: str, alt: str) -> str:
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" loading="eager">'


def _check_items(summary: Mapping[str, Any]) -> str:
    """The acceptance checks as list items."""
    items = []
    for system, check in summary["checks"]["hgn_vs_hnn"].items():
        items.append(
            f"<li>{html.escape(system)}: HNN test MSE / HGN test MSE = {check['ratio']:.1f} "
            f"({'≥' if check['passed'] else '<'} 5)</li>"
        )
    for system, check in summary["checks"]["leapfrog_vs_euler"].items():
        lf, eu = check.get("leapfrog_relative_std"), check.get("euler_relative_std")
        relative = (
            ""
            if lf is None or eu is None
            else f"; std(H)/|mean H|: leapfrog {lf:.2e}, Euler {eu:.2e}"
        )
        items.append(
            f"<li>{html.escape(system)}: energy variance leapfrog {fmt(check['leapfrog'] * SCALE)}"
            f" vs Euler {fmt(check['euler'] * SCALE)} ×1e4 "
            f"({'leapfrog lower' if check['passed'] else 'leapfrog NOT lower'}){relative}</li>"
        )
    return "\n".join(items)


def _figure_sections(figures: Mapping[str, Any]) -> str:
    parts = []
    if "fig6" in figures:
        parts.append("<h2>Figure 6: per-step MSE of the unroll</h2>")
        parts.append(_img(figures["fig6"], "Figure 6"))
    if figures.get("fig7"):
        parts.append("<h2>Figure 7: forward, backward, 2× and ½× speed rollouts</h2>")
        parts += [_img(src, f"Figure 7, {system}") for system, src in figures["fig7"].items()]
    if "fig8" in figures:
        parts += ["<h2>Figure 8: samples from the prior</h2>", _img(figures["fig8"], "Figure 8")]
    return "\n".join(parts)


def _prefix_section(summary: Mapping[str, Any], figures: Mapping[str, Any]) -> str:
    profile = summary["profile"]
    header, rows = prefix_rows(summary["cells"], summary["systems"])
    if not rows:
        return ""
    parts = [
        "<h2>Beyond the paper: the prefix protocol</h2>",
        f'<p class="note">Infer the state from the first {profile["context"]} frames, '
        f"predict {profile['horizon']} further frames of longer test trajectories. VPT "
        f"(valid prediction time): predicted steps before the frame MSE first exceeds the "
        f"noise floor + {VPT_FRACTION:g} × (the mean-image MSE − the noise floor), both over "
        "the predicted frames (mean ± sd over sequences); MSE: mean over the predicted "
        "frames, ×1e4.</p>",
        html_table(header, rows),
    ]
    if "prefix" in figures:
        parts.append(_img(figures["prefix"], "prefix protocol error curves"))
    return "\n".join(parts)


def _animations(summary: Mapping[str, Any]) -> str:
    cells, parts = summary["cells"], []
    for system in summary["systems"]:
        gifs = [
            (model, cells[system][model]["files"]["animation"])
            for model in MODEL_ORDER
            if model in cells.get(system, {})
        ]
        if not gifs:
            continue
        parts.append(f"<h3>{html.escape(system)}</h3><div class='gifs'>")
        for model, src in gifs:
            parts.append(
                f"<figure>{_img(src, f'{system} {model}')}"
                f"<figcaption>{html.escape(MODEL_LABELS[model])}</figcaption></figure>"
            )
        parts.append("</div>")
    return "\n".join(parts)


def write_report(out: Path, summary: Mapping[str, Any], figures: Mapping[str, Any]) -> Path:
    """``out/report.html``: tables, figures and animations, relative links only.

    It needs no server and no network. A small inline script counts images that failed
    to load and writes the count into ``#image-check`` (also read by the tests).
    """
    cells, systems, profile = summary["cells"], summary["systems"], summary["profile"]
    done, wanted = summary["finished_cells"], summary["requested_cells"]
    partial = (
        f'<p class="warn">Partial results: {done} of {wanted} requested cells are finished; '
        "rerun the same command to complete them. Empty cells show —.</p>"
        if done < wanted
        else ""
    )
    page = _template().substitute(
        profile_name=html.escape(profile["name"]),
        profile_description=html.escape(profile["description"]),
        command=html.escape(summary["command"]),
        generated=html.escape(summary["generated"]),
        version=html.escape(summary["version"]),
        machine=html.escape(summary["machine"]),
        partial=partial,
        table1=html_table(*table_rows(cells, "mse", systems)),
        table2=html_table(*table_rows(cells, "energy_var", systems)),
        training=html_table(*training_rows(cells, systems)),
        checks=_check_items(summary),
        figures=_figure_sections(figures),
        prefix=_prefix_section(summary, figures),
        animations=_animations(summary),
    )
    return write_text(out / "report.html", page)


def build_outputs(
    out: Path, profile: Profile, requested: Sequence[tuple[str, str]], command: str
) -> dict[str, Any]:
    """(Re)write results.json, the tables, the figures and report.html from all
    finished cells in ``out``; returns the summary recorded in results.json."""
    cells = finished_cells(out)
    systems = [s for s in SYSTEM_ORDER if s in cells or any(r[0] == s for r in requested)]
    summary = {
        "profile": profile.settings(),
        "command": command,
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "machine": f"{platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s) per process",
        "systems": systems,
        "requested_cells": len(requested),
        "finished_cells": sum(1 for s, m in requested if m in cells.get(s, {})),
        "published_mse": PUBLISHED_MSE,
        "checks": checks(cells),
        "cells": cells,
    }
    write_json(out / "results.json", summary)
    scale_note = (
        f"Profile `{profile.name}`; made by `{command}`. Ours: mean ± sd over sequences, ×1e4; "
        "[x] = published (paper, 64×64, 50,000 training sequences), shown where our copy "
        "of the paper has it. — = cell not run yet.\n\n"
    )
    write_text(
        out / "table1.md",
        "# Table 1: average pixel MSE over the unroll (train / test)\n\n"
        + scale_note
        + markdown_table(*table_rows(cells, "mse", systems)),
    )
    write_text(
        out / "table2.md",
        "# Table 2: variance of the learned Hamiltonian along a rollout\n\n"
        + scale_note
        + markdown_table(*table_rows(cells, "energy_var", systems)),
    )
    header, rows = prefix_rows(cells, systems)
    if rows:
        write_text(
            out / "prefix.md",
            f"# Prefix protocol: infer from {profile.context} frames, predict "
            f"{profile.horizon}\n\nVPT in predicted steps (threshold: the noise floor + "
            f"{VPT_FRACTION:g} × (the mean-image MSE − the noise floor), both over the "
            "predicted frames); MSE over the predicted frames ×1e4; mean ± sd over "
            "sequences.\n\n" + markdown_table(header, rows),
        )
    figures = draw_figures(out, cells, systems, prefix=bool(rows))
    write_report(out, summary, figures)
    return summary
