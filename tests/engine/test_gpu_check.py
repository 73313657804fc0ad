"""bench/gpu_check.sh in its CPU dry mode (tiny shapes): every stage runs and the report is written.

The GPU figures themselves need the GPU machine; this keeps the script's flow, its helpers and their
interfaces to the engine working in CI. Also the offline wheel installer on a wheel made here.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

import install_wheels  # noqa: E402


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out, work = tmp_path_factory.mktemp("gpu_check"), tmp_path_factory.mktemp("gpu_work")
    env = {**os.environ, "SJC_GPU_CHECK_DEVICE": "cpu", "SJC_GPU_CHECK_OUT": str(out), "SJC_GPU_CHECK_WORK": str(work),
           "PYTHON": sys.executable, "SJC_WHEELS": str(work / "no-wheels")}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=500)
    return proc, out


def test_dry_run_passes_every_stage(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("env", "tests", "sd15", "generate"):
        assert f"stage {stage}: exit 0" in proc.stderr
    tests = json.loads((out / "tests.json").read_text())
    assert tests["rc"] == 0 and "7 skipped" in tests["summary"]  # the cuda tests collect and skip


def test_dry_run_figures(dry_run):
    _, out = dry_run
    sd = json.loads((out / "sd15.json").read_text())
    assert sd["tiny"] and sd["device"] == "cpu" and sd["sjc_steps"] == 5 and sd["unet_calls"] == 5
    assert 0 < sd["unet_share"] < 1 and sd["outside_unet_share"] == pytest.approx(1 - sd["unet_share"])
    assert sd["steps_per_s"] > 0 and sd["unet_ms"] > 0 and sd["unet_ms_channels_last"] > 0
    gen = json.loads((out / "generate.json").read_text())
    assert gen["rc"] == 0 and gen["steps"] == 2
    assert {"field.pt", "config.json", "turntable.mp4"} <= set(gen["files"])
    assert sorted(p.name for p in (out / "generate_previews").iterdir()) == ["step_000001.png", "step_000002.png"]
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("## GPU check (") and "| share of a step outside the UNet |" in md
    assert "not comparable: dry run" in md and "`sjc generate` 2 steps" in md and "exit 0" in md


def _fake_wheel(folder: Path, dist: str, version: str, body: str) -> Path:
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{dist}/__init__.py", body)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


def test_installer_installs_only_what_is_asked_from_local_wheels(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _fake_wheel(wheels, "tqdm", "99.0", "MARK = 'from the wheel folder'\n")
    target = tmp_path / "site"
    assert install_wheels.main(["--wheels", str(wheels), "--target", str(target), "--force", "tqdm"]) == 0
    assert (target / "tqdm" / "__init__.py").read_text() == "MARK = 'from the wheel folder'\n"
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == ["tqdm", "tqdm-99.0.dist-info"]
    with pytest.raises(SystemExit, match="no wheel for trimesh"):
        install_wheels.main(["--wheels", str(wheels), "--target", str(target), "--force", "trimesh"])


def test_diffusers_wheel_follows_huggingface_hub(tmp_path, monkeypatch):
    wheels = [tmp_path / "diffusers-0.42.1-py3-none-any.whl", tmp_path / "diffusers-0.35.2-py3-none-any.whl"]
    for hub, expected in (("2.4.0", "0.42.1"), ("1.32.0", "0.42.1"), ("0.36.0", "0.35.2")):
        monkeypatch.setattr(install_wheels.importlib.metadata, "version", lambda name, v=hub: v)
        assert install_wheels.pick_diffusers(wheels).name.startswith(f"diffusers-{expected}-")
    monkeypatch.setattr(install_wheels.importlib.metadata, "version", lambda name: "0.20.0")
    with pytest.raises(SystemExit, match="no diffusers wheel"):
        install_wheels.pick_diffusers(wheels)
