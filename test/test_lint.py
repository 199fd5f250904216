"""`ruff check` (configuration: ruff.toml) is clean over the whole repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def _ruff() -> str:
    """The venv's ruff (next to this interpreter), else one on PATH."""
    local = Path(sys.executable).parent / "ruff"
    found = str(local) if local.exists() else shutil.which("ruff")
    assert found, f"ruff is not installed next to {sys.executable} or on PATH (pip install -r tools/requirements.txt)"
    return found


def test_ruff_check_is_clean(repo_root: Path) -> None:
    proc = subprocess.run([_ruff(), "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ruff check found problems:\n{proc.stdout}{proc.stderr}"
