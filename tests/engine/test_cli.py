"""`sjc generate` / `sjc sample2d` on tiny models write the promised files; cancel writes only field.pt + previews."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh

from sjc_engine.callbacks import Callbacks
from sjc_engine.cli import main
from sjc_engine.pipeline import build_config, generate


@pytest.fixture(scope="module")
def generated(tiny_pixel_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    rc = main(["generate", "a red cube", "--model", str(tiny_pixel_dir), "--steps", "4", "--seed", "3",
               "--out", str(out), "--device", "cpu"])
    return rc, out


def test_generate_writes_every_file(generated, capsys):
    rc, out = generated
    assert rc == 0
    for name in ("field.pt", "turntable.mp4", "mesh.glb", "mesh.ply", "mesh.obj", "config.json", "resume/state.pt"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    previews = sorted((out / "previews").glob("*.png"))
    assert [p.name for p in previews] == ["step_000002.png", "step_000004.png"]  # the model's preview_every=2
    img = iio.imread(previews[0])
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8  # shown at display_size (default 256)
    assert img.std() > 0  # a rendering, not a blank


def test_generate_files_load_back(generated):
    _, out = generated
    from sjc_engine.field import VoxelField

    field = VoxelField.load(out / "field.pt")
    assert field.density_grid().shape == (12, 12, 12)  # the model's default grid
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["prompt"] == "a red cube" and cfg["steps"] == 4 and cfg["seed"] == 3 and cfg["steps_done"] == 4
    assert cfg["guidance_scale"] == 10.0  # from the model's sjc_model.json defaults
    frames = iio.imread(out / "turntable.mp4", plugin="pyav")
    assert frames.shape[0] == 4 and frames.shape[-1] == 3
    for name in ("mesh.glb", "mesh.ply", "mesh.obj"):
        assert isinstance(trimesh.load(out / name), (trimesh.Trimesh, trimesh.Scene))
    state = torch.load(out / "resume" / "state.pt", weights_only=True)
    assert state["step"] == 4


def test_cli_resume_continues(generated, tiny_pixel_dir, tmp_path):
    _, out = generated
    rc = main(["generate", "a red cube", "--model", str(tiny_pixel_dir), "--steps", "6", "--seed", "3",
               "--out", str(tmp_path), "--device", "cpu", "--resume", str(out / "resume" / "state.pt"),
               "--outputs", "checkpoint"])
    assert rc == 0
    assert torch.load(tmp_path / "resume" / "state.pt", weights_only=True)["step"] == 6
    assert not (tmp_path / "turntable.mp4").exists()


def test_bad_prompt_and_missing_model(tiny_pixel_dir, tmp_path, capsys):
    assert main(["generate", "a purple cube", "--model", str(tiny_pixel_dir), "--out", str(tmp_path)]) == 2
    assert "colours" in capsys.readouterr().err
    missing = tmp_path / "no-such-model"
    assert main(["generate", "a red cube", "--model", str(missing), "--out", str(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err


class StopAt(Callbacks):
    def __init__(self, n):
        self.n, self.done = n, 0

    def on_step(self, report):
        self.done = report.step

    def should_stop(self):
        return self.done >= self.n


def test_cancel_writes_only_field_and_previews(tiny_pixel_dir, tmp_path):
    cfg = build_config("A  Red cube", str(tiny_pixel_dir), steps=20, device="cpu")
    assert cfg.prompt == "a red cube" and cfg.render_size == 16
    res = generate(cfg, tmp_path, callbacks=StopAt(2))
    assert res.stopped and res.steps_done == 2
    assert set(res.files) == {"field.pt", "previews/step_000002.png"}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["field.pt", "step_000002.png"]


def test_empty_field_skips_the_mesh_with_a_warning(tiny_pixel_dir, tmp_path):
    cfg = build_config("a red cube", str(tiny_pixel_dir), steps=2, device="cpu", mesh_threshold=1e3)
    res = generate(cfg, tmp_path, outputs=("checkpoint", "mesh"))
    assert not res.stopped and set(res.files) == {"field.pt", "config.json"}
    assert len(res.warnings) == 1 and "mesh skipped" in res.warnings[0]


def test_sample2d_cli(tiny_uncond_dir, tmp_path, capsys):
    rc = main(["sample2d", "anything", "--model", str(tiny_uncond_dir), "--steps", "5", "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 0
    img = iio.imread(tmp_path / "sample.png")
    assert img.shape == (16, 16, 3)
