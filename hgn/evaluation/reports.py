"""The Markdown reports of ``hgn evaluate``: the paper's protocol (``metrics.md``) and
the extrapolation protocol (``extrapolate.md``)."""

from __future__ import annotations

import math
from typing import Any

from hgn.evaluation.extrapolate import CANNOT_RUN_BACKWARDS, NO_STATES_EXTRAPOLATE
from hgn.evaluation.metrics import SCALE
from hgn.evaluation.physics import samples_markdown

FILES = {
    "json": "extrapolate.json",
    "md": "extrapolate.md",
    "strip": "extrapolate-rollouts.png",
    "gif": "extrapolate-rollouts.gif",
    "errors": "extrapolate-errors.png",
    "energy": "extrapolate-energy.png",
}


def _pm(stats: dict[str, Any]) -> str:
    return f"{stats['mean_x1e4']:.2f} ± {stats['std_x1e4']:.2f}"


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """A human-readable summary of :func:`evaluate`'s metrics."""
    mismatch = metrics.get("data_mismatch")
    lines = [f"**Warning: {mismatch}.**", ""] if mismatch else []
    if metrics.get("skipped"):
        lines += [f"**Note: {metrics['skipped']}.**", ""]
    lines += _metrics_intro(metrics)
    lines += [_split_row(name, s) for name, s in metrics["splits"].items()]
    lines += ["", "Per-step MSE ×1e4 (mean over sequences):", ""]
    lines += _per_step_table(metrics)
    if any(s["vpt"] for s in metrics["splits"].values()):
        lines += [
            "",
            "Valid prediction time: predicted frames after the prefix before the per-frame "
            f"MSE first exceeds noise floor + {metrics['vpt_fraction']} × (the split's "
            "mean-image MSE − noise floor), both over the predicted frames"
            + (" (floor 0 without true states)." if metrics.get("skipped") else "."),
        ]
    if metrics.get("samples"):
        lines += ["", samples_markdown(metrics["samples"])]
    return "\n".join(lines) + "\n"


def _metrics_intro(metrics: dict[str, Any]) -> list[str]:
    """The title, what was evaluated and how each column is measured (a reader of the
    file alone must be able to tell), and the head of the per-split table."""
    first, steps = metrics.get("first_scored_frame", 0), metrics["unroll_steps"]
    return [
        f"# Evaluation of `{metrics['run']}`",
        "",
        f"Model `{metrics['model']}` after {metrics['trained_steps']} steps "
        f"({metrics['trained_seconds'] / 60:.1f} min) on {metrics['system']} "
        f"(`{metrics['data']}`). Protocol: {metrics['protocol']}; the state is inferred "
        f"from {metrics['context_frames']} frame(s) and rolled out "
        f"{metrics['unroll_steps']} steps.",
        "",
        f"Per-pixel MSE averaged over the predicted frames {first}…{steps} of each rollout, "
        "×1e4, mean ± std over sequences; ratio = model MSE / mean-image MSE; noise "
        "floor = MSE of the best possible prediction given the true clean states (the "
        "data's per-frame observation noise is unpredictable), as a ratio to the "
        "mean-image MSE (n/a without true states); energy variance = variance of the "
        "learned H along a rollout, ×1e4, averaged over sequences.",
        "",
        "| split | sequences | MSE ×1e4 | mean-image MSE ×1e4 | ratio | noise floor ratio "
        "| H variance ×1e4 | H std / abs(mean H) | valid prediction time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]


def _split_row(name: str, s: dict[str, Any]) -> str:
    """One split's row of the summary table (n/a where the protocol or data has none)."""
    vpt = "n/a (paper protocol)"
    if s["vpt"] is not None:
        v = s["vpt"]
        vpt = f"{v['steps_mean']:.1f} ± {v['steps_std']:.1f} of {v['of']} steps"
    e = s["energy"]
    floor = s["noise_floor_ratio"]
    floor_text = "n/a" if floor is None else f"{floor:.3f}"
    return (
        f"| {name} | {s['n']} | {_pm(s['mse'])} | {_pm(s['baseline_mse'])} "
        f"| {s['ratio_to_baseline']:.3f} | {floor_text} "
        f"| {e['var_mean_x1e4']:.3g} "
        f"| {e['relative_std']:.2e} | {vpt} |"
    )


def _per_step_table(metrics: dict[str, Any]) -> list[str]:
    """The model's and the mean image's MSE every 5 steps and at the last, one column
    each per split: where along the rollout the model stops beating the mean image."""
    steps = metrics["unroll_steps"]
    names = list(metrics["splits"])
    lines = [
        "| step | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{n} mean image" for n in names)
        + " |"
    ]
    lines.append("|---" * (1 + 2 * len(names)) + "|")
    for t in sorted({*range(0, steps + 1, 5), steps}):
        model_cols = [metrics["splits"][n]["mse"]["per_step_mean"][t] * SCALE for n in names]
        base_cols = [
            metrics["splits"][n]["baseline_mse"]["per_step_mean"][t] * SCALE for n in names
        ]
        lines.append(f"| {t} | " + " | ".join(f"{v:.2f}" for v in [*model_cols, *base_cols]) + " |")
    return lines


