"""Every third-party module the sources import is declared in setup.cfg."""

from __future__ import annotations

import ast
import configparser
import re
import sys
from functools import lru_cache
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Top-level names that are this repository's own code, not distributions.
LOCAL = {path.stem for path in ROOT.iterdir() if path.is_dir() or path.suffix == ".py"}
# Which requirement lists may provide the imports of the files under each folder (or of one file).
SCOPES = {
    "ppp_lightning/federated": ("install_requires", "federated"),
    "ppp_lightning/auditing/tuning.py": ("install_requires", "tune"),
    "ppp_lightning": ("install_requires",),
    "callbacks": ("install_requires",),
    "datamodules": ("install_requires",),
    "tests": ("install_requires", "test"),
}


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_requirements(setup_cfg: Path) -> dict[str, set[str]]:
    """``install_requires`` and each extra of ``setup.cfg`` as sets of normalised distribution names."""
    config = configparser.ConfigParser()
    config.read(setup_cfg)
    lists = {"install_requires": config["options"]["install_requires"], **config["options.extras_require"]}
    return {
        key: {normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group()) for line in text.split("\n") if line.strip()}
        for key, text in lists.items()
    }


def third_party_imports(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` that are neither stdlib nor this repository's."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name not in LOCAL | {"__future__"}}


@lru_cache(maxsize=None)
def _providers() -> dict[str, list[str]]:
    return packages_distributions()  # scans every installed distribution: once per session


def distributions(module: str) -> set[str]:
    """The installed distributions that provide ``module`` (its own name when none is installed)."""
    return {normalize(name) for name in _providers().get(module, [module])}


def scope_of(relative: str) -> tuple[str, ...]:
    """The requirement lists that may provide the imports of a file (the most specific folder or the file wins)."""
    folder = max((f for f in SCOPES if relative == f or relative.startswith(f + "/")), key=len)
    return SCOPES[folder]


def undeclared(root: Path, requirements: dict[str, set[str]]) -> list[str]:
    """``"file: module (distribution)"`` for every import that no allowed requirement list declares."""
    problems = []
    for folder in ("ppp_lightning", "callbacks", "datamodules", "tests"):
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            allowed = set().union(*(requirements[key] for key in scope_of(relative)))
            for module in sorted(third_party_imports(path.read_text())):
                if not distributions(module) & allowed:
                    problems.append(f"{relative}: {module} ({', '.join(sorted(distributions(module)))})")
    return problems


def test_every_imported_module_is_declared_in_setup_cfg():
    problems = undeclared(ROOT, declared_requirements(ROOT / "setup.cfg"))
    assert not problems, "imported but not declared in setup.cfg:\n" + "\n".join(problems)


def test_the_check_fails_for_an_undeclared_import():
    requirements = declared_requirements(ROOT / "setup.cfg")
    assert {"scipy", "tqdm", "numpy", "pyyaml"} <= requirements["install_requires"]
    requirements["install_requires"] -= {"scipy", "pyyaml"}
    problems = undeclared(ROOT, requirements)
    assert any(p.endswith(": scipy (scipy)") and p.startswith("ppp_lightning") for p in problems)
    assert any(p.endswith(": yaml (pyyaml)") and p.startswith("ppp_lightning") for p in problems)


def test_flower_is_allowed_only_under_federated(tmp_path):
    (tmp_path / "ppp_lightning" / "federated").mkdir(parents=True)
    (tmp_path / "ppp_lightning" / "federated" / "app.py").write_text("import flwr\nfrom . import core\n")
    (tmp_path / "ppp_lightning" / "core.py").write_text("import json, os\nfrom flwr.common import Context\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("import pytest\nfrom datamodules import MNISTDataModule\n")
    assert undeclared(tmp_path, declared_requirements(ROOT / "setup.cfg")) == ["ppp_lightning/core.py: flwr (flwr)"]
