"""The ``sjc`` command hands engine commands to the engine and the rest to the client, loading only one."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fixtures.service import ROOT


def run_sjc(*args: str) -> tuple[int, str, list[str]]:
    """Run ``sjc ARGS`` in a fresh interpreter; returns (exit code, output, which heavy modules got loaded)."""
    code = (
        "import contextlib, io, json, sys\n"
        "from sjc_cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        rc = main({list(args)!r})\n"
        "    except SystemExit as e:\n"
        "        rc = e.code or 0\n"
        "loaded = [m for m in ('httpx', 'sjc_client', 'sjc_engine.cli', 'torch') if m in sys.modules]\n"
        "print(json.dumps([rc, out.getvalue(), loaded]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rc, out, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    return rc, out, loaded


def test_engine_commands_never_load_the_client():
    rc, out, loaded = run_sjc("generate", "--help")
    assert rc == 0 and "--steps" in out and "--model" in out
    assert "sjc_engine.cli" in loaded and "httpx" not in loaded and "sjc_client" not in loaded


def test_client_commands_never_load_the_engine():
    rc, out, loaded = run_sjc("status", "--help")
    assert rc == 0 and "--server" in out
    assert "sjc_client" in loaded and "sjc_engine.cli" not in loaded and "torch" not in loaded


def test_help_lists_both_sides_and_version():
    rc, out, _ = run_sjc("--help")
    assert rc == 0 and "generate, sample2d" in out and "submit" in out and "status" in out
    rc, out, _ = run_sjc("--version")
    assert rc == 0 and out.startswith("sjc ")