def _reversibility(rev: dict[str, Any]) -> str:
    """One sentence: the measured round trip, what the integrator is, the verdict."""
    parts = []
    if rev["how"] == CANNOT_RUN_BACKWARDS:
        return "the model cannot run backwards (its dynamics are one-way): not reversible."
    if rev["round_trip_relative_error"] is not None:
        parts.append(
            f"{rev['round_trip_steps']} steps forward then back miss the start by "
            f"{rev['round_trip_relative_error']:.1e} (relative)"
        )
    if rev["declared"] is False:
        parts.append(
            f"integrator `{rev['integrator']}` is not time-reversible for this H "
            "(Euler and RK4 never are, leapfrog only for a separable H)"
        )
    verdict = (
        "reversible."
        if rev["reversible"]
        else "**not reversible**: the backward row shows what the model does with −dt anyway."
    )
    return "; ".join(parts) + (" — " if parts else "") + verdict


def _vpt(r: dict[str, Any]) -> str:
    return (
        f"{r['vpt_mean']:.1f} ± {r['vpt_std']:.1f} of {r['steps']} "
        f"(all {r['steps']}: {100 * r['vpt_full_fraction']:.0f} %)"
    )


def _where(results: dict[str, Any]) -> str:
    """Where the rollouts start, in words."""
    inferred = results["start"] + results.get("state_offset", 0)
    back = results.get("rolled_back_steps", 0)
    if not back:
        return (
            f"its state describes frame {results['state_frame']}, and every rollout starts there."
        )
    return (
        f"its state describes frame {inferred} and is first taken {back} steps back with "
        f"the model's own dynamics to frame {results['state_frame']}, the window's first, "
        f"where every rollout starts (frames {results['state_frame'] + 1}–{inferred} were "
        "read by the encoder and are predicted anyway, as the paper's HGN predicts the "
        "frames it reads; `--align state` starts at the inferred state instead)."
    )


def _backward_window(results: dict[str, Any]) -> str:
    """The backward rollout's own window, in words ("" when it shares the others')."""
    if results.get("backward_start") is None:
        return ""
    first = results["rollouts"]["backward"]["frames"][0]
    return (
        f" The backward rollout reads a window of its own from frame "
        f"{results['backward_start']} (`--backward-start`) and rolls back from frame "
        f"{first:g} to frame 0."
    )


