"""Validation of user-supplied configuration: typed dataclass configs from YAML/``--set``.

Configs come from YAML files and ``--set key=value``; a typo or a value of the wrong type
must fail loudly with the key's name instead of silently training something else.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from hgn.utils import UserError


def config_from_dict(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types.

    Configs come from YAML files and ``--set key=value``; a typo must fail loudly with
    the key's name (``where.key``) instead of silently training something else.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"unknown config key {where}.{unknown[0]}; valid keys: {', '.join(sorted(known))}"
        )
    return cls(**{k: _check_type(v, hints[k], f"{where}.{k}") for k, v in values.items()})


def _check_type(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` coerced to ``hint`` (int → float, tuple → list) or raise UserError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            if option is not type(None):
                try:
                    return _check_type(value, option, key)
                except UserError:
                    continue
    elif origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, list | tuple):
            return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise UserError(f"config key {key} must be {name}, got {value!r}")


def check_range(
    value: float | int | None,
    key: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    finite: bool = True,
) -> None:
    """Refuse a number outside its range with one line naming ``key``.

    Type checks alone let ``.nan``, ``.inf`` and negative rates through, and a NaN
    weight then fails thousands of steps later with misleading advice; every numeric
    config key states its range here instead. ``gt``/``ge``/``lt``/``le`` are the
    strict and inclusive bounds; ``finite`` (default) also refuses NaN and ±inf. A
    ``None`` value (an optional key left unset) passes.
    """
    if value is None:
        return
    bounds = [
        (gt, lambda v, b: v > b, f"> {gt}"),
        (ge, lambda v, b: v >= b, f"≥ {ge}"),
        (lt, lambda v, b: v < b, f"< {lt}"),
        (le, lambda v, b: v <= b, f"≤ {le}"),
    ]
    wanted = [text for bound, _, text in bounds if bound is not None]
    ok = not (finite and not math.isfinite(value)) and not math.isnan(value)
    ok = ok and all(test(value, bound) for bound, test, _ in bounds if bound is not None)
    if not ok:
        what = "a finite number" if finite else "a number"
        if isinstance(value, int) and not isinstance(value, bool):
            what = "an integer"
        if wanted:
            what += " " + " and ".join(wanted)
        raise UserError(f"{key} must be {what}, got {value!r}")
