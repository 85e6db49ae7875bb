"""Everything a benchmark shows, rebuilt from its finished cells: ``results.json`` (every
number), ``benchmark.md`` (one table per metric family: rows models, columns datasets),
``report.html`` (the same, in the reproduction report's style), ``vpt.png`` and one
``strip_DATASET.png`` per dataset.

A cell shows a number, or why it has none: ``cannot: …`` where the model cannot do what
the protocol asks (run backwards, change speed, be trained on this data, sample),
``n/a: …`` where the data cannot support the metric (no true states, no simulator, a
light background for DeepMind's VPT), ``—`` where the cell has not run yet.
"""

from __future__ import annotations

import datetime
import html
import platform
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import torch

from hgn import __version__, plots
from hgn.evaluation.dm_vpt import CAVEAT, THRESHOLD
from hgn.experiments.benchmark import answer, tuning
from hgn.experiments.benchmark.cells import finished_cells
from hgn.experiments.benchmark.profiles import Settings
from hgn.experiments.reproduce.tables import html_table, markdown_table
from hgn.utils import write_json, write_text

TEMPLATE = "report.html.template"
MISSING = "—"
CANNOT = "`cannot`: a rollout the model cannot run (why: the last table)."
ROLLOUT_NAMES = answer.ROLLOUTS

Cells = Mapping[str, Mapping[str, Any]]


def why(value: Any) -> str | None:
    """``cannot: …`` / ``n/a: …`` for a recorded refusal, else None."""
    if not isinstance(value, Mapping):
        return None
    if "cannot" in value:
        return f"cannot: {value['cannot']}"
    if "skipped" in value:  # the extrapolation protocol's word for a rollout it refused
        return f"cannot: {value['skipped']}"
    if "n/a" in value:
        return f"n/a: {value['n/a']}"
    return None


def _num(value: Any, spec: str = ".3g") -> str:
    return MISSING if value is None else format(value, spec)


# ----------------------------------------------------------------------------- cells


def dm_vpt_cell(record: Mapping[str, Any]) -> str:
    v = record["dm_vpt"]
    reason = why(v)
    if reason:
        return reason
    if v.get("style") == "paper":
        return f"n/a: light background (measured {v['vpt']:.1f})"
    text = f"{v['vpt']:.1f} of {v['horizon']}"
    if v.get("backward_cannot"):
        return f"{text} (forward only; backward cannot: {v['backward_cannot']})"
    return f"{text} (fwd {v['forward_median']:.1f}, bwd {v['backward_median']:.1f})"


def symetric_cell(record: Mapping[str, Any]) -> str:
    v = record["symetric"]
    reason = why(v)
    if reason:
        return reason
    text = f"{v['score']:.2f} (R² {v['r2']:.3f}, sym {v['sym']:.3g}; {v['batches']} batch"
    text += "es" if v["batches"] != 1 else ""
    failed = [r for r in v["reasons"] if r]
    if failed:  # the most frequent failed gate, e.g. too few informative dimensions
        text += f"; {max(set(failed), key=failed.count)}"
    return text + ")"


def _rollout_parts(record: Mapping[str, Any], show: Callable[[Mapping[str, Any]], str]) -> str:
    ex = record["extrapolation"]
    reason = why(ex)
    if reason:
        return reason
    parts = []
    for key, label in ROLLOUT_NAMES.items():
        r = ex["rollouts"].get(key)
        if r is None:
            continue
        parts.append(f"{label} {'cannot' if why(r) else show(r)}")
    return " · ".join(parts)


def ratio_cell(record: Mapping[str, Any]) -> str:
    return _rollout_parts(record, lambda r: _num(r.get("ratio")))


def hgn_vpt_cell(record: Mapping[str, Any]) -> str:
    return _rollout_parts(record, lambda r: f"{r['vpt_mean']:.1f}/{r['steps']}")


def position_cell(record: Mapping[str, Any]) -> str:
    ex = record["extrapolation"]
    reason = why(ex)
    if reason:
        return reason
    forward = ex["rollouts"]["forward"]
    reason = why(forward)
    if reason:
        return reason
    if forward.get("position_rms") is None:
        return "n/a: no physical positions for this data"
    return f"{forward['position_rms']:.3g} (mean image {forward['position_rms_mean_image']:.3g})"


