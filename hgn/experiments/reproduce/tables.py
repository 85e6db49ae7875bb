"""The tables from finished cells: Table 1 (pixel MSE; on the paper's noisy data with
the noise floor and the excess over it, and on clean data), Table 2 (energy variance and
its relative spread), the extrapolation table, the sample-physics table, the training
actually done, and the two bars and other acceptance checks; as Markdown and as HTML.
Values are shown ×1e4 like the paper's, beside its numbers."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hgn.evaluation.metrics import SCALE
from hgn.experiments.reproduce.profiles import (
    HNN_MODELS,
    LONG_LABEL,
    LONG_MODELS,
    LONG_RUN,
    MODEL_LABELS,
    MODEL_ORDER,
    REGIMES,
    SYSTEM_ORDER,
)

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
(docs/SCIENCE.md §5): the HNN, HNN Conv and no-f_ψ rows and Table 2 were lost with the tables'
layout; the paper says HNN was an order of magnitude worse on all four systems."""

Cells = Mapping[str, Mapping[str, Any]]
"""Finished cells as ``{system: {model: result}}`` (see ``cells.finished_cells``)."""

BAR = 5.0
"""Both bars of the comparison: HGN's test MSE (clean data) or its excess over the noise
floor (noisy data) at least this many times lower than the HNN baseline's."""

FLOOR_BIAS = 1 / 32
"""Relative uncertainty of a noise-floor estimate: :func:`hgn.evaluation.metrics.
noise_floor` averages 32 noisy renders, which biases it up by about 1/32 of itself."""

ROLLOUT_NAMES = {"forward": "fwd", "backward": "bwd", "2x": "2×", "half": "½×"}
"""The extrapolation protocol's rollouts (hgn.evaluation.extrapolate.ROLLOUTS), short."""

HGNPP_TARGETS = {
    "mass-spring": ({"forward": 0.2, "backward": 0.2, "2x": 0.2, "half": 0.2}, True),
    "pendulum": ({"forward": 0.2, "backward": 0.2, "2x": 0.2, "half": 0.2}, True),
    "two-body": ({"forward": 0.3, "backward": 0.3}, False),
}
"""The learned-dynamics issue's targets for HGN++ on clean data: the largest ratio to
the mean image of each rollout, and whether the forward rollout must stay valid to its
last step."""


