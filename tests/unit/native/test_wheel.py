"""A wheel built from a clean copy of the checkout ships every file the native sources
include (without them every installed user would silently get the torch path)."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
NATIVE = ROOT / "geomlens" / "native"


def _clean_copy(dest: Path) -> Path:
    """The tracked files of the checkout (what a clone holds), copied to ``dest``."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _included(source: Path) -> set[str]:
    """Local files a source includes, recursively (``#include "name"``)."""
    names = set(re.findall(r'#include\s+"([^"]+)"', source.read_text()))
    return names | {n for name in names for n in _included(NATIVE / name)}


def test_wheel_ships_every_native_source_and_what_it_includes(tmp_path):
    src = _clean_copy(tmp_path / "clone")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("geomlens-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sources = sorted(NATIVE.glob("*.cpp"))
    assert sources
    needed = {s.name for s in sources} | {n for s in sources for n in _included(s)}
    assert "rows.h" in needed
    missing = {n for n in needed if f"geomlens/native/{n}" not in shipped}
    assert not missing, f"the wheel lacks {sorted(missing)}"
