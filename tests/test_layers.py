"""The house's layers hold: the import-linter contracts of pyproject.toml pass, and the import graph has no circle,
no upward or sideways import and no project import hidden inside a function (tests/layering.py computes them)."""

import subprocess
import sys
from pathlib import Path

from layering import figures

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "Contracts: " in proc.stdout


def test_no_circles_no_upward_imports_no_hidden_imports():
    found = figures(ROOT)
    assert found["file_circles"] == []
    assert found["upward_imports"] == [] and found["sideways_imports"] == []
    assert found["function_imports"] == [], "import at the top of the module (a layer below), or move the code to its layer"
    assert found["rooms_in_largest_cycle"] == 0
