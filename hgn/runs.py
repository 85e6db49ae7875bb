"""A run directory, and everything that reads one.

``hgn train`` and ``hgn flow train`` both write a run: a folder holding
``checkpoint.pt`` (weights-only: tensors, numbers, strings, lists and dicts), the config
as ``config.yaml`` and hgn's marker of who wrote it. The checkpoint holds::

    kind        "sequence" (hgn train) or "flow" (hgn flow train)
    step, seconds, budget_start
    config      the run's config: {"model": {"name": …, …}, "train": {…}} for a sequence
                model; {"model": {"kind": …}, "target": …, "train": …, …} for a flow
    state       {"model": state dict, "optimizer": …, "averaged": …} and what else
                the trainer resumes (the prioritised sampler's errors, …)
    trained_on  what the data was (:func:`trained_on`)

``state["averaged"]`` holds the moving average of the weights where the run kept one
(``train.ema``) as ``{"weights": plain state dict, "n_averaged": tensor}``.

This module opens runs for evaluation, sampling, the benchmark and the Python API, so
that none of them imports the trainer (:mod:`hgn.training`); flow runs are built by
:func:`hgn.flows.nhf.open_run` over :func:`read`; it also holds the record
of a run's data and its check against a dataset, which both the trainer (on resume) and
evaluation use. Checkpoints written by earlier versions (no ``kind``; the average under
torch's ``AveragedModel`` names; the optimiser spelled ``optimiser`` in flow runs) still
open.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hgn import data as hgn_data
from hgn.models import SequenceModel, get_model
from hgn.physics.systems import System
from hgn.utils import UserError, load_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint.pt"
"""The checkpoint's file name inside a run directory."""

METRICS_LOG = "metrics.jsonl"
"""The run's logged metrics, one JSON object per log step (``{"step": …, …}``):
readable without TensorBoard (``hgn info RUN`` shows the last line)."""

SEQUENCE, FLOW = "sequence", "flow"
"""The two kinds of run: ``hgn train`` and ``hgn flow train``."""

COMMANDS = {SEQUENCE: "hgn sample / evaluate / rollout", FLOW: "hgn flow sample / evaluate"}
"""What reads each kind of run, for the message a run given to the wrong command gets."""

LEGACY_AVERAGE_PREFIX = "module."
"""Where ``torch.optim.swa_utils.AveragedModel`` keeps the averaged parameters, as
checkpoints written before ``state["averaged"]`` saved them."""

TRAINED_ON_KEYS = ("system", "constants", "noise", "dt", "size")
"""What identifies a dataset's physics and pictures; evaluation compares these."""

SAME_DATA_KEYS = ("fingerprint", "seed", "steps", "n_train", "source")
"""What else ``--resume`` compares: the data itself, not only its kind. Another seed of
the same system, or another import of equal size, used to be trained on silently. The
content fingerprint (:func:`hgn.data.store.fingerprint`, or the hash of imported frames)
decides where both sides have one; runs and stores from before fingerprints compare
the seed, the length and the size."""


def checkpoint_path(run: str | os.PathLike) -> Path:
    """The checkpoint of a run directory, or ``run`` itself when it is a file."""
    run = Path(run)
    if run.is_dir():
        return run / CHECKPOINT
    if run.is_file():
        return run
    raise UserError(f"no checkpoint at {run}: the run directory does not exist")


