"""The exported GLB as a stock three.js app shows it: GLTFLoader with the file's own material, a hemisphere
and a key light, in headless Chromium. The object must have the prompt's hue and not be dark.

A control renders the same surface the way the old exporter wrote it (triangles wound inward, vertex colours,
no material) and must fail the same check, so the check can fail.
"""

import colorsys
import io

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from sjc_engine.config import SJCConfig
from sjc_engine.export.asset import export_asset
from sjc_engine.export.mesh import extract_mesh
from sjc_engine.field import VoxelField
from web.tools.glb_viewer import StockViewer, bundle

YELLOW = torch.tensor([0.9, 0.8, -0.9])  # pixel features in [-1, 1]: RGB (0.95, 0.9, 0.05)


def yellow_torus(n: int = 48) -> VoxelField:
    field = VoxelField(n, 3, density_shift=-5.0)
    with torch.no_grad():
        p = field.grid_points()
        q = torch.stack([p[..., [0, 2]].norm(dim=-1) - 0.45, p[..., 1]], dim=-1)
        sdf = q.norm(dim=-1) - 0.18
        field.density.copy_((-sdf / field.voxel_size * 20.0 + 10.0).clamp(-30, 60)[None])
        field.features.copy_(YELLOW.view(3, 1, 1, 1).expand(3, n, n, n))
    return field


def object_color(png: bytes) -> tuple[float, float, float, float]:
    """(hue in degrees, saturation, value, covered fraction) of the pixels that are not the white background."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float) / 255
    mask = np.abs(img - 1.0).max(-1) > 0.1
    if not mask.any():
        return 0.0, 0.0, 0.0, 0.0
    h, s, v = colorsys.rgb_to_hsv(*img[mask].mean(0))
    return 360 * h, s, v, float(mask.mean())


VIEWS = ((35.0, 25.0, 0.75), (200.0, -20.0, 0.5))  # (azimuth, elevation, least value): from above the key
# light shines on what the camera sees; from below only the hemisphere's dark ground colour does


def looks_yellow(png: bytes, least_value: float) -> bool:
    hue, sat, val, covered = object_color(png)
    return covered > 0.1 and 45 <= hue <= 70 and sat > 0.5 and val > least_value


@pytest.fixture(scope="module")
def viewer(browser, web_node_modules):
    v = StockViewer(browser, bundle(web_node_modules))
    yield v
    v.close()


def test_glb_looks_right_in_stock_viewer(viewer, tmp_path) -> None:
    config = SJCConfig(render_size=16, display_size=32, target_faces=8000, texture_size=256)
    res = export_asset(yellow_torus(), config, tmp_path, outputs=("mesh",), mesh_formats=("glb",))
    for azimuth, elevation, least_value in VIEWS:  # above and below: no side shows inside out
        png, info = viewer.render(res.files["mesh.glb"], azimuth=azimuth, elevation=elevation, size=256)
        (mat,) = info["materials"]
        assert mat["metalness"] == 0 and 0.8 <= mat["roughness"] <= 0.9 and mat["hasMap"]
        assert mat["mapColorSpace"] == "srgb" and not mat["vertexColors"]
        assert looks_yellow(png, least_value), f"view {azimuth}/{elevation}: (hue, sat, value, covered) {object_color(png)}"


def test_control_inside_out_untextured_fails_the_check(viewer, tmp_path) -> None:
    mesh = extract_mesh(yellow_torus(), 5.0, target_faces=8000)
    old = trimesh.Trimesh(mesh.vertices, mesh.faces[:, ::-1], vertex_colors=mesh.visual.vertex_colors, process=False)
    path = tmp_path / "old.glb"
    path.write_bytes(trimesh.exchange.gltf.export_glb(old))
    results = []
    for azimuth, elevation, least_value in VIEWS:
        png, info = viewer.render(path, azimuth=azimuth, elevation=elevation, size=256)
        assert info["materials"][0]["metalness"] == 1, "glTF's default material"
        results.append(looks_yellow(png, least_value))
    assert results == [False, False], "dark tinted metal, inside out"
