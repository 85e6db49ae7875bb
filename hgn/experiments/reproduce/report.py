"""Everything a reproduction shows, rebuilt from its finished cells: ``results.json``
(every number), ``table1.md``, ``table2.md``, ``extrapolation.md``, ``samples.md``, the
figures and a static ``report.html``.

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
from hgn.experiments.reproduce.cells import VPT_FRACTION, finished_cells
from hgn.experiments.reproduce.figures import draw_figures
from hgn.experiments.reproduce.profiles import (
    MODEL_LABELS,
    MODEL_ORDER,
    REGIMES,
    SYSTEM_ORDER,
    Profile,
)
from hgn.experiments.reproduce.tables import (
    BAR,
    PUBLISHED_MSE,
    check_lines,
    checks,
    extrapolation_rows,
    html_table,
    markdown_table,
    samples_rows,
    table1_rows,
    table2_rows,
    training_rows,
)
from hgn.utils import write_json, write_text

TEMPLATE = "report.html.template"
"""The page's fixed part (styles, headings, notes, the image check), package data."""

REGIME_TITLES = {
    "noisy": "the paper's data (fresh observation noise in every frame)",
    "clean": "clean data (--noise 0)",
}

EXTRAPOLATION_NOTE = (
    "Clean long test sequences; each model (trained on clean data) reads its window from "
    "frame {start} and rolls out forward to the last frame, backward (dt → −dt) to frame 0, "
    "at 2× (2dt, sub-stepped at the trained dt) and at ½× (dt/2); every predicted frame is "
    "compared with the simulator's at the same physical time (hgn.evaluation.extrapolate). "
    "Ratio: MSE / mean-image MSE on the same frames (1 = no better than the average frame). "
    f"VPT: mean predicted steps before a frame's MSE first exceeds {VPT_FRACTION:g} × that "
    "frame's mean-image MSE / steps taken. H drift: relative spread of the learned H along a "
    "{drift}-step rollout. A model whose integrator is not time-reversible still has its "
    "backward numbers, marked in their cell. "
    + "HGN++'s row is its own recipe's run (docs/SCIENCE.md §3a), not the 30-step run of its "
    "Tables 1–2 rows: trained on clean {hgnpp_steps}-step sequences with a budget of "
    "{hgnpp_budget} (the other rows: the profile's 30-step data and budget; see the "
    "training table)."
)

LONG_NOTE = (
    "HGN++ (own recipe: clean long data): HGN++'s run on clean {hgnpp_steps}-step "
    "sequences with {hgnpp_budget}, scored with the same protocol on the same clean "
    "test set; shown apart because it had more data and budget than the rows above, "
    "which are all trained on equal terms (HGN++ included)."
)


