"""The package's layer order (STYLE rule 17), as import-linter contracts in pyproject.toml:
views > threads > shared language > machinery, the threads independent of each other."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("import-linter is missing: pip install 'import-linter>=2'")
    done = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_commands_folder_or_provider_list():
    """Each thread owns its command; the command line lists the modules once."""
    from geomlens import cli

    assert not (ROOT / "geomlens" / "commands").exists()
    names = {cmd.name for module in cli.MODULES for cmd in module.COMMANDS}
    assert {"analyze", "ablate", "train", "kv", "project", "align", "models", "smoke", "run",
            "report"} <= names
