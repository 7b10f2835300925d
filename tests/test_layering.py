"""The library stands alone: ``import influence`` needs torch and tqdm, and never the experiment layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("matplotlib", "seaborn", "scipy", "torchvision", "experiments")


def test_import_influence_loads_no_plotting_statistics_or_vision_package():
    code = (
        "import sys, influence, influence.autodiff, influence.solvers, influence.multistage, influence.losses\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "", f"import influence loaded {out.stdout.strip()}"


def test_influence_imports_only_torch_tqdm_and_itself():
    """Statically too, so a lazy import inside a function cannot sneak a dependency in."""
    allowed = {"torch", "tqdm", "influence", "__future__"}
    stdlib = set(sys.stdlib_module_names)
    found = {}
    for path in (ROOT / "influence").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in allowed and top not in stdlib:
                    found.setdefault(path.name, set()).add(top)
    assert not found, f"influence/ imports beyond torch and tqdm: {found}"
