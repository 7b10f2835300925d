"""environment.yml (conda) and pyproject.toml (pip) name the same packages with the same ranges."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip"}  # the interpreter and the installer, not dependencies


def pip_packages() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [
        *project["dependencies"],
        *(d for extra in project["optional-dependencies"].values() for d in extra),
    ]
    reqs = [Requirement(line) for line in lines]
    own = canonicalize_name(project["name"])
    return {
        canonicalize_name(r.name): r.specifier
        for r in reqs
        if canonicalize_name(r.name) != own
    }


def conda_packages() -> dict[str, SpecifierSet]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            # packages conda-forge lacks, which conda installs with pip
            assert set(entry) == {"pip"}, f"environment.yml: unknown entry {entry!r}"
            for line in entry["pip"]:
                req = Requirement(line)
                found[canonicalize_name(req.name)] = req.specifier
            continue
        name, spec = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", entry).groups()
        name = canonicalize_name(CONDA_TO_PIP.get(name, name))
        if name not in CONDA_ONLY:
            found[name] = SpecifierSet(spec.replace(" ", ""))
    return found


def test_environment_yml_and_pyproject_name_the_same_packages():
    pip, conda = pip_packages(), conda_packages()
    assert sorted(conda) == sorted(pip), (
        f"only in pyproject.toml: {sorted(set(pip) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(pip))}"
    )
    differ = {
        name: (str(pip[name]), str(conda[name]))
        for name in pip
        if pip[name] != conda[name]
    }
    assert not differ, f"version ranges differ (pyproject, environment.yml): {differ}"


def test_torch_ranges_admit_the_wheels_on_this_disk():
    pip = pip_packages()
    assert "2.14.1" in pip["torch"] and "0.29.1" in pip["torchvision"]
    assert "2.0.0" not in pip["jupyter-book"] and "1.0.4" in pip["jupyter-book"]