def fmt(value: float | None) -> str:
    """A number for a table: two decimals, or scientific where that would hide it."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value != 0 and (abs(value) >= 1000 or abs(value) < 0.01):
        return f"{value:.2e}"
    return f"{value:.2f}"


def _scaled(value: float | None) -> str:
    """A number ×1e4 for a table; n/a where it could not be measured (the noise floor
    of imported data, which has no states)."""
    return "n/a" if value is None else fmt(value * SCALE)


def _pm(stats: Mapping[str, Any] | None, key: str) -> str:
    """``mean ± sd`` of ``key`` ×1e4, or — for a missing cell."""
    if stats is None:
        return "—"
    return f"{fmt(stats[key] * SCALE)} ± {fmt(stats[key + '_std'] * SCALE)}"


def _paper(cells: Cells, system: str, model: str, regime: str) -> Mapping[str, Any] | None:
    record = cells.get(system, {}).get(model)
    return None if record is None else record["paper"].get(regime)


def _rows(regime: str) -> list[tuple[str, str, str]]:
    """``(model, run, label)`` of each row of a Table 1–2 on ``regime``'s data: every
    model's run on that data and, on clean data, HGN++'s own long-data run (its
    paper-protocol numbers on the same clean 30-step test set) after them."""
    rows = [(model, regime, MODEL_LABELS[model]) for model in MODEL_ORDER]
    if regime == "clean":
        rows += [(model, LONG_RUN, LONG_LABEL) for model in LONG_MODELS]
    return rows


def _reference(cells: Cells, system: str, regime: str) -> Mapping[str, Any] | None:
    """Any finished cell's paper numbers of ``system``: the data's own numbers (mean image,
    noise floor) are the same in every cell."""
    record = next(iter(cells.get(system, {}).values()), None)
    return None if record is None else record["paper"][regime]


def table1_rows(
    cells: Cells, systems: Sequence[str], regime: str
) -> tuple[list[str], list[list[str]]]:
    """Table 1 on one regime's data: train and test MSE (×1e4, mean ± sd over
    sequences; [x] = published, noisy data only) and, on noisy data, the test set's
    noise floor and the excess of the test MSE over it."""
    noisy = regime == "noisy"
    columns = ("train", "test", "floor", "excess") if noisy else ("train", "test")
    header = ["model"] + [f"{s} {c}" for s in systems for c in columns]
    rows = []
    for model, run, label in _rows(regime):
        row = [label]
        for system in systems:
            stats = _paper(cells, system, model, run)
            published = PUBLISHED_MSE.get(model, {}).get(system) if noisy else None
            for i, split in enumerate(("train", "test")):
                text = _pm(None if stats is None else stats[split], "mse")
                row.append(text if published is None else f"{text} [{published[i]:.2f}]")
            if noisy:
                test = None if stats is None else stats["test"]
                row.append("—" if test is None else _scaled(test["noise_floor_mse"]))
                row.append("—" if test is None else _scaled(test["excess"]))
        rows.append(row)
    row = ["Mean image (reference)"]
    for system in systems:
        ref = _reference(cells, system, regime)
        for split in ("train", "test"):
            row.append("—" if ref is None else fmt(ref[split]["mean_image_mse"] * SCALE))
        if noisy:
            test = None if ref is None else ref["test"]
            floor = None if test is None else test["noise_floor_mse"]
            row.append("—" if test is None else _scaled(floor))
            excess = None if floor is None else test["mean_image_mse"] - floor
            row.append("—" if test is None else _scaled(excess))
    rows.append(row)
    return header, rows


def table2_rows(
    cells: Cells, systems: Sequence[str], regime: str
) -> tuple[list[str], list[list[str]]]:
    """Table 2 on one regime's data: the variance of the learned H along a test rollout
    (×1e4, mean ± sd over sequences) and its scale-free relative spread std(H)/|mean H|
    (a learned H's scale is arbitrary, so the variance alone can flatter any model)."""
    header = ["model"] + [f"{s} {c}" for s in systems for c in ("var ×1e4", "rel. spread")]
    rows = []
    for model, run, label in _rows(regime):
        row = [label]
        for system in systems:
            stats = _paper(cells, system, model, run)
            test = None if stats is None else stats["test"]
            row.append(_pm(test, "energy_var"))
            row.append("—" if test is None else f"{test['energy_relative_std']:.2e}")
        rows.append(row)
    return header, rows


def training_rows(cells: Cells, systems: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Optimisation steps each run actually made, and what stopped it (the step budget
    or the wall-clock cap): models are compared at equal time, not equal steps."""
    header = ["model"] + [f"{s} {regime}" for s in systems for regime in REGIMES]
    rows = []
    for model in MODEL_ORDER:
        row = [MODEL_LABELS[model]]
        for system in systems:
            trained = (cells.get(system, {}).get(model) or {}).get("train", {})
            for regime in REGIMES:
                info = trained.get(regime)
                row.append("—" if info is None else f"{info['steps']} ({info['stopped_by']})")
        rows.append(row)
    for model in LONG_MODELS:  # its own run is on clean long data only
        row = [LONG_LABEL]
        for system in systems:
            info = (cells.get(system, {}).get(model) or {}).get("train", {}).get(LONG_RUN)
            for regime in REGIMES:
                if regime != "clean":
                    row.append("no run")
                else:
                    row.append("—" if info is None else f"{info['steps']} ({info['stopped_by']})")
        rows.append(row)
    return header, rows


def _vpt(r: Mapping[str, Any]) -> str:
    vpt = r["vpt_mean"]
    return f"{'n/a' if vpt is None else f'{vpt:.1f}'}/{r['steps']}"


def _sci(value: float | None) -> str:
    """A number in scientific notation, or 'not finite' where the cell recorded none: an
    Euler rollout's learned H can overflow over 1,000 steps, and the cell keeps that as a
    missing value (:func:`hgn.experiments.reproduce.cells._finite_or_none`)."""
    return "not finite" if value is None else f"{value:.1e}"


def extrapolation_label(record: Mapping[str, Any], model: str) -> str:
    """A model's name in the extrapolation table and figure: HGN++'s says when its
    numbers come from its own long-data run rather than the 30-step one."""
    return LONG_LABEL if record.get("extrapolation_run") == LONG_RUN else MODEL_LABELS[model]


def extrapolation_rows(cells: Cells, system: str) -> tuple[list[str], list[list[str]]]:
    """The extrapolation protocol on ``system``'s clean long test set: per model, each
    rollout's MSE as a fraction of the mean image's on the same frames, its valid
    prediction time (mean steps / steps taken), the learned H's drift and whether the
    model can run backwards (an irreversible one still has its backward numbers, marked)."""
    names = list(ROLLOUT_NAMES.values())
    header = (
        ["model"]
        + [f"{n} ratio" for n in names]
        + [f"{n} VPT" for n in names]
        + ["H drift (rel. spread)", "reversible"]
    )
    rows = []
    for model in MODEL_ORDER:
        record = cells.get(system, {}).get(model)
        if record is None:
            rows.append([MODEL_LABELS[model]] + ["—"] * (len(header) - 1))
            continue
        ex = record["extrapolation"]
        rev = ex["reversible"]
        row = [extrapolation_label(record, model)]
        for name in ROLLOUT_NAMES:
            text = fmt(ex["rollouts"][name]["ratio"])
            if name == "backward" and not rev["reversible"]:
                text += " (integrator not reversible)"
            row.append(text)
        row += [_vpt(ex["rollouts"][name]) for name in ROLLOUT_NAMES]
        row.append(_sci(ex["energy_drift"]["relative_spread_mean"]))
        trip = rev.get("round_trip_relative_error")
        how = "" if trip is None else f" (round trip {trip:.0e})"
        row.append(("yes" if rev["reversible"] else "no") + how)
        rows.append(row)
    return header, rows


def samples_rows(
    cells: Cells, system: str, regime: str
) -> tuple[list[str], list[list[str]]] | None:
    """Sample physics (hgn.evaluation.physics.score_samples) of every generative model on
    ``system``: the true-energy spread of the motion read back from prior samples (median
    and p90), its ratio to ground truth's (1 = as physical as the data), and the
    fraction of frames with exactly the right number of bodies; None without any."""
    header = ["model", "energy spread median (p90)", "ratio to ground truth", "right bodies"]
    rows: list[list[str]] = []
    truth = None
    for model in MODEL_ORDER:
        record = cells.get(system, {}).get(model)
        run = regime
        if regime == "clean" and record is not None and LONG_RUN in record["samples"]:
            run = LONG_RUN  # HGN++'s samples: its own long-data run's
        result = None if record is None else record["samples"][run]
        if result is None or "skipped" in result:
            continue
        s = result["samples"]
        truth = result["ground_truth"]
        rows.append(
            [
                LONG_LABEL if run == LONG_RUN else MODEL_LABELS[model],
                f"{fmt(s['energy_spread_median'])} ({fmt(s['energy_spread_p90'])})",
                fmt(result["energy_spread_ratio"]),
                f"{100 * s['right_body_count_fraction']:.1f} %"
                if s["right_body_count_fraction"] is not None
                else "n/a",
            ]
        )
    if truth is None:
        return None
    rows.append(
        [
            "ground truth (test)",
            f"{fmt(truth['energy_spread_median'])} ({fmt(truth['energy_spread_p90'])})",
            "1.00",
            f"{100 * truth['right_body_count_fraction']:.1f} %",
        ]
    )
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
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


def _bar(row: Mapping[str, Any], regime: str) -> dict[str, Any] | None:
    """One system's bar on one regime: HGN's test number against the strongest HNN row
    (the lowest test number among the baselines run, so that a better baseline can only
    make the bar harder), with every baseline's ratio beside it.

    Clean data: test MSE. Noisy data: excess over the noise floor, where the floor leaves
    room: the excess HGN must reach (the baseline's / :data:`BAR`) has to exceed what the
    excess can be measured to, twice HGN's standard error plus the floor's own bias
    (:data:`FLOOR_BIAS`). HGN's excess is counted as at least that resolution, so a
    ratio from an excess below it is a lower bound."""
    baselines = [m for m in HNN_MODELS if m in row]
    if "hgn" not in row or not baselines:
        return None
    key = "mse" if regime == "clean" else "excess"
    hgn = row["hgn"]["paper"][regime]["test"]
    tests = {m: row[m]["paper"][regime]["test"] for m in baselines}
    if hgn[key] is None or any(t[key] is None for t in tests.values()):
        return None  # no noise floor (imported data): no excess to compare
    best = min(baselines, key=lambda m: tests[m][key])
    resolution = 0.0
    if regime == "noisy":
        n = max(int(hgn.get("sequences", 1)), 1)
        resolution = 2 * hgn["mse_std"] / math.sqrt(n) + FLOOR_BIAS * hgn["noise_floor_mse"]
    denominator = max(hgn[key], resolution, 1e-12)
    ratios = {m: tests[m][key] / denominator for m in baselines}
    ratio = ratios[best]
    entry: dict[str, Any] = {
        "measure": "test MSE" if regime == "clean" else "test excess over the noise floor",
        "hgn": hgn[key],
        "baseline": best,
        "baseline_value": tests[best][key],
        "ratio": ratio,
        "ratios": ratios,
        "target": BAR,
        "applies": True,
        "lower_bound": hgn[key] < resolution,
    }
    if regime == "noisy":
        entry["resolution"] = resolution
        entry["applies"] = tests[best][key] / BAR > resolution
    entry["passed"] = (ratio >= BAR) if entry["applies"] else None
    entry["missed_by"] = None if entry["passed"] is not False else BAR / max(ratio, 1e-12)
    return entry


def bar_text(system: str, regime: str, entry: Mapping[str, Any]) -> str:
    """One line: the bar's verdict, and by how much it was missed."""
    head = (
        f"{system}, {regime} data: {MODEL_LABELS[entry['baseline']]} / HGN "
        f"{entry['measure']} = {'≥ ' if entry['lower_bound'] else ''}{entry['ratio']:.1f}×"
    )
    others = ", ".join(
        f"{MODEL_LABELS[m]} {r:.1f}×" for m, r in entry["ratios"].items() if m != entry["baseline"]
    )
    tail = f" (other baselines: {others})" if others else ""
    if entry["passed"] is None:
        return (
            f"{head} — bar does not apply: the floor leaves no room (the excess HGN would "
            f"need, {fmt(entry['baseline_value'] / BAR * SCALE)} ×1e4, is below what it can "
            f"be measured to, {fmt(entry['resolution'] * SCALE)} ×1e4){tail}"
        )
    if entry["passed"]:
        return f"{head} ≥ {BAR:g}×: passed{tail}"
    return f"{head} < {BAR:g}×: MISSED by a factor {entry['missed_by']:.1f}{tail}"


def _hgnpp_target(row: Mapping[str, Any], system: str) -> dict[str, Any] | None:
    """HGN++'s extrapolation row against the learned-dynamics issue's targets."""
    if "hgn++" not in row or system not in HGNPP_TARGETS:
        return None
    limits, full = HGNPP_TARGETS[system]
    rollouts = row["hgn++"]["extrapolation"]["rollouts"]
    ratios = {name: rollouts[name]["ratio"] for name in limits}
    misses = {n: r / limits[n] for n, r in ratios.items() if r > limits[n]}
    forward = rollouts["forward"]
    vpt_ok = (not full) or forward["vpt_mean"] >= forward["steps"]
    return {
        "limits": limits,
        "ratios": ratios,
        "forward_vpt": forward["vpt_mean"],
        "forward_steps": forward["steps"],
        "vpt_required": full,
        "missed_by": misses,
        "passed": not misses and vpt_ok,
    }


def checks(cells: Cells) -> dict[str, dict[str, Any]]:
    """The issue's acceptance figures per system, where the cells they need exist.

    ``bars``: the clean and noisy bars (:func:`_bar`). ``leapfrog_vs_euler``: HGN's and
    HGN Euler's test energy variance on the paper's data (target: leapfrog lower), with
    the scale-free std(H)/|mean H| beside it. ``hgnpp_extrapolation``: HGN++'s
    extrapolation row against the learned-dynamics issue's targets.
    """
    out: dict[str, dict[str, Any]] = {
        "bars": {regime: {} for regime in REGIMES},
        "leapfrog_vs_euler": {},
        "hgnpp_extrapolation": {},
    }
    for system in [s for s in SYSTEM_ORDER if s in cells] + sorted(set(cells) - set(SYSTEM_ORDER)):
        row = cells[system]
        for regime in REGIMES:
            entry = _bar(row, regime)
            if entry is not None:
                out["bars"][regime][system] = entry
        if "hgn" in row and "hgn-euler" in row:
            lf, eu = (
                row["hgn"]["paper"]["noisy"]["test"],
                row["hgn-euler"]["paper"]["noisy"]["test"],
            )
            out["leapfrog_vs_euler"][system] = {
                "leapfrog": lf["energy_var"],
                "euler": eu["energy_var"],
                "leapfrog_relative_std": lf.get("energy_relative_std"),
                "euler_relative_std": eu.get("energy_relative_std"),
                "passed": lf["energy_var"] < eu["energy_var"],
            }
        target = _hgnpp_target(row, system)
        if target is not None:
            out["hgnpp_extrapolation"][system] = target
    return out


def check_lines(summary_checks: Mapping[str, Any]) -> list[str]:
    """Every acceptance check as one line of text (for table1.md and report.html)."""
    lines = []
    for regime in REGIMES:
        for system, entry in summary_checks["bars"][regime].items():
            lines.append(bar_text(system, regime, entry))
    for system, check in summary_checks["leapfrog_vs_euler"].items():
        lf, eu = check.get("leapfrog_relative_std"), check.get("euler_relative_std")
        relative = (
            ""
            if lf is None or eu is None
            else f"; std(H)/|mean H|: leapfrog {lf:.2e}, Euler {eu:.2e}"
        )
        lines.append(
            f"{system}: energy variance (noisy data) leapfrog {fmt(check['leapfrog'] * SCALE)}"
            f" vs Euler {fmt(check['euler'] * SCALE)} ×1e4 "
            f"({'leapfrog lower' if check['passed'] else 'leapfrog NOT lower'}){relative}"
        )
    for system, check in summary_checks["hgnpp_extrapolation"].items():
        ratios = ", ".join(
            f"{ROLLOUT_NAMES[n]} {r:.2f} (≤ {check['limits'][n]:g})"
            for n, r in check["ratios"].items()
        )
        vpt = (
            f"; forward VPT {check['forward_vpt']:.1f} of {check['forward_steps']} (all required)"
            if check["vpt_required"]
            else ""
        )
        verdict = "met" if check["passed"] else "MISSED"
        missed = ", ".join(f"{ROLLOUT_NAMES[n]} by {f:.1f}×" for n, f in check["missed_by"].items())
        lines.append(
            f"{system}: HGN++ extrapolation targets {verdict}: {ratios}{vpt}"
            + (f" — missed {missed}" if missed else "")
        )
    return lines
