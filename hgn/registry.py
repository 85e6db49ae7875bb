"""One registry type for everything hgn looks up by a CLI name: the sequence models
(:data:`hgn.models.MODELS`), the density models (:data:`hgn.flows.FLOWS`), the dataset
presets (:data:`hgn.data.presets.PRESETS`), the training profiles
(:data:`hgn.training.config.PROFILES`), and the rows of the reproduction's tables and its
profiles (:data:`hgn.experiments.reproduce.ROWS`,
:data:`~hgn.experiments.reproduce.PROFILES`). One type, so that every unknown name is
refused alike: one line naming the kind, the closest name and the choices."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from hgn.utils import UserError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """An immutable mapping from CLI names to entries, in the order given.

    ``registry[name]`` raises ``KeyError`` like any mapping; :meth:`lookup` is the
    user-facing form, which raises a one-line :class:`UserError` instead. ``choices``
    replaces the list of names in that line for a registry too long to list in one line
    (the dataset presets: "`hgn data presets` lists them all").
    """

    def __init__(self, kind: str, entries: Mapping[str, T], choices: str | None = None) -> None:
        self.kind = kind
        self._entries = dict(entries)
        self._choices = choices or f"choose one of: {', '.join(self._entries)}"

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    def lookup(self, name: str) -> T:
        """The entry called ``name``, or one line naming the closest name and the choices."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"unknown {self.kind} {name!r}{hint}; {self._choices}") from None
