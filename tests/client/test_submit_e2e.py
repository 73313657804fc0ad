"""``sjc submit --wait`` (the ``sjc`` command, :mod:`sjc_cli`) against the real stack: redis-server, moto S3, a Celery worker and the API.

The client runs as its own process, exactly as a user runs it; the files it downloads are checked
against the job's manifest (sha256) and opened as what they claim to be.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.fixtures.service import API_KEYS

ROOT = Path(__file__).resolve().parents[2]
KEY = API_KEYS["alice"]


def run_cli(*args: str, module: str = "sjc_client", timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m sjc_client ...`` or, with ``module="sjc_cli"``, the ``sjc`` command itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SJC_")}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_submit_wait_downloads_verified_artifacts(api_server, worker_process, tmp_path):
    out = tmp_path / "red-cube"
    proc = run_cli("submit", "a red cube", "--wait", "--out", str(out), "--server", api_server.url,
                   "--api-key", KEY, "--steps", "4", "--grid-size", "12", "--seed", "3",
                   "--param", "video_frames=4", "--param", "preview_every=2", module="sjc_cli")
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\nAPI log:\n{api_server.log()}" \
                                 f"\nworker log:\n{worker_process.log()}"
    assert "succeeded" in proc.stdout and str(out.resolve()) in proc.stdout

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["steps"] == 4 and manifest["params"]["seed"] == 3
    listed = {a["key"].split("/", 2)[2]: a for a in manifest["artifacts"]}
    # A 4-step field may hold no surface yet, so the mesh is optional here (tests/engine cover it).
    assert {"field.pt", "turntable.mp4", "config.json"} <= set(listed), sorted(listed)
    for name, artifact in listed.items():
        data = (out / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"], name
        assert f"{name}: http" in proc.stdout  # the link was printed
    assert (out / "turntable.mp4").read_bytes()[4:8] == b"ftyp"
    assert zipfile.is_zipfile(out / "field.pt")  # torch.save's format
    if "mesh.glb" in listed:
        assert (out / "mesh.glb").read_bytes()[:4] == b"glTF"
    assert list((out / "previews").glob("*.png"))
    assert not (out / "resume").exists()  # the resumable state is not downloaded by default


def test_submit_surfaces_the_api_problem_and_exits_non_zero(api_server, tmp_path):
    proc = run_cli("submit", "a purple dog", "--wait", "--out", str(tmp_path / "x"),
                   "--server", api_server.url, "--api-key", KEY)
    assert proc.returncode == 2, proc.stderr
    assert "error: 4" in proc.stderr and "dog" in proc.stderr  # the problem's status and detail
    proc = run_cli("submit", "a red cube", "--server", api_server.url, "--api-key", "wrong-key")
    assert proc.returncode == 2 and "401" in proc.stderr
    assert not (tmp_path / "x").exists()