def read(run: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A run's checkpoint (weights-only), with its ``kind`` filled in for runs written
    before it was recorded; one line where the file is not an hgn checkpoint."""
    path = checkpoint_path(run)
    if not path.exists():
        raise UserError(f"no checkpoint at {path}; train first or check the path")
    saved = load_checkpoint(path, map_location=device)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise UserError(f"{path} is not an hgn checkpoint (it holds no run config)")
    state = saved.get("state")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"{path} is not an hgn checkpoint (it holds no model weights)")
    saved.setdefault("kind", FLOW if "target" in saved["config"] else SEQUENCE)
    return saved


def expect_kind(saved: dict[str, Any], kind: str, run: str | os.PathLike) -> None:
    """Refuse a run of the other kind in one line naming the commands that read it."""
    if saved.get("kind") != kind:
        other = saved.get("kind")
        raise UserError(
            f"{run} is a {other} run, not a {kind} run; "
            f"use {COMMANDS.get(other, 'the command that wrote it')}"
        )


def averaged_state(model: nn.Module, state: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The model's state dict with the moving-average weights a checkpoint's ``state``
    kept (new: ``state["averaged"]["weights"]``; older: ``AveragedModel``'s names under
    ``state["ema"]``), buffers from the model's own; None where none was kept."""
    own = dict(state["model"])
    if isinstance(state.get("averaged"), dict):
        return {**own, **state["averaged"]["weights"]}
    if isinstance(state.get("ema"), dict):
        ema = state["ema"]
        prefix = LEGACY_AVERAGE_PREFIX
        return {**own, **{k: ema[prefix + k] for k, _ in model.named_parameters()}}
    return None


def open_sequence_model(
    run: str | os.PathLike, device: str | torch.device = "cpu", *, averaged: bool = True
) -> tuple[SequenceModel, dict[str, Any]]:
    """The trained model of an ``hgn train`` run in eval mode, and its checkpoint: with
    its moving-average weights where the run kept them (``train.ema``) unless
    ``averaged`` is False (the weights of the last step). Nothing is imported from the
    trainer, and no code is unpickled."""
    saved = read(run, device)
    expect_kind(saved, SEQUENCE, run)
    try:
        values = dict(saved["config"]["model"])
        model = get_model(values.pop("name", "hgn"))(values)
        state = averaged_state(model, saved["state"]) if averaged else None
        sampler = (saved.get("sampler") or {}).get("buffers") or {}
        model.load_state_dict({**(state or saved["state"]["model"]), **sampler})
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise UserError(
            f"checkpoint {checkpoint_path(run)} does not hold a model this version can read "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
        ) from None
    return model.to(device).eval(), saved


# ----------------------------------------------------------------------------- sampler


FIT_SEQUENCES = 1024
"""Training sequences whose posteriors :func:`fit_sampler` fits samples' z to."""


@torch.no_grad()
def fit_sampler(
    model: SequenceModel, split: hgn_data.Split, n: int = FIT_SEQUENCES, batch: int = 64
) -> int:
    """Fit the model's sampling distribution to the aggregate posterior of the first
    ``n`` sequences of ``split`` (its *training* data: the samples must not depend on
    the test set they are scored against), where the model has one to fit
    (``fit_aggregate_posterior``, HGN++) and it is not fitted yet. Reads only the frames
    the encoder reads. Returns the number of sequences fitted to (0: nothing done)."""
    if model.sampler_fitted:
        return 0
    if split.images.shape[-2] != model.image_size:
        return 0  # not the data it was trained on (regenerated at another size)
    k = model.context_frames
    device = next(model.parameters()).device
    n = min(n, len(split))

    def batches() -> Any:
        for lo in range(0, n, batch):
            x = torch.from_numpy(np.array(split.images[lo : min(n, lo + batch), :k]))
            yield x.permute(0, 1, 4, 2, 3).to(device)  # (B, k, 3, H, W) uint8

    return model.fit_aggregate_posterior(batches())


def training_split(saved: dict[str, Any]) -> hgn_data.Split | None:
    """The training split a checkpoint records (``saved["trained_on"]["path"]``), or
    None where it records none or the data is gone."""
    path = (saved.get("trained_on") or {}).get("path")
    if not path:
        return None
    try:
        return hgn_data.load(path, "train")
    except (UserError, OSError, KeyError, ValueError):
        return None


def fit_recorded(model: SequenceModel, saved: dict[str, Any]) -> int:
    """:func:`fit_sampler` on the training split the checkpoint ``saved`` records, where
    it is still there: the one way ``hgn.load``, ``hgn sample`` and ``hgn evaluate`` fit
    HGN++'s sampler, so that all three draw alike. Returns the sequences fitted to."""
    split = training_split(saved)
    return 0 if split is None else fit_sampler(model, split)


def store_sampler(run: str | os.PathLike, split: hgn_data.Split) -> int:
    """Fit the sampler of the trained model in ``run`` (with the weights evaluation
    uses) to ``split``, its training data, and keep it in the checkpoint, so that the
    run samples alike wherever it is copied and whether or not its data is still where
    it was. Returns the sequences fitted to (0: the model has no sampler to fit)."""
    model, saved = open_sequence_model(run)
    fitted = fit_sampler(model, split)
    if fitted:
        buffers = dict(model.named_buffers())
        saved["sampler"] = {
            "sequences": fitted,
            "from": model.sampling_from,
            "buffers": {name: buffers[name] for name in model.sampler_buffers},
        }  # beside the training state, which a resumed run continues unchanged
        save_checkpoint(checkpoint_path(run), saved)
    return fitted


# ----------------------------------------------------------------------------- data record


def trained_on(split: hgn_data.Split, path: str | os.PathLike) -> dict[str, Any]:
    """What a run records about its training data: the :data:`TRAINED_ON_KEYS`, the
    :data:`SAME_DATA_KEYS` (the content fingerprint among them) and where it was."""
    record = {key: split.meta.get(key) for key in (*TRAINED_ON_KEYS, *SAME_DATA_KEYS)}
    return {**record, "path": str(Path(path).resolve())}


def data_mismatch(
    record: dict[str, Any] | None, meta: dict[str, Any], *, same_data: bool = False
) -> str | None:
    """One sentence saying how ``meta`` differs from the data a run was trained on
    (``record``, see :func:`trained_on`), or None when it does not (or is not known).
    ``same_data`` (for ``--resume``) also asks for the very same data, by the
    :data:`SAME_DATA_KEYS` that both sides record; evaluating on other data of the same
    kind is normal and asks only for the :data:`TRAINED_ON_KEYS`."""
    if not record:
        return None

    def known(key: str, values: Any) -> Any:
        # datasets written before friction and offset existed hold neither: they are 0
        if key == "constants" and isinstance(values, dict):
            return {**System.shared, **values}
        return values

    diffs = [
        f"{key} {meta.get(key)!r} (trained on {record.get(key)!r})"
        for key in TRAINED_ON_KEYS
        if known(key, record.get(key)) != known(key, meta.get(key))
    ]
    if same_data and not diffs:
        keys = SAME_DATA_KEYS
        if record.get("fingerprint") and meta.get("fingerprint"):
            keys = ("fingerprint",)
        diffs = [
            f"{key} {meta.get(key)!r} (trained on {record.get(key)!r})"
            for key in keys
            if key in record and record[key] is not None and record[key] != meta.get(key)
        ]
    if not diffs:
        return None
    return "this data differs from the run's training data: " + ", ".join(diffs)


# ----------------------------------------------------------------------------- summary


def last_metrics(run: str | os.PathLike) -> dict[str, Any] | None:
    """The last line of a run's :data:`METRICS_LOG` (None: no log, or nothing logged)."""
    path = Path(run) / METRICS_LOG
    if not path.is_file():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            return entry
    return None


def describe(run: str | os.PathLike) -> list[str]:
    """``hgn info RUN``: what a run is, what it was trained on, how far, its last
    metrics; a line each, from the checkpoint and the metrics log alone."""
    saved = read(run)
    config, kind = saved["config"], saved["kind"]
    model = config.get("model") or {}
    name = model.get("name", "hgn") if kind == SEQUENCE else model.get("kind", "nhf")
    writer = "hgn train" if kind == SEQUENCE else "hgn flow train"
    lines = [f"{run}: a {kind} run ({writer}), model {name}"]
    steps, seconds = int(saved.get("step", 0)), float(saved.get("seconds", 0.0))
    lines.append(f"trained: {steps:,} steps in {seconds / 60:.1f} min")
    data = saved.get("trained_on") or {}
    if kind == SEQUENCE and data:
        size = data.get("size")
        lines.append(
            f"data: {data.get('system') or 'imported'}, {size}×{size}, dt {data.get('dt')}, "
            f"noise {data.get('noise')}, {data.get('steps')} steps per sequence, seed "
            f"{data.get('seed')} (at {data.get('path')})"
        )
    elif kind == FLOW:
        lines.append(f"target: {config.get('target')}")
    if saved.get("sampler"):
        lines.append(f"samples from: {saved['sampler']['from']}")
    last = last_metrics(run) if Path(run).is_dir() else None
    if last:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step")
        lines.append(f"last metrics (step {last.get('step')}): {shown}")
    return lines
