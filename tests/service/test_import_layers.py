"""The layering, enforced: ``lint-imports`` runs the contracts of pyproject.toml ``[tool.importlinter]``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = {
    "The engine imports nothing of HTTP, queues, storage, the client or the service",
    "The API imports no torch (nor anything that does)",
    "Nothing imports the worker",
    "Neither the shared service code nor the worker imports the API",
}


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is not installed (pip install -e '.[dev]')"
    return exe


def test_every_layer_contract_is_declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert {c["name"] for c in config["contracts"]} == CONTRACTS
    assert {"sjc_engine", "sjc_service", "api", "worker", "sjc_client", "sjc_cli"} <= set(config["root_packages"])


def test_import_contracts_are_kept():
    proc = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout


def test_a_forbidden_import_breaks_a_contract(tmp_path):
    """The contracts bite: a copy of the tree whose engine imports the client fails the check."""
    for name in ("sjc_cli", "sjc_engine", "sjc_service", "sjc_client", "api", "worker"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("models", "__pycache__", "*.so"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "sjc_engine" / "leak.py").write_text("import sjc_client.client\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    proc = subprocess.run([_lint_imports(), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode != 0 and "1 broken" in proc.stdout, proc.stdout[-3000:]
