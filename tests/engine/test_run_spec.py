"""The run contract: one request -> one resolved RunSpec, typed errors naming the field, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sjc_engine.run_spec import OUTPUTS, RunLimits, RunSpec, RunSpecError, resolve_run

VOCAB = {"colors": ["red", "blue"], "shapes": ["cube", "torus"]}


@pytest.fixture
def limits(tmp_path: Path) -> RunLimits:
    toy = tmp_path / "models" / "toy"
    toy.mkdir(parents=True)
    meta = {"name": "toy", "kind": "pixel", "vocabulary": VOCAB,
            "defaults": {"render_size": 32, "steps": 500, "guidance_scale": 10.0, "half": False}}
    (toy / "sjc_model.json").write_text(json.dumps(meta))
    return RunLimits(model_dirs=(str(tmp_path / "models"),), default_model="toy", max_steps=300, max_prompt_chars=40)


def test_a_request_is_resolved_once_with_every_effective_setting(limits):
    spec = resolve_run({"prompt": "  A  Red\tCube ", "outputs": ["video", "mesh"], "grid_size": 24}, limits)
    assert spec.model == "toy" and spec.prompt == "a red cube" and 0 <= spec.seed < 2**31
    assert spec.outputs == ("mesh", "video") and spec.mesh_formats == tuple(sorted(spec.mesh_formats))
    s = spec.settings
    assert (s["render_size"], s["guidance_scale"], s["grid_size"]) == (32, 10.0, 24)  # model < request
    assert s["steps"] == 300  # the model's 500, capped by the deployment
    assert s["lr"] == 0.05 and s["half"] is False and "prompt" not in s and "seed" not in s
    again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))  # stored as JSON, read back
    assert again == RunSpec.from_dict(spec.to_dict()) and again.to_dict() == spec.to_dict()
    config = again.config(device="cpu", half=True, checkpoint_every=7)
    assert (config.prompt, config.seed, config.device, config.half, config.checkpoint_every) == (
        "a red cube", spec.seed, "cpu", True, 7)
    assert config.grid_size == 24 and config.steps == 300


BAD = [
    ({"prompt": "   "}, "prompt", "invalid_prompt"),
    ({"prompt": "a red cube " * 5}, "prompt", "invalid_prompt"),  # over 40 characters
    ({"prompt": "a green cube"}, "prompt", "invalid_prompt"),  # outside the vocabulary
    ({"prompt": "a red cube", "model": "nope"}, "model", "model_not_found"),
    ({"prompt": "a red cube", "model": "/etc"}, "model", "model_not_found"),  # paths are refused
    ({"prompt": "a red cube", "model": "../models/toy"}, "model", "model_not_found"),
    ({"prompt": "a red cube", "steps": 301}, "steps", "invalid_params"),
    ({"prompt": "a red cube", "guidance_scale": -1.0}, "guidance_scale", "invalid_params"),
    ({"prompt": "a red cube", "grid_size": 2}, "grid_size", "invalid_params"),
    ({"prompt": "a red cube", "warp": 9}, "warp", "invalid_params"),
    ({"prompt": "a red cube", "device": "cuda"}, "device", "invalid_params"),  # the runner's, not the request's
    ({"prompt": "a red cube", "outputs": []}, "outputs", "invalid_params"),
    ({"prompt": "a red cube", "outputs": ["hologram"]}, "outputs", "invalid_params"),
    ({"prompt": "a red cube", "outputs": ["mesh"], "mesh_formats": []}, "mesh_formats", "invalid_params"),
    ({"prompt": "a red cube", "mesh_formats": ["fbx"]}, "mesh_formats", "invalid_params"),
    ({"prompt": "a red cube", "seed": -1}, "seed", "invalid_params"),
]


@pytest.mark.parametrize("request_,field,code", BAD, ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD)])
def test_refusals_name_the_field_and_the_code(limits, request_, field, code):
    with pytest.raises(RunSpecError) as info:
        resolve_run(request_, limits)
    assert (info.value.field, info.value.code) == (field, code), info.value


def test_a_stored_spec_is_checked_again_without_the_catalog(limits):
    good = resolve_run({"prompt": "a blue torus", "seed": 5}, limits).to_dict()
    assert RunSpec.from_dict(good).seed == 5
    for bad, field in [({**good, "model": "/srv/elsewhere"}, "model"), ({**good, "outputs": ["x"]}, "outputs"),
                       ({**good, "settings": {**good["settings"], "steps": 0}}, "steps"),
                       ({k: v for k, v in good.items() if k != "seed"}, "seed")]:
        with pytest.raises(RunSpecError) as info:
            RunSpec.from_dict(bad)
        assert info.value.field == field
    with pytest.raises(RunSpecError):
        RunSpec.from_dict(good).config(steps=3)  # only device, half and checkpoint_every at run time


def test_the_cli_may_name_a_model_by_path(limits, tmp_path):
    from sjc_engine.run_spec import limits_for_cli

    spec = resolve_run({"prompt": "a red cube", "model": str(tmp_path / "models" / "toy")}, limits_for_cli())
    assert spec.prompt == "a red cube" and spec.outputs == tuple(sorted(OUTPUTS))


def test_the_contract_imports_no_torch():
    code = "import sys, sjc_engine.run_spec; print([m for m in ('torch', 'numpy', 'sjc_service') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
