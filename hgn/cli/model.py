"""`hgn` commands of the 'model' group (filled in by the module's owner)."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the top-level parser."""
