"""The wheel (issue 14): one installed namespace, every committed table and shipped config inside.

The wheel is built from a copy of the tree with setuptools' PEP 517 backend (what ``pip wheel
--no-deps .`` runs), offline; nothing is installed, the archive is only read.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: repo folder -> where it installs
INSTALLS = {"nas_gym": "nas_gym", "agents": "nas_gym/agents", "experiments": "nas_gym/experiments"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """name -> content of every file in the wheel built from this tree."""
    pytest.importorskip("setuptools")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in INSTALLS:
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "results"))
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.build_wheel(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    name = proc.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(out / name) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_the_wheel_installs_only_the_nas_gym_namespace(wheel: dict[str, bytes]) -> None:
    tops = {n.split("/")[0] for n in wheel if ".dist-info/" not in n}
    assert tops == {"nas_gym"}  # no top-level "agents" / "experiments" to collide with a user's
    entry = next(v for n, v in wheel.items() if n.endswith(".dist-info/entry_points.txt"))
    assert "nas-gym = nas_gym.experiments.cli:main" in entry.decode()
    table = wheel["nas_gym/tables/macro_digits.sqlite"]
    assert table.startswith(b"SQLite format 3") and \
        table == (ROOT / "nas_gym" / "tables" / "macro_digits.sqlite").read_bytes()


def test_every_module_table_and_config_is_in_the_wheel(wheel: dict[str, bytes]) -> None:
    names = set(wheel)
    expected = []
    for folder, target in INSTALLS.items():
        for path in (ROOT / folder).rglob("*.py"):
            if "results" in path.relative_to(ROOT).parts:
                continue
            expected.append(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    tables = sorted(p.name for p in (ROOT / "nas_gym" / "tables").iterdir()
                    if p.suffix in (".sqlite", ".json"))
    assert "macro_digits.sqlite" in tables and "nas-bench-macro_cifar10.json" in tables
    expected += [f"nas_gym/tables/{t}" for t in tables]
    expected += [f"nas_gym/experiments/configs/{p.name}"
                 for p in (ROOT / "experiments" / "configs").glob("*.yaml")]
    missing = sorted(set(expected) - names)
    assert not missing, f"not in the wheel: {missing}"


def test_every_committed_table_is_package_data() -> None:
    """A table committed anywhere else would be missing from a wheel install."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run([git, "ls-files", "*.sqlite", "*.sqlite3", "*.db"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    assert tracked and all(t.startswith("nas_gym/tables/") for t in tracked), tracked