def _hgnpp_notes(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The values :data:`EXTRAPOLATION_NOTE` and :data:`LONG_NOTE` name, from the profile's
    settings (``profile.json``'s)."""
    minutes = profile["hgnpp_minutes"]
    budget = f"{profile['hgnpp_train_steps']:,} steps" + (
        "" if minutes is None else f" or {minutes:g} minutes, whichever ends first"
    )
    return {
        "start": profile["start"],
        "drift": profile["drift_steps"],
        "hgnpp_steps": profile["hgnpp_steps"],
        "hgnpp_budget": budget,
    }


def _template() -> Template:
    source = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    return Template(source)


def _img(src: str, alt: str) -> str:
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" loading="eager">'


def _list(lines: Sequence[str]) -> str:
    return "\n".join(f"<li>{html.escape(line)}</li>" for line in lines)


def _figure_sections(figures: Mapping[str, Any]) -> str:
    parts = []
    if "fig6" in figures:
        parts.append("<h2>Figure 6: per-step MSE of the unroll (noisy and clean test data)</h2>")
        parts.append(_img(figures["fig6"], "Figure 6"))
    if figures.get("fig7"):
        parts.append("<h2>Figure 7: forward, backward, 2× and ½× speed rollouts</h2>")
        parts.append(
            '<p class="note">Paper protocol on the paper\'s data (the noisy-data models).</p>'
        )
        parts += [_img(src, f"Figure 7, {system}") for system, src in figures["fig7"].items()]
    if "fig8" in figures:
        parts += ["<h2>Figure 8: samples from the prior</h2>", _img(figures["fig8"], "Figure 8")]
    return "\n".join(parts)


def _extrapolation_section(summary: Mapping[str, Any], figures: Mapping[str, Any]) -> str:
    profile, cells = summary["profile"], summary["cells"]
    parts = [
        "<h2>Extrapolation: forward, backward, 2× and ½× against the simulator</h2>",
        '<p class="note">'
        + html.escape(EXTRAPOLATION_NOTE.format(**_hgnpp_notes(profile)))
        + "</p>",
    ]
    for system in summary["systems"]:
        if system not in cells:
            continue
        parts.append(f"<h3>{html.escape(system)}</h3>")
        parts.append(html_table(*extrapolation_rows(cells, system)))
    if "extrapolation" in figures:
        parts.append(_img(figures["extrapolation"], "extrapolation error curves"))
    for system, strips in figures.get("strips", {}).items():
        if strips:
            parts.append(f"<h3>{html.escape(system)}: truth and rollouts (clean test)</h3>")
            parts += [
                f"<figure>{_img(src, f'{system} {model} extrapolation')}"
                f"<figcaption>{html.escape(MODEL_LABELS[model])}</figcaption></figure>"
                for model, src in strips.items()
            ]
    return "\n".join(parts)


def _samples_section(summary: Mapping[str, Any]) -> str:
    parts = []
    for system in summary["systems"]:
        for regime in REGIMES:
            table = samples_rows(summary["cells"], system, regime)
            if table is not None:
                parts.append(f"<h3>{html.escape(system)}, models trained on {regime} data</h3>")
                parts.append(html_table(*table))
    if not parts:
        return ""
    return "\n".join(
        [
            "<h2>Samples read back as physics</h2>",
            '<p class="note">Prior samples of every generative model (hgn.evaluation.physics): '
            "body positions from colours, momenta by finite differences, the system's true H; "
            "energy spread = std/|mean| of that H along a sample (ground truth through the "
            "same pipeline beside it).</p>",
            *parts,
        ]
    )


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


def _datasets(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "system",
        "dataset",
        "path",
        "train",
        "test",
        "steps",
        "size",
        "noise",
        "layout",
        "note",
    ]
    rows = []
    for system, kinds in summary.get("datasets", {}).items():
        for kind, d in kinds.items():
            rows.append(
                [
                    system,
                    kind,
                    d["path"],
                    str(d["train"]),
                    str(d["test"]),
                    str(d["steps"]),
                    str(d["size"]),
                    str(d["noise"]),
                    d["layout"],
                    "profile's settings" if d["profile_settings"] else "NOT the profile's settings",
                ]
            )
    return header, rows


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
        bar=f"{BAR:g}",
        table1_noisy=html_table(*table1_rows(cells, systems, "noisy")),
        table1_clean=html_table(*table1_rows(cells, systems, "clean")),
        long_note=html.escape(LONG_NOTE.format(**_hgnpp_notes(profile))),
        table2_noisy=html_table(*table2_rows(cells, systems, "noisy")),
        table2_clean=html_table(*table2_rows(cells, systems, "clean")),
        training=html_table(*training_rows(cells, systems)),
        datasets=html_table(*_datasets(summary)),
        checks=_list(check_lines(summary["checks"])),
        figures=_figure_sections(figures),
        extrapolation=_extrapolation_section(summary, figures),
        samples=_samples_section(summary),
        animations=_animations(summary),
    )
    return write_text(out / "report.html", page)


def _markdown(out: Path, summary: Mapping[str, Any], profile: Profile, command: str) -> None:
    """table1.md, table2.md, extrapolation.md and samples.md."""
    cells, systems = summary["cells"], summary["systems"]
    # every command into a directory rebuilds its outputs from all the finished cells,
    # including those earlier commands (e.g. of other --systems) computed and left alone
    provenance = (
        f"Profile `{profile.name}`; last built by `{command}`, from every finished cell in "
        "this directory (cells finished by earlier commands are kept, not recomputed)."
    )
    made = f"{provenance} Ours: mean ± sd over sequences, ×1e4. — = cell not run yet.\n\n"
    checks_md = "\n".join(f"- {line}" for line in check_lines(summary["checks"]))
    notes = _hgnpp_notes(profile.settings())
    write_text(out / "table1.md", _table1_md(cells, systems, made, notes, checks_md))
    write_text(out / "table2.md", _table2_md(cells, systems, made))
    write_text(out / "extrapolation.md", _extrapolation_md(cells, systems, provenance, notes))
    write_text(out / "samples.md", _samples_md(cells, systems, provenance))


def _table1_md(
    cells: Mapping[str, Any],
    systems: Sequence[str],
    made: str,
    notes: Mapping[str, Any],
    checks_md: str,
) -> str:
    """The paper's Table 1 on noisy and on clean data, with the floor and excess columns
    and the bars the reproduction is held to."""
    return (
        "# Table 1: average pixel MSE over the unroll (train / test)\n\n"
        + made
        + f"## On {REGIME_TITLES['noisy']}\n\n"
        "[x] = published (paper, 64×64, 50,000 training sequences), where our copy of the "
        "paper has it. floor = the noise floor of the test set (what a model that knew the "
        "true states would score, hgn.evaluation.metrics.noise_floor); excess = test MSE − "
        "floor.\n\n"
        + markdown_table(*table1_rows(cells, systems, "noisy"))
        + f"\n## On {REGIME_TITLES['clean']}\n\n"
        + LONG_NOTE.format(**notes)
        + "\n\n"
        + markdown_table(*table1_rows(cells, systems, "clean"))
        + f"\n## The bars (HGN at least {BAR:g}× lower than the strongest HNN row)\n\n"
        + (checks_md or "(no system has both an HGN and an HNN cell yet)")
        + "\n"
    )


def _table2_md(cells: Mapping[str, Any], systems: Sequence[str], made: str) -> str:
    """The paper's Table 2: how constant each model's learned H stays along a rollout."""
    return (
        "# Table 2: the learned Hamiltonian along a test rollout\n\n"
        + made
        + "var = variance over time, ×1e4; rel. spread = std(H) / abs(mean H), its "
        "scale-free form.\n\n"
        + "".join(
            f"## On {REGIME_TITLES[regime]}\n\n"
            + markdown_table(*table2_rows(cells, systems, regime))
            + "\n"
            for regime in REGIMES
        )
    )


def _extrapolation_md(
    cells: Mapping[str, Any], systems: Sequence[str], provenance: str, notes: Mapping[str, Any]
) -> str:
    """The extrapolation protocol's table, one per system that has a finished cell."""
    parts = [
        "# Extrapolation (clean long test sequences)\n",
        f"{provenance}\n",
        EXTRAPOLATION_NOTE.format(**notes) + "\n",
    ]
    for system in systems:
        if system in cells:
            parts.append(f"## {system}\n\n" + markdown_table(*extrapolation_rows(cells, system)))
    return "\n".join(parts)


def _samples_md(cells: Mapping[str, Any], systems: Sequence[str], provenance: str) -> str:
    """The generative models' prior samples read back as physics, per system and regime
    (a regime none of whose models samples has no table)."""
    parts = [
        "# Samples read back as physics\n",
        f"{provenance} Prior samples of every generative "
        "model, read back with hgn.evaluation.physics (body positions from colours, "
        "momenta by finite differences, the system's true H); energy spread = std/|mean| "
        "of that H along a sample, median (p90) over samples; ratio 1 = as physical as the "
        "data; right bodies = frames in which exactly the right number of bodies is found.\n",
    ]
    for system in systems:
        for regime in REGIMES:
            table = samples_rows(cells, system, regime)
            if table is not None:
                parts.append(f"## {system}, trained on {regime} data\n\n" + markdown_table(*table))
    return "\n".join(parts)


def build_outputs(
    out: Path,
    profile: Profile,
    requested: Sequence[tuple[str, str]],
    command: str,
    datasets: Mapping[str, Any] | None = None,
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
        "datasets": dict(datasets or {}),
        "published_mse": PUBLISHED_MSE,
        "checks": checks(cells),
        "cells": cells,
    }
    write_json(out / "results.json", summary)
    _markdown(out, summary, profile, command)
    figures = draw_figures(out, cells, systems)
    write_report(out, summary, figures)
    return summary