def _extrapolate_head(results: dict[str, Any]) -> list[str]:
    """The title, what was rolled out from where, and the table's header."""
    noise = "unknown" if results["noise"] is None else results["noise"]
    lines = [] if results.get("has_states", True) else [f"**Note: {NO_STATES_EXTRAPOLATE}.**", ""]
    lines += [
        f"# Extrapolation of `{results.get('run', 'model')}`",
        "",
        f"Model `{results.get('model', '?')}` after {results.get('trained_steps', '?')} steps "
        f"on {results['system']}; test data `{results.get('data', '?')}`: "
        f"{results['sequences']} sequences of {results['frames']} frames, observation "
        f"noise {noise}. The model reads {results['context_frames']} frame(s) "
        f"from frame {results['start']}; {_where(results)}{_backward_window(results)} Each "
        "predicted frame is compared with the simulator's frame at the same physical time.",
        "",
        f"Ratio = model MSE / mean-image MSE on the same frames (mean image: "
        f"{results.get('mean_image', 'the training frames')}); 1.0 is no better than "
        "drawing the average frame. Valid prediction time = predicted steps before a "
        f"frame's MSE first exceeds {results['threshold']}"
        + (
            f" (noise floor {results['noise_floor_mse_x1e4']:.2f} ×1e4)."
            if results["noise_floor_mse_x1e4"]
            else "."
        ),
        "",
        "| rollout | dt | steps | frames covered | MSE ×1e4 | mean image ×1e4 | ratio "
        "| valid prediction time (steps) | RMS position error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    return lines


def _rollout_rows(results: dict[str, Any]) -> list[str]:
    """One table row per rollout (a rollout the model cannot do says so)."""
    rev, unit, lines = results["reversible"], results.get("position_units"), []
    for name, r in results["rollouts"].items():
        label = r["label"]
        if "skipped" in r:
            lines.append(f"| {label} | {r['dt']:+.4g} | cannot | — | — | — | — | — | — |")
            continue
        if name == "backward" and not rev["reversible"]:
            label += " — integrator not reversible"
        pos = "n/a"
        if "position_rms" in r and unit:
            px = r["position_rms"] / unit["world_units_per_pixel"]
            no_skill = r["position_rms_mean_image"]
            pos = f"{r['position_rms']:.3f} ({px:.2f} px; mean image {no_skill:.3f})"
        a, b = r["frames"]
        lines.append(
            f"| {label} | {r['dt']:+.4g} | {r['steps']} | {a:g} → {b:g} "
            f"| {r['mse_x1e4']:.2f} | {r['mean_image_mse_x1e4']:.2f} | {r['ratio']:.3f} "
            f"| {_vpt(r)} | {pos} |"
        )
    return lines


def _energy_and_truth(results: dict[str, Any]) -> list[str]:
    """What the model could not do, the learned H's drift, reversibility, the truth."""
    lines: list[str] = []
    drift = results["energy_drift"]
    cannot_do = [
        f"{r['label']}: {r['skipped']}" for r in results["rollouts"].values() if "skipped" in r
    ]
    if cannot_do:
        lines += ["", "Rollouts the model cannot do (not scored): " + "; ".join(cannot_do) + "."]
    energy = (
        f"Learned H along a {drift['steps']}-step forward rollout ({drift['sequences']} "
        f"sequences): relative spread (std / abs(mean)) {drift['relative_spread_mean']:.2e} "
        f"mean, {drift['relative_spread_median']:.2e} median, "
        f"{drift['relative_spread_max']:.2e} max; largest deviation from the start "
        f"{drift['max_relative_deviation']:.2e} of its level."
    )
    if math.isnan(drift["relative_spread_max"]):  # NaN energies: a model without an H
        energy = "Learned H: none (the model has no Hamiltonian; the drift numbers are NaN)."
    lines += [
        "",
        energy,
        "",
        "Reversibility: " + _reversibility(results["reversible"]),
        "",
        f"Truth between stored frames: {results['truth']['between_frames']} (render check: "
        f"max difference {results['truth']['render_check_max_abs_uint8']}/255; simulation "
        f"check: {results['truth']['simulation_check_max_abs']}).",
    ]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The protocol's table and what it rests on, for people."""
    unit = results.get("position_units")
    lines = [*_extrapolate_head(results), *_rollout_rows(results), *_energy_and_truth(results)]
    if unit:
        lines += [
            "",
            "RMS position error: body positions read back from the predicted frames "
            "(colour-unmixed centroids, hgn.evaluation.physics) against the true states, in "
            f"world units (canvas ±{unit['canvas_half_width']:.3g}); 'mean image' is the "
            "error of the positions read from the average frame (no skill). The same "
            "recovery on the truth frames is off by "
            + ", ".join(
                f"{r['position_rms_truth_frames']:.3f} ({n})"
                for n, r in results["rollouts"].items()
                if "position_rms_truth_frames" in r
            )
            + " (the recovery's own error, with the data's noise).",
        ]
    lines += [
        "",
        f"Pictures of test sequence {results.get('shown', 0)} (the first batch's liveliest): "
        f"`{FILES['strip']}` (rows: truth, forward, backward, 2×, ½×; columns: "
        f"frames), `{FILES['gif']}` (columns named, one frame per stored frame; 2× "
        "holds each state for two frames; blank where a rollout does not "
        f"reach), `{FILES['errors']}`, "
        f"`{FILES['energy']}`.",
    ]
    if "oracle" in results:
        from hgn.evaluation.oracle import oracle_markdown

        lines += ["", oracle_markdown(results)]
    return "\n".join(lines) + "\n"
