"""Export: meshes that load back with real colours, MP4 that loads back, image helpers."""

import av
import numpy as np
import pytest
import torch
import trimesh

from sjc_engine.export.images import image_grid, save_png, to_uint8_image
from sjc_engine.export.mesh import EmptyMeshError, extract_mesh, save_mesh
from sjc_engine.export.video import render_turntable, write_mp4
from sjc_engine.field import VoxelField


def two_color_ball(n: int = 24) -> VoxelField:
    """A ball of radius 0.5, red for x > 0 and blue for x < 0 (pixel features in [-1, 1]), plus a floater."""
    field = VoxelField(grid_size=n, channels=3)
    with torch.no_grad():
        p = field.grid_points()  # (n, n, n, 3)
        inside = p.norm(dim=-1) < 0.5
        field.density.copy_(torch.where(inside, 60.0, -30.0)[None])
        floater = (p - torch.tensor([0.8, 0.8, 0.8])).norm(dim=-1) < 0.1
        field.density[0][floater] = 60.0
        red = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1, 1)
        blue = torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1, 1)
        field.features.copy_(torch.where(p[..., 0] > 0, red, blue))
        field.bg.fill_(1.0)  # white background
    return field


@pytest.fixture(scope="module")
def ball_mesh() -> trimesh.Trimesh:
    return extract_mesh(two_color_ball(), threshold=5.0, decode=None, views=6, size=32)


def test_mesh_geometry_colors_and_floaters(ball_mesh: trimesh.Trimesh) -> None:
    v = ball_mesh.vertices
    r = np.linalg.norm(v, axis=1)
    assert np.all(np.abs(r - 0.5) < 0.1), "vertices lie on the sphere; the floater at (0.8, 0.8, 0.8) is gone"
    colors = ball_mesh.visual.vertex_colors[:, :3].astype(float) / 255
    right, left = v[:, 0] > 0.15, v[:, 0] < -0.15
    assert colors[right, 0].mean() > 0.7 and colors[right, 2].mean() < 0.3  # red side
    assert colors[left, 2].mean() > 0.7 and colors[left, 0].mean() < 0.3  # blue side


def test_mesh_files_load_back_with_colors(ball_mesh: trimesh.Trimesh, tmp_path) -> None:
    paths = save_mesh(ball_mesh, tmp_path)
    assert set(paths) == {"glb", "ply", "obj"}
    for fmt, path in paths.items():
        loaded = trimesh.load(path, force="mesh", process=False)
        assert len(loaded.vertices) == len(ball_mesh.vertices), fmt
        assert len(loaded.faces) == len(ball_mesh.faces), fmt
        assert loaded.visual.kind == "vertex", fmt
        colors = np.asarray(loaded.visual.vertex_colors)[:, :3]
        assert colors.dtype == np.uint8, fmt
        assert len(np.unique(colors, axis=0)) > 2, f"{fmt}: colours all equal"
        assert np.abs(colors.astype(int) - ball_mesh.visual.vertex_colors[:, :3].astype(int)).max() <= 1, fmt
    subset = save_mesh(ball_mesh, tmp_path / "sub", formats=("ply",))
    assert list(subset) == ["ply"]
    with pytest.raises(ValueError):
        save_mesh(ball_mesh, tmp_path, formats=("stl",))


def test_empty_field_raises() -> None:
    with pytest.raises(EmptyMeshError):
        extract_mesh(VoxelField(8, 3), threshold=5.0)


def test_turntable_mp4_loads_back(tmp_path) -> None:
    field = two_color_ball(16)
    frames = render_turntable(field, None, n_frames=6, size=24, radius=1.5, fov_deg=60.0, elevation_deg=20.0)
    assert frames.shape == (6, 24, 48, 3) and frames.dtype == np.uint8
    left, right = frames[0, :, :24], frames[0, :, 24:]
    assert left[12, 12, 0] > 150 or left[12, 12, 2] > 150  # the ball's centre pixel is red or blue
    assert right[0, 0].sum() == 0 and right[12, 12].sum() > 0  # depth: black background, coloured object
    path = write_mp4(frames, tmp_path / "turntable.mp4", fps=10)
    with open(path, "rb") as fh:
        head = fh.read(64)
    assert b"ftyp" in head and b"moov" in open(path, "rb").read(4096), "+faststart puts moov at the front"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.pix_fmt == "yuv420p"
    assert len(decoded) == 6 and decoded[0].shape == (24, 48, 3)
    assert np.abs(decoded[0].astype(int) - frames[0].astype(int)).mean() < 20


def test_image_helpers(tmp_path) -> None:
    img = torch.zeros(3, 4, 5)
    img[0] = 1.0
    img[1, 0, 0] = 2.0  # clipped
    arr = to_uint8_image(img)
    assert arr.shape == (4, 5, 3) and arr.dtype == np.uint8
    assert arr[1, 1].tolist() == [255, 0, 0] and arr[0, 0].tolist() == [255, 255, 0]
    grid = image_grid([arr, arr, arr], cols=2)
    assert grid.shape == (8, 10, 3) and grid[4:, 5:].sum() == 0
    path = save_png(grid, tmp_path / "g.png")
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(path)), grid)
