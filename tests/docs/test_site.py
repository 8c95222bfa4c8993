"""The docs site builds with warnings as errors, and the README stays a few screens long."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_readme_fits_a_few_screens():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    commands = [line for line in lines[:8] if line.startswith("bash scripts/")]
    assert [c.split()[1] for c in commands] == ["scripts/main.sh", "scripts/test.sh"]


def test_docs_build_strictly(tmp_path):
    exe = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    if not Path(exe).exists():
        pytest.fail("mkdocs is missing: pip install -e '.[dev]' (mkdocs-material, mkdocstrings)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([exe, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "threads" / "distance" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "index.html").exists()
