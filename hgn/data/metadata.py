"""What a dataset store's metadata must hold: every key a reader relies on, with its
type and range, so that a hand-edited or hostile ``zarr.json`` is refused in one line
when the store is opened, not met as a traceback, a hang or a read outside the store
later (:func:`hgn.data.store.read_meta` asks :func:`meta_problem`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

SPLITS = ("train", "test")

STATES = ("q", "p", "q_noisy", "p_noisy")

MAX_PARTS = 9999
"""The most parts (shard jobs) a store may be written in: the part markers' names hold
four digits, and a count beyond the data's blocks would only make empty shards."""

MAX_FRAMES = 1 << 24
"""The most frames a sequence may have (a window of ``--frames 2**63`` overflowed)."""


VALUE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
"""What the name of a per-trajectory value array may be: it becomes a path part, so a
store's metadata must not be able to point a reader outside the store."""


def _count(value: Any, low: int = 0, high: int = 1 << 40) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _constants(value: Any) -> bool:
    """Named numbers; the names are passed on as keyword arguments of ``get_system``, so
    none may be one of its own (``name``, ``noise``, ``style``...)."""
    return (
        isinstance(value, dict)
        and all(_number(v) for v in value.values())
        and all(VALUE_NAME.fullmatch(k) and k not in SYSTEM_ARGUMENTS for k in value)
    )


SYSTEM_ARGUMENTS = ("name", "noise", "style", "vary", "random_colours")
"""The keyword arguments of ``get_system`` that are not constants."""


def _variant(value: Any) -> bool:
    """The ``variant`` record of generated data: what ``system_of`` rebuilds it from."""
    if not isinstance(value, dict):
        return False
    vary = value.get("vary", {})
    ranges = isinstance(vary, dict) and all(
        isinstance(r, list) and len(r) == 2 and all(_number(x) for x in r) for r in vary.values()
    )
    return (
        ranges
        and isinstance(value.get("style", "paper"), str)
        and isinstance(value.get("random_colours", False), bool)
        and isinstance(value.get("hamiltonian", True), bool)
    )


COMMON_KEYS: dict[str, Callable[[Any], bool]] = {
    "size": lambda v: _count(v, 1, 4096),
    "steps": lambda v: _count(v, 1, MAX_FRAMES),
    "dt": lambda v: _number(v) and v != 0,
    "seed": lambda v: _count(v, 0, 1 << 64),
    "version": _text,
}
"""Every store's metadata keys and what each must be (absent keys are refused too)."""

OPTIONAL_KEYS: dict[str, Callable[[Any], bool]] = {
    "has_states": lambda v: isinstance(v, bool),
    "source": _text,
    "parts": lambda v: _count(v, 1, MAX_PARTS),
    "complete": lambda v: isinstance(v, bool),
    "fingerprint": _text,
    "imported_from": _text,
    "system": lambda v: v is None or _text(v),
}
"""Keys that may be absent, or must be as said when present."""

GENERATED_KEYS: dict[str, Callable[[Any], bool]] = {
    "system": _text,
    "constants": _constants,
    "noise": lambda v: _number(v) and v >= 0,
    "dof": lambda v: _count(v, 1, 1024),
    "integrator": lambda v: (
        isinstance(v, dict) and _text(v.get("method")) and _count(v.get("substeps"), 1, 1 << 30)
    ),
    "variant": _variant,
}
"""What generated data (``has_states``) also needs: the simulator is rebuilt from it."""


def meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a store's metadata, or None: the keys every reader relies on,
    with their types and ranges, so that a hand-edited or hostile ``zarr.json`` is one
    line here rather than a traceback, a hang or a read outside the store later."""
    splits = meta.get("splits")
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        return f"splits must map {' and '.join(SPLITS)} to their sizes"
    if not all(isinstance(v, dict) and _count(v.get("n"), 1) for v in splits.values()):
        return "each split needs a positive trajectory count n"
    checks = dict(COMMON_KEYS)
    generated = meta.get("has_states", True)  # stores from before imports lack the key
    checks.update(GENERATED_KEYS if generated is True else {"source": _text})
    for key, ok in checks.items():
        if key not in meta:
            return f"{key} is missing"
        if not ok(meta[key]):
            return f"{key} {meta[key]!r} is out of range or of the wrong type"
    for key, ok in OPTIONAL_KEYS.items():
        if key in meta and key not in checks and not ok(meta[key]):
            return f"{key} {meta[key]!r} is out of range or of the wrong type"
    values = meta.get("variant", {}).get("values", []) if generated is True else []
    if not isinstance(values, list) or not all(
        isinstance(v, str) and VALUE_NAME.fullmatch(v) and v not in (*STATES, "images")
        for v in values
    ):
        return f"variant values {values!r} are not array names"
    return None
