"""What the package needs and declares: the runtime dependencies are exactly what hgn
imports, optional features say which extra they need in one line, the lock file pins
every declared dependency, the report template and py.typed ship as package data, the
version has one source, and no --help points into files a wheel does not ship."""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.requirements import Requirement

import hgn
from hgn import plots
from hgn.cli import build_parser
from hgn.training.loop import LoopConfig, train_loop
from hgn.utils import UserError

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements-lock.txt"
OPTIONAL = {"tensorboard": "tensorboard", "video": "av", "digits": "scikit-learn"}
"""Extras and the heavy package each one adds for a single optional feature."""


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-")


def _third_party_imports() -> set[str]:
    """Top-level modules that hgn's own source imports, outside the standard library."""
    found = set()
    for path in (ROOT / "hgn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "hgn"}


def test_runtime_dependencies_are_what_hgn_imports() -> None:
    distributions = importlib.metadata.packages_distributions()
    imported = {_name(distributions[m][0]) for m in _third_party_imports()}
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    optional = {_name(r) for name in OPTIONAL for r in extras[name]}
    assert imported - optional == runtime, "pyproject's dependencies differ from hgn's imports"
    assert "scipy" not in runtime and "scipy" in {_name(r) for r in extras["dev"]}
    for extra, package in OPTIONAL.items():
        assert {_name(r) for r in extras[extra]} == {package}


@pytest.mark.slow
def test_every_module_imports_without_the_optional_packages() -> None:
    """Import every hgn module with scipy and the optional packages made unimportable."""
    code = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = {"scipy", "tensorboard", "av", "sklearn"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Block())
import hgn
names = [m.name for m in pkgutil.walk_packages(hgn.__path__, "hgn.") if m.name != "hgn.__main__"]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout) > 20


def test_training_without_tensorboard_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(i: int) -> dict[str, float]:
        loss = model(torch.randn(4, 2)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    config = LoopConfig(steps=3, seed=0, log_every=1, progress=False)
    result = train_loop(tmp_path / "run", {"model": model, "opt": opt}, step, config, {})
    assert result.step == 3
    err = capsys.readouterr().err
    assert err.count("tensorboard is not installed") == 1
    assert "pip install 'hgn[tensorboard]'" in err
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_mp4_without_an_encoder_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install 'hgn\[video\]'") as caught:
        plots.check_output(tmp_path / "a.mp4", plots.ANIMATION_SUFFIXES)
    assert "\n" not in str(caught.value)
    assert plots.check_output(tmp_path / "a.gif", plots.ANIMATION_SUFFIXES).name == "a.gif"
    with pytest.raises(UserError, match=r"use a file name ending in \.gif, \.mp4"):
        plots.check_output(tmp_path / "a.avi", plots.ANIMATION_SUFFIXES)


@pytest.mark.slow
def test_mp4_is_written_with_the_video_extra(tmp_path: Path) -> None:
    pytest.importorskip("av")
    import imageio.v3 as iio

    frames = np.random.default_rng(0).integers(0, 255, (6, 20, 20, 3), dtype=np.uint8)
    path = plots.save_animation(tmp_path / "a.mp4", frames, fps=8)
    back = iio.imread(path, plugin="pyav")
    assert back.shape == (6, 32, 32, 3)  # padded to 16-pixel macro-blocks
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no temporary file left


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if match:
            pins[_name(match.group(1))] = match.group(2)
    return pins


def test_lock_file_pins_every_declared_dependency() -> None:
    pins = _lock_pins()
    extras = PYPROJECT["project"]["optional-dependencies"]
    declared = [*PYPROJECT["project"]["dependencies"], *[r for e in extras.values() for r in e]]
    for text in declared:
        requirement = Requirement(text)
        if requirement.name == "hgn":  # dev pulls in the other extras
            continue
        name = _name(text)
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in {LOCK.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert pins["torch"].startswith("2.13.0")


def test_lock_file_says_how_to_regenerate_it() -> None:
    head = LOCK.read_text().split("\n\n")[0]
    assert "make lock" in head


def test_report_template_is_package_data() -> None:
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    assert "report.html.template" in package_data["hgn.experiments.reproduce"]
    template = resources.files("hgn.experiments.reproduce").joinpath("report.html.template")
    assert "${table1_noisy}" in template.read_text(encoding="utf-8")


def test_version_has_one_source() -> None:
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "hgn.__version__"
    assert hgn.__version__ == importlib.metadata.version("hgn")
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--version"])
    assert caught.value.code == 0


def test_licence_and_typing_marker_ship() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression (PEP 639)
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["hgn"]
    assert resources.files("hgn").joinpath("py.typed").is_file()
    assert {"Homepage", "Repository", "Documentation", "Issues"} <= set(project["urls"])


def _parsers(parser: argparse.ArgumentParser):
    """The parser and every sub-command's, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_help_points_to_files_a_wheel_does_not_ship() -> None:
    """docs/ is not in the wheel: a --help that names docs/RESULTS.md (or any docs/ file)
    sends an installed user nowhere."""
    helps = {p.prog: p.format_help() for p in _parsers(build_parser())}
    assert len(helps) > 15  # every sub-command of every group
    for prog, text in helps.items():
        assert "RESULTS.md" not in text, prog
        assert "docs/" not in text, prog
