"""The one error type of user mistakes, in a module that imports nothing, so that the
command line can answer ``hgn --version`` or a usage mistake without loading torch."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input. The CLI prints it as one line and exits non-zero."""
