"""What a first install relies on (issue 13 items 13, 14): the wheel carries every file of the package (bundled model,
sample photo, web page), and the CPU-only requirements pin the same torch as requirements-dev.txt."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "pcnn_fer"


def package_files() -> list[str]:
    """Every file of the package as the wheel names it (``pcnn_fer/...``), caches and hidden files left out."""
    return sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
                  and p.suffix != ".pyc")


@pytest.mark.slow
def test_wheel_holds_every_package_file(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel without isolation needs setuptools")
    source = tmp_path / "source"  # a copy: building in the tree would leave build/ and *.egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", ".", "-w", str(tmp_path / "dist")], cwd=source, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("pcnn_fer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = package_files()
    assert {"pcnn_fer/assets/pcnn_ferplus.safetensors", "pcnn_fer/deploy/static/index.html"} <= set(expected)
    assert [f for f in expected if f not in names] == []
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "pcnn = pcnn_fer.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def pins(path: Path) -> dict[str, str]:
    """``name == version`` pins of a requirements file."""
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text(), flags=re.MULTILINE)
    return dict(found)


def test_cpu_requirements_pin_the_same_torch():
    cpu, dev = pins(REPO / "requirements-cpu.txt"), pins(REPO / "requirements-dev.txt")
    assert set(cpu) == {"torch", "torchvision"} and cpu == {k: dev[k] for k in cpu}
    assert "--index-url https://download.pytorch.org/whl/cpu" in (REPO / "requirements-cpu.txt").read_text()