def samples_cell(record: Mapping[str, Any]) -> str:
    v = record["samples"]
    return why(v) or (
        f"spread ratio {_num(v['energy_spread_ratio'])}, matched {_num(v['energy_matched_ratio'])}"
        f", right bodies {_num(v['right_bodies'], '.2f')}"
    )


def training_cell(record: Mapping[str, Any]) -> str:
    if "cannot" in record:
        return f"cannot: {record['cannot']}"
    t = record["train"]
    return f"{t['steps']:,} steps in {t['seconds'] / 60:.1f} min ({t['stopped_by']})"


def capability_cell(record: Mapping[str, Any]) -> str:
    """What the model declares, with the reason its refusals gave once (the rollout
    tables only say ``cannot``)."""
    rollouts = record.get("extrapolation", {}).get("rollouts", {})
    words = []
    for declared, rollout, word in (
        ("can_run_backwards", "backward", "cannot run backwards"),
        ("can_change_speed", "2x", "cannot change speed"),
    ):
        if not record[declared]:
            reason = (rollouts.get(rollout) or {}).get("skipped")
            words.append(f"{word}: {reason}" if reason else word)
    return "; ".join(words) or "backwards and other speeds"


FAMILIES: list[tuple[str, str, str, Callable[[Mapping[str, Any]], str]]] = [
    (
        "dm_vpt",
        "DeepMind valid prediction time",
        f"Median over test sequences of the leading predicted frames whose squared error, "
        f"divided by the true frame's mean squared intensity, stays ≤ {THRESHOLD:g}; "
        "forward and backward averaged where the model runs backwards; scored only on "
        "frames after the window the model read (hgn.experiments.benchmark.metrics). "
        f"Caveat: {CAVEAT}",
        dm_vpt_cell,
    ),
    (
        "symetric",
        "SyMetric",
        "Score (1: the latent is a symplectic image of the true phase space), mean over "
        "batches of 5 test trajectories; R² of the polynomial map from latent to true "
        "state (gate > 0.9) and sym, its deviation from symplecticity (gate < 0.05). "
        "Latents from sliding windows; posterior variances measured from the model's own "
        "samples (hgn.experiments.benchmark.metrics).",
        symetric_cell,
    ),
    (
        "ratio",
        "Extrapolation: MSE / mean-image MSE (hgn's protocol)",
        "From the window at the size's start frame: forward to the last frame, backward to "
        "frame 0, at 2× and at ½× speed; 1 = no better than the average frame "
        f"(hgn.evaluation.extrapolate). {CANNOT}",
        ratio_cell,
    ),
    (
        "hgn_vpt",
        "Extrapolation: hgn's valid prediction time",
        "Mean predicted steps before a frame's MSE first exceeds ½ × that frame's "
        f"mean-image MSE / steps taken (hgn.evaluation.extrapolate). {CANNOT}",
        hgn_vpt_cell,
    ),
    (
        "position",
        "Extrapolation: position error (forward)",
        "RMS error of the body positions read back from the predicted frames against the "
        "true ones, world units (the mean image's beside it).",
        position_cell,
    ),
    (
        "samples",
        "Samples read back as physics",
        "Prior samples (hgn.evaluation.physics): energy spread of the read-back motion "
        "relative to the data's (1 = as physical as the data), the same matched by energy "
        "level, and the fraction of frames with the right number of bodies.",
        samples_cell,
    ),
    (
        "training",
        "Training done",
        "Steps in the cell's budget of minutes, counted by the run's clock (CPU time or "
        "wall time, in the heading).",
        training_cell,
    ),
    ("capabilities", "What each model can be asked", "Declared by the model.", capability_cell),
]


def table(
    cells: Cells, models: Sequence[str], columns: Sequence[str], cell: Callable
) -> tuple[list[str], list[list[str]]]:
    header = ["model", *columns]
    rows = [
        [m, *(cell(cells[c][m]) if m in cells.get(c, {}) else MISSING for c in columns)]
        for m in models
    ]
    return header, rows


# ----------------------------------------------------------------------------- figures


