"""List the functions under hgn/ longer than a screen (default 60 lines, counted as the
ast's ``end_lineno - lineno``), longest first, so that a split can be planned:
issue 22 asks that every function read in one screen.

Usage: python tools/long_functions.py [LIMIT] [ROOT]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def long_functions(root: Path, limit: int) -> list[tuple[int, str, str]]:
    """``(lines, path:line, qualified name)`` of every function over ``limit`` lines."""
    found: list[tuple[int, str, str]] = []

    def walk(node: ast.AST, path: Path, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (child.end_lineno or child.lineno) - child.lineno
                if lines > limit:
                    found.append((lines, f"{path}:{child.lineno}", prefix + child.name))
                walk(child, path, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, path, f"{prefix}{child.name}.")

    for path in sorted(root.rglob("*.py")):
        walk(ast.parse(path.read_text(), str(path)), path, "")
    return sorted(found, reverse=True)


if __name__ == "__main__":
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    for lines, where, name in long_functions(
        Path(sys.argv[2] if len(sys.argv) > 2 else "hgn"), limit
    ):
        print(f"{lines:4d}  {where:48s} {name}")
