"""hgn.runs: opening a run of either kind, old checkpoints included, without the trainer;
and the package's layout: its import graph (no cycles; evaluation never imports training)
and the README's map of it."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hgn
from hgn import runs
from hgn.flows.nhf import open_run
from hgn.utils import UserError, save_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY = json.loads((FIXTURES / "legacy-v0.1.json").read_text())
PACKAGE = Path(hgn.__file__).parent


def test_a_sequence_checkpoint_of_version_0_1_opens_with_the_same_outputs() -> None:
    """Written by the code before hgn.runs (averaged weights under AveragedModel's names,
    no ``kind``): it opens, averaged and not, and predicts exactly what it did then."""
    path = FIXTURES / "legacy-v0.1-sequence.pt"
    torch.manual_seed(0)
    x = torch.rand(2, 7, 3, 16, 16)
    for averaged, key in ((True, "sequence_images_sum"), (False, "sequence_last_images_sum")):
        model, saved = runs.open_sequence_model(path, averaged=averaged)
        assert saved["kind"] == runs.SEQUENCE
        with torch.no_grad():
            out = model.predict(x, 6)
        assert float(out["images"].double().sum()) == pytest.approx(LEGACY[key], rel=1e-6)
    with torch.no_grad():
        energy = runs.open_sequence_model(path)[0].predict(x, 6)["energy"]
    torch.testing.assert_close(energy.double(), torch.tensor(LEGACY["sequence_energy"]).double())


def test_a_flow_checkpoint_of_version_0_1_opens_with_the_same_densities() -> None:
    """Written with the optimiser's state spelled ``optimiser`` and no ``kind``."""
    model, saved = open_run(FIXTURES / "legacy-v0.1-flow.pt")
    assert saved["kind"] == runs.FLOW
    torch.manual_seed(0)
    with torch.no_grad():
        log_prob = model.log_prob(torch.tensor(LEGACY["flow_points"]), n_importance=16)
    torch.testing.assert_close(log_prob.double(), torch.tensor(LEGACY["flow_log_prob"]).double())


def test_a_run_given_to_the_wrong_command_says_which_command_reads_it() -> None:
    with pytest.raises(UserError, match=r"is a flow run.*hgn flow sample"):
        runs.open_sequence_model(FIXTURES / "legacy-v0.1-flow.pt")
    with pytest.raises(UserError, match=r"is a sequence run.*hgn sample"):
        open_run(FIXTURES / "legacy-v0.1-sequence.pt")


@pytest.mark.parametrize(
    "payload",
    [{"config": {}}, {"config": {"model": {}}, "state": {}}, {"step": 1}],
    ids=["no-state", "no-weights", "no-config"],
)
def test_a_checkpoint_that_is_not_hgns_is_refused_in_one_line(
    tmp_path: Path, payload: dict
) -> None:
    save_checkpoint(tmp_path / runs.CHECKPOINT, payload)
    with pytest.raises(UserError, match="not an hgn checkpoint"):
        runs.open_sequence_model(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        runs.read(tmp_path / "missing")


@pytest.mark.slow
def test_opening_a_run_imports_nothing_from_training() -> None:
    """Evaluation, the run module and the Python API's ``hgn.load`` stand without the
    trainer (a fresh interpreter: this process has imported everything already)."""
    code = (
        "import sys, hgn, hgn.runs, hgn.evaluation.evaluate, hgn.evaluation.extrapolate\n"
        "hgn.runs.open_sequence_model(sys.argv[1])\n"
        "bad = sorted(m for m in sys.modules if m.startswith('hgn.training'))\n"
        "assert not bad, bad\n"
    )
    path = str(FIXTURES / "legacy-v0.1-sequence.pt")
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _module_imports() -> dict[str, set[str]]:
    """hgn's modules and the hgn modules each imports at module level (not inside
    functions, where an import is deliberately lazy)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{alias.name}" for alias in node.names}
                # ``from package import submodule`` needs the submodules, not the package
                found |= subs if all(_is_module(m) for m in subs) else {node.module}
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m.startswith("hgn")}
    return {name: {m for m in deps if m in graph} for name, deps in graph.items()}


def test_the_package_has_no_import_cycles() -> None:
    """A cycle among module-level imports (a package importing its own submodules in
    its ``__init__`` is not one)."""
    graph = _module_imports()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = [
        (a, b)
        for a, deps in graph.items()
        for b in deps
        if not b.startswith(a + ".") and not a.startswith(b + ".") and reaches(b, a)
    ]
    assert not cycles, cycles[:5]
    assert not any(m.startswith("hgn.training") for m in graph["hgn.evaluation.evaluate"])


def test_the_readme_layout_table_names_every_module() -> None:
    """The README's "Layout" table is a newcomer's map of the package (issue 22), so a
    new module must be added to it: each module is named there, alone, after a
    neighbour in its row (``pictures.py`` after ``hgn/evaluation/reports.py``), or as
    its folder (``hgn/cli/``); and nothing it names is gone."""
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for row in (line for line in table.splitlines() if line.startswith("| `")):
        first, rest = row[1:].split("|", 1)
        paths = re.findall(r"`([^`]+)`", first)
        folder = paths[0].rsplit("/", 1)[0]
        named |= {p if "/" in p else f"{folder}/{p}" for p in paths}
        named |= set(re.findall(r"`(hgn/[^`]+)`", rest))
    folders = tuple(p for p in named if p.endswith("/"))
    modules = {
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    missing = sorted(m for m in modules if m not in named and not m.startswith(folders))
    assert not missing, f"README's Layout table does not name {missing}"
    stale = sorted(p for p in named if not (PACKAGE.parent / p).exists())
    assert not stale, f"README's Layout table names what does not exist: {stale}"