def figure_vpt(cells: Cells, models: Sequence[str], columns: Sequence[str], path: Path) -> bool:
    """Grouped bars: DeepMind VPT (top) and hgn's forward valid time (bottom) per model
    per dataset; cells without a number have no bar. False if there is nothing to draw."""
    plt = plots.pyplot()
    panels = [
        ("DeepMind VPT (frames, median; hatched: light background, lenient)", _dm_value),
        ("hgn's forward valid time (steps, mean)", _hgn_value),
    ]
    if not any(
        f(cells.get(c, {}).get(m)) is not None for _, f in panels for c in columns for m in models
    ):
        return False
    fig, axes = plt.subplots(
        2, 1, figsize=(max(6.0, 1.6 * len(columns) * max(1, len(models)) / 3), 6.4)
    )
    width = 0.8 / max(1, len(models))
    looks = _bar_looks(models, plt.get_cmap("tab10"))
    for ax, (title, value) in zip(axes, panels, strict=True):
        for i, model in enumerate(models):
            for j, col in enumerate(columns):
                record = cells.get(col, {}).get(model)
                v = value(record)
                if v is None:
                    continue
                light = (record or {}).get("dm_vpt", {}).get("style") == "paper"
                ax.bar(
                    j + (i - (len(models) - 1) / 2) * width,
                    v,
                    width,
                    **looks[model],
                    hatch="//" if light and value is _dm_value else None,
                    label=model
                    if j == 0 or not ax.get_legend_handles_labels()[1].count(model)
                    else None,
                )
        heights = [value(cells.get(c, {}).get(m)) for c in columns for m in models]
        ax.set_ylim(0, 1.05 * max([1.0, *(h for h in heights if h is not None)]))
        ax.set_xticks(range(len(columns)), columns, fontsize=8)
        ax.set_title(title, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[1].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ncol = min(7, len(unique))
    legend_rows = -(-len(unique) // ncol)
    fig.set_figheight(6.4 + 0.22 * legend_rows)
    fig.tight_layout(rect=(0, (0.1 + 0.22 * legend_rows) / fig.get_figheight(), 1, 1))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=ncol, fontsize=8)
    plots.save_figure(fig, path)
    return True


def _bar_looks(rows: Sequence[str], colours: Any) -> dict[str, dict[str, Any]]:
    """Each row's bar colour and opacity: one colour per model, so that a tuning sweep's
    35 rows (``model@variant``) stay readable, each variant of a model a lighter shade."""
    models = list(dict.fromkeys(tuning.split_row(r)[0] for r in rows))
    shades: dict[str, int] = {}
    looks = {}
    for row in rows:
        model = tuning.split_row(row)[0]
        shade = shades[model] = shades.get(model, -1) + 1
        colour = colours(models.index(model) % 10)
        looks[row] = {"color": colour, "alpha": 0.35 + 0.65 * 0.75**shade}
    return looks


def _dm_value(record: Mapping[str, Any] | None) -> float | None:
    if record is None or why(record.get("dm_vpt")):
        return None
    return record["dm_vpt"]["vpt"]


def _hgn_value(record: Mapping[str, Any] | None) -> float | None:
    if record is None or why(record.get("extrapolation")):
        return None
    forward = record["extrapolation"]["rollouts"]["forward"]
    return None if why(forward) else forward["vpt_mean"]


def figure_strip(out: Path, cells: Cells, models: Sequence[str], col: str, path: Path) -> bool:
    """Rows: the truth, then each model's forward prediction of the first test sequence,
    at the frames every model predicts (each starts after its own window), up to 12
    evenly spaced; False if there is nothing to draw."""
    found: list[tuple[str, int, np.ndarray, np.ndarray]] = []
    for model in models:
        record = cells.get(col, {}).get(model)
        file = (record or {}).get("files", {}).get("strip")
        if not file or not (out / file).is_file():
            continue
        with np.load(out / file) as arrays:
            found.append((model, int(arrays["first"]), arrays["truth"], arrays["forward"]))
    if not found:
        return False
    lo = max(first for _, first, _, _ in found)
    hi = min(first + len(pred) for _, first, _, pred in found)
    if hi <= lo:  # no frame every model predicts: each model's own first frames
        lo, hi = 0, min(len(pred) for _, _, _, pred in found)
        found = [(m, 0, truth, pred) for m, _, truth, pred in found]
    frames = np.unique(np.linspace(lo, hi - 1, min(12, hi - lo)).round().astype(int))
    _, first, truth, _ = found[0]
    rows = [("truth", truth[frames - first])]
    rows += [(model, pred[frames - first]) for model, first, _, pred in found]
    picture = plots.grid(np.stack([images for _, images in rows]))
    plt = plots.pyplot()
    h, w = picture.shape[:2]
    fig, ax = plt.subplots(figsize=(max(4.0, w / 40), max(1.5, h / 40)))
    ax.imshow(picture, interpolation="nearest")
    cell = (h - 1) / len(rows)
    ax.set_yticks([cell * (i + 0.5) for i in range(len(rows))], [name for name, _ in rows])
    ax.set_xticks([])
    shown = ", ".join(map(str, frames)) if lo else ", ".join(map(str, frames + 1))
    what = "frames" if lo else "steps after each model's window"
    ax.set_title(f"{col}: forward rollouts, {what} {shown}", fontsize=8)
    plots.save_figure(fig, path)
    return True


def strip_name(col: str) -> str:
    return "strip_" + re.sub(r"[^A-Za-z0-9_.-]", "_", col) + ".png"


# ----------------------------------------------------------------------------- outputs


def _template() -> Template:
    return Template(resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"))


def _borrowed(tag: str) -> str:
    """The reproduction report's ``<style>`` or ``<script>`` (its image check), read
    from its template: one look and one image check for both reports."""
    source = (
        resources.files("hgn.experiments.reproduce")
        .joinpath("report.html.template")
        .read_text(encoding="utf-8")
    )
    found = re.search(rf"<{tag}>.*?</{tag}>", source, re.S)
    return found.group(0) if found else ""


def _img(src: str, alt: str) -> str:
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" loading="eager">'


def build_outputs(
    out: Path,
    settings: Settings,
    requested: Sequence[tuple[str, str]],
    command: str,
    datasets: Mapping[str, Any],
    left_out: Sequence[str] = (),
) -> dict[str, Any]:
    """(Re)write results.json, benchmark.md, the figures and report.html from all the
    finished cells in ``out``; returns the summary recorded in results.json."""
    cells = finished_cells(out)
    columns = list(dict.fromkeys([c for c, _ in requested] + sorted(cells)))
    models = list(dict.fromkeys([m for _, m in requested] + [m for c in cells.values() for m in c]))
    summary = {
        "size": settings.size.settings(),
        "minutes_per_cell": settings.minutes,
        "clock": settings.clock,
        "tuned": dict(settings.tuned),
        "seed": settings.seed,
        "command": command,
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "machine": f"{platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s) per process",
        "datasets": dict(datasets),
        "models": models,
        "left_out_models": list(left_out),
        "columns": columns,
        "requested_cells": len(requested),
        "finished_cells": sum(1 for c, m in requested if m in cells.get(c, {})),
        "dm_vpt_caveat": CAVEAT,
        "cells": cells,
    }
    summary["answer"] = answer.answer(cells, models, columns, _priors(models))
    write_json(out / "results.json", summary)
    tables = {key: table(cells, models, columns, fn) for key, _, _, fn in FAMILIES}
    tables["held"], tables["verdict"] = answer.tables(summary["answer"], models, columns)
    figures: dict[str, Any] = {"strips": {}}
    if figure_vpt(cells, models, columns, out / "vpt.png"):
        figures["vpt"] = "vpt.png"
    for col in columns:
        name = strip_name(col)
        if figure_strip(out, cells, models, col, out / name):
            figures["strips"][col] = name
    _markdown(out, summary, tables)
    _html(out, summary, tables, figures)
    return summary


def _priors(rows: Sequence[str]) -> dict[str, str]:
    """Each row's declared prior (:attr:`SequenceModel.prior`); rows of models this
    version does not register have none."""
    from hgn.models import MODELS

    models = {row: tuning.split_row(row)[0] for row in rows}
    return {row: MODELS[m].cls.prior for row, m in models.items() if m in MODELS}


ANSWER = (
    ("verdict", "The answer: does the Hamiltonian prior win, tie or lose?", answer.VERDICT_RULE),
    ("held", "The answer: which rollouts each model holds", answer.HOLD_RULE),
)


def _heading(summary: Mapping[str, Any]) -> str:
    size = summary["size"]
    return (
        f"Profile `{size['name']}` ({size['description']}); {summary['minutes_per_cell']:g} "
        f"minutes of training per cell, {summary['clock']} time, on this machine "
        f"({summary['machine']}); seed {summary['seed']}."
        + _tuned_words(summary["tuned"])
        + f" Last built by `{summary['command']}` from every finished cell "
        "in this directory. — = not run yet."
        + (
            f" Default models not registered in this version, left out: "
            f"{', '.join(summary['left_out_models'])}."
            if summary.get("left_out_models")
            else ""
        )
    )


def _tuned_words(tuned: Mapping[str, str]) -> str:
    if not tuned:
        return ""
    chosen = ", ".join(f"{model} {variant}" for model, variant in tuned.items())
    return f" Each model trains with the variant its tuning sweep chose: {chosen}."


def _markdown(out: Path, summary: Mapping[str, Any], tables: Mapping[str, Any]) -> None:
    parts = [
        "# Benchmark: does the Hamiltonian prior matter?\n",
        _heading(summary) + "\n",
        "Rows: models; columns: datasets. `cannot: …` = the model cannot do what the "
        "protocol asks; `n/a: …` = the data cannot support the metric "
        "(docs/SCIENCE.md §7).\n",
    ]
    for key, title, rule in ANSWER:
        parts.append(f"## {title}\n\n{rule}\n\n" + markdown_table(*tables[key]))
    for key, title, note, _ in FAMILIES:
        parts.append(f"## {title}\n\n{note}\n\n" + markdown_table(*tables[key]))
    write_text(out / "benchmark.md", "\n".join(parts))


def _html(
    out: Path, summary: Mapping[str, Any], tables: Mapping[str, Any], figures: Mapping[str, Any]
) -> None:
    done, wanted = summary["finished_cells"], summary["requested_cells"]
    partial = (
        f'<p class="warn">Partial results: {done} of {wanted} requested cells are finished; '
        "rerun the same command to complete them.</p>"
        if done < wanted
        else ""
    )
    sections = []
    for key, title, rule in ANSWER:
        sections.append(f"<h2>{html.escape(title)}</h2>")
        sections.append(f'<p class="note">{html.escape(rule)}</p>')
        sections.append(html_table(*tables[key]))
    for key, title, note, _ in FAMILIES:
        sections.append(f"<h2>{html.escape(title)}</h2>")
        sections.append(f'<p class="note">{html.escape(note)}</p>')
        sections.append(html_table(*tables[key]))
        if key == "dm_vpt" and "vpt" in figures:
            sections.append(_img(figures["vpt"], "valid prediction time per model and dataset"))
    for col, src in figures["strips"].items():
        sections.append(f"<h3>{html.escape(col)}: truth and forward rollouts</h3>")
        sections.append(_img(src, f"{col} rollouts"))
    page = _template().substitute(
        style=_borrowed("style"),
        script=_borrowed("script"),
        size_name=html.escape(summary["size"]["name"]),
        heading=html.escape(_heading(summary)),
        generated=html.escape(summary["generated"]),
        version=html.escape(summary["version"]),
        partial=partial,
        caveat=html.escape(CAVEAT),
        sections="\n".join(sections),
        datasets=_dataset_table(summary["datasets"]),
    )
    write_text(out / "report.html", page)


def _dataset_table(datasets: Mapping[str, Any]) -> str:
    """The report's closing table: where each dataset came from and what it holds."""
    header = [
        "dataset",
        "kind",
        "path",
        "train",
        "test",
        "steps",
        "size",
        "dt",
        "true states",
        "note",
    ]
    rows = [
        [
            col,
            d["kind"],
            d["path"],
            str(d["train"]),
            str(d["test"]),
            str(d["steps"]),
            str(d["size"]),
            f"{d['dt']:g}",
            "yes" if d["has_states"] else "no",
            "size's settings" if d["size_settings"] else "used as it is",
        ]
        for col, d in datasets.items()
    ]
    return html_table(header, rows)
