"""Export: mesh files that load back facing outward with their texture and colours, the whole asset (video,
thumbnail, mesh) at display size, the MP4, image helpers."""

import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from sjc_engine.cameras import spherical_camera
from sjc_engine.config import SJCConfig
from sjc_engine.export.asset import export_asset
from sjc_engine.export.colors import local_colors, pixel_decode, smoothed_features
from sjc_engine.export.crop import crop_to_content
from sjc_engine.export.images import image_grid, save_png, to_uint8_image
from sjc_engine.export.mesh import EmptyMeshError, extract_mesh, save_mesh
from sjc_engine.export.video import Mp4Writer, iter_turntable
from sjc_engine.field import VoxelField
from sjc_engine.renderer import render_image

ROOT = Path(__file__).resolve().parents[2]


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
def ball() -> VoxelField:
    return two_color_ball()


@pytest.fixture(scope="module")
def ball_mesh(ball) -> trimesh.Trimesh:
    return extract_mesh(ball, threshold=5.0, decode=None, target_faces=4000)


@pytest.fixture(scope="module")
def ball_files(ball, ball_mesh, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ball")
    return save_mesh(ball_mesh, out, color_fn=lambda p, n: local_colors(ball, p, n), texture_size=256)


def sides_are_red_and_blue(vertices: np.ndarray, rgb: np.ndarray) -> None:
    right, left = vertices[:, 0] > 0.15, vertices[:, 0] < -0.15
    assert rgb[right, 0].mean() > 0.8 and rgb[right, 2].mean() < 0.2, rgb[right].mean(0)  # red side
    assert rgb[left, 2].mean() > 0.8 and rgb[left, 0].mean() < 0.2, rgb[left].mean(0)  # blue side


def test_mesh_geometry_colors_and_floaters(ball_mesh: trimesh.Trimesh) -> None:
    v = ball_mesh.vertices
    assert np.all(np.abs(np.linalg.norm(v, axis=1) - 0.5) < 0.06), "on the sphere; the floater at (0.8, 0.8, 0.8) is gone"
    assert ball_mesh.is_watertight and ball_mesh.volume > 0
    assert len(ball_mesh.faces) <= 4000
    sides_are_red_and_blue(v, ball_mesh.visual.vertex_colors[:, :3].astype(float) / 255)


def test_surface_colours_average_the_shell_not_the_space_around_or_the_core() -> None:
    torch.manual_seed(0)
    field = two_color_ball()  # n = 24: voxels of 0.087, the ball's radius 0.5
    with torch.no_grad():
        r = field.grid_points().norm(dim=-1)
        noise = 0.4 * torch.randn(3, *r.shape)
        field.features.add_(torch.where(r < 0.5, noise, 5.0 * noise))  # mottled, and anything at all outside
        green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1)
        field.features[:, r < 0.2] = green  # a core no render reaches, in another colour
    feats = field.features.detach()
    smooth = smoothed_features(field, threshold=5.0)
    assert smoothed_features(field, 5.0, sigma=0.0).data_ptr() == feats.data_ptr()
    x = field.grid_points()[..., 0]
    shell = (r < 0.5) & (r > 0.35) & (x > 0.15)  # the red side's outer layer
    assert smooth[0][shell].std() < 0.6 * feats[0][shell].std()  # the mottling averages out
    assert smooth[0][shell].mean() > 0.9 and smooth[1][shell].mean() < -0.9  # red: neither the outside nor the core
    out = local_colors(field, np.array([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]]), np.array([[1.0, 0, 0], [-1.0, 0, 0]]),
                       features=smooth)
    assert out[0, 0] > 0.9 and out[0, 1] < 0.1 and out[1, 2] > 0.9 and out[1, 1] < 0.1, out  # red, blue


def test_mesh_files(ball_files: dict[str, Path], ball_mesh: trimesh.Trimesh) -> None:
    assert set(ball_files) == {"mesh.glb", "mesh.obj", "mesh.mtl", "mesh.png", "mesh.ply", "mesh.stl"}
    assert all(p.stat().st_size > 0 for p in ball_files.values())


def test_glb_loads_back_textured_pbr_outward(ball_files: dict[str, Path]) -> None:
    glb = trimesh.load(ball_files["mesh.glb"], force="mesh", process=False)
    assert glb.volume > 0 and glb.is_winding_consistent
    assert glb.visual.kind == "texture"
    mat = glb.visual.material
    assert isinstance(mat, trimesh.visual.material.PBRMaterial)
    assert mat.metallicFactor == 0.0 and 0.8 <= mat.roughnessFactor <= 0.9
    assert mat.baseColorTexture.size == (256, 256)
    rgb = np.asarray(glb.visual.to_color().vertex_colors)[:, :3].astype(float) / 255  # the texture at each UV
    sides_are_red_and_blue(glb.vertices, rgb)
    # the stored normals agree with the winding
    vn = glb.vertex_normals[glb.faces].mean(1)
    assert (np.einsum("ij,ij->i", glb.face_normals, vn) > 0).mean() > 0.999


def test_obj_mtl_png_reload_with_texture(ball_files: dict[str, Path]) -> None:
    text = ball_files["mesh.obj"].read_text()
    assert "mtllib mesh.mtl" in text and "\nvt " in text and "\nvn " in text
    assert not any(len(line.split()) > 4 for line in text.splitlines() if line.startswith("v ")), "no v x y z r g b"
    mtl = ball_files["mesh.mtl"].read_text()
    assert "map_Kd mesh.png" in mtl
    obj = trimesh.load(ball_files["mesh.obj"], force="mesh", process=False)
    assert obj.visual.kind == "texture" and obj.visual.material.image is not None
    assert obj.volume > 0
    rgb = np.asarray(obj.visual.to_color().vertex_colors)[:, :3].astype(float) / 255
    sides_are_red_and_blue(obj.vertices, rgb)


def test_ply_and_stl_load_back(ball_files: dict[str, Path], ball_mesh: trimesh.Trimesh) -> None:
    ply = trimesh.load(ball_files["mesh.ply"], process=False)
    assert len(ply.faces) == len(ball_mesh.faces) and ply.volume > 0
    colors = np.asarray(ply.visual.vertex_colors)[:, :3]
    assert np.array_equal(colors, ball_mesh.visual.vertex_colors[:, :3])
    stl = trimesh.load(ball_files["mesh.stl"])
    assert stl.is_watertight and stl.volume > 0
    assert abs(stl.volume - ball_mesh.volume) < 1e-6


def test_unknown_format_raises(ball_mesh, tmp_path) -> None:
    with pytest.raises(ValueError, match="fbx"):
        save_mesh(ball_mesh, tmp_path, formats=("fbx",))
    assert list(save_mesh(ball_mesh, tmp_path / "sub", formats=("ply",))) == ["mesh.ply"]


def test_glb_passes_khronos_validator(ball_files, web_node_modules) -> None:
    out = subprocess.run(
        ["node", str(ROOT / "web" / "tools" / "validate_gltf.mjs"), str(ball_files["mesh.glb"])],
        capture_output=True, text=True, cwd=ROOT / "web",
    )
    report = json.loads(out.stdout.splitlines()[0])
    assert (report["errors"], report["warnings"]) == (0, 0), report["messages"]
    assert out.returncode == 0
    assert report["info"]["materialCount"] == 1 and report["info"]["hasTextures"]


def test_empty_field_raises() -> None:
    with pytest.raises(EmptyMeshError):
        extract_mesh(VoxelField(8, 3), threshold=5.0)


def test_export_asset_writes_everything_at_display_size(ball, tmp_path) -> None:
    config = SJCConfig(render_size=16, video_frames=4, display_size=64, target_faces=2000, texture_size=128,
                       cam_radius=2.0, step_ratio=1.0)
    res = export_asset(ball, config, tmp_path, decode=None, outputs=("video", "mesh"), mesh_formats=("glb", "stl"))
    assert set(res.files) == {"turntable.mp4", "thumbnail.png", "mesh.glb", "mesh.stl"} and not res.warnings
    thumb = np.asarray(Image.open(res.files["thumbnail.png"]))
    assert thumb.shape == (64, 64, 3)
    centre = thumb[24:40, 24:40].reshape(-1, 3).astype(int)
    # the ball fills the middle: red, blue, or (where the halves meet, their colours averaged) between them
    assert ((centre[:, 0] + centre[:, 2] > 200) & (centre[:, 1] < 60)).all(), "red, blue or purple, nothing else"
    with av.open(str(res.files["turntable.mp4"])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    assert len(frames) == 4 and frames[0].shape == (64, 128, 3), "RGB beside depth, each 64 px high"
    glb = trimesh.load(res.files["mesh.glb"], force="mesh")
    assert len(glb.faces) <= 2000 and glb.volume > 0


def test_export_asset_without_surface_warns(tmp_path) -> None:
    config = SJCConfig(render_size=16, video_frames=2, display_size=32)
    res = export_asset(VoxelField(8, 3), config, tmp_path, outputs=("mesh", "previews"))
    assert set(res.files) == {"thumbnail.png"}, "the mesh is skipped, the rest is written"
    assert len(res.warnings) == 1 and "mesh skipped" in res.warnings[0]


def test_crop_to_content_renders_the_same() -> None:
    field = two_color_ball(32)
    with torch.no_grad():
        field.density[0][(field.grid_points() - torch.tensor([0.8, 0.8, 0.8])).norm(dim=-1) < 0.1] = -30.0
    crop = crop_to_content(field)
    assert crop.grid_size < field.grid_size and crop.bbox < field.bbox
    cam = spherical_camera(30.0, 20.0, 2.0, 50.0, 48)
    with torch.no_grad():
        a, b = render_image(field, cam, 0.5), render_image(crop, cam, 0.5)
    assert b.n_samples < a.n_samples / 2, "fewer samples marched"
    # the same picture up to the samples' phase along each ray (silhouette pixels of a step density differ a bit)
    assert (a.opacity - b.opacity).abs().mean() < 0.005 and (a.opacity - b.opacity).abs().max() < 0.15
    assert (a.image - b.image).abs().mean() < 0.01
    assert crop_to_content(VoxelField(8, 3)).grid_size == 8, "nothing to crop: the field itself"


def test_crop_to_content_with_other_features() -> None:
    field = two_color_ball(32)
    feats = torch.rand_like(field.features.detach())
    crop = crop_to_content(field, features=feats)
    lo = (field.grid_size - crop.grid_size) // 2
    assert lo > 0
    sl = slice(lo, field.grid_size - lo)
    assert torch.equal(crop.features.detach(), feats[:, sl, sl, sl])
    assert torch.equal(crop.density.detach(), field.density.detach()[:, sl, sl, sl])
    whole = VoxelField(8, 3)  # nothing to crop: an uncropped copy, the field itself untouched
    other = torch.full_like(whole.features.detach(), 0.5)
    copy = crop_to_content(whole, features=other)
    assert copy is not whole and copy.grid_size == 8 and torch.equal(copy.features.detach(), other)
    assert not torch.equal(whole.features.detach(), other)
    with pytest.raises(ValueError, match="shape"):
        crop_to_content(field, features=feats[:, 1:])


def test_renders_show_the_mesh_colours_not_the_mottle(tmp_path) -> None:
    """The thumbnail and the turntable of a mottled ball show its colours evened out (those its mesh is coloured
    with), not the voxel-wide mottle: at most half the raw features' pixel-to-pixel speckle."""
    from scipy import ndimage

    from sjc_engine.export.asset import resolved_size, write_thumbnail

    torch.manual_seed(0)
    field = two_color_ball(32)
    with torch.no_grad():
        field.features.mul_(0.5).add_(0.5 * torch.randn_like(field.features))  # voxel-wide mottle, little clipped
    config = SJCConfig(render_size=16, video_frames=2, display_size=64, target_faces=2000, texture_size=128,
                       cam_radius=2.0, step_ratio=0.5, test_fov_deg=50.0)
    res = export_asset(field, config, tmp_path, outputs=("video",))
    thumb = np.asarray(Image.open(res.files["thumbnail.png"])).astype(float) / 255  # (64, 64, 3)
    with av.open(str(res.files["turntable.mp4"])) as c:
        frame = next(c.decode(c.streams.video[0])).to_ndarray(format="rgb24").astype(float)[:, :64] / 255
    # the poster the raw, mottled features would give, made the same way
    view = crop_to_content(field, min_density=0.5 * config.mesh_threshold, margin=3)
    size = min(64, resolved_size(field, config.cam_radius, config.test_fov_deg))  # the export's render size
    raw = np.asarray(Image.open(write_thumbnail(view, pixel_decode, config, size, tmp_path / "raw.png",
                                                out_height=64))).astype(float) / 255

    def speckle(img: np.ndarray) -> float:
        """Mean distance of the object's pixels (off the white background) from their neighbourhood's mean."""
        inner = ndimage.binary_erosion(np.abs(img - 1.0).max(-1) > 0.2, iterations=3)
        assert inner.sum() > 200
        local = np.stack([ndimage.gaussian_filter(img[..., c], 1.5) for c in range(3)], -1)
        return float(np.abs(img - local)[inner].mean())

    assert speckle(thumb) < speckle(raw) / 2 and speckle(frame) < speckle(raw) / 2  # measured: 0.21x, 0.29x


def test_turntable_mp4_loads_back(tmp_path) -> None:
    field = two_color_ball(16)
    frames = np.stack(list(iter_turntable(field, None, n_frames=6, size=24, radius=1.5, fov_deg=60.0,
                                          elevation_deg=20.0)))
    assert frames.shape == (6, 24, 48, 3) and frames.dtype == np.uint8
    left, right = frames[0, :, :24], frames[0, :, 24:]
    assert left[12, 12, 0] > 150 or left[12, 12, 2] > 150  # the ball's centre pixel is red or blue
    assert right[0, 0].sum() == 0 and right[12, 12].sum() > 0  # depth: black background, coloured object
    with Mp4Writer(tmp_path / "turntable.mp4", fps=10) as writer:
        for frame in frames:
            writer.write(frame)
    path = writer.path
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


def test_mp4_writer_leaves_no_partial_file(tmp_path) -> None:
    """A turntable that fails half way, or a writer given no frame, leaves no file behind; bad frames are refused."""
    frame = np.zeros((8, 10, 3), dtype=np.uint8)
    path = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="render failed"):
        with Mp4Writer(path) as writer:
            writer.write(frame)
            raise RuntimeError("render failed")
    assert not path.exists()
    with pytest.raises(ValueError, match="at least one frame"):
        with Mp4Writer(path):
            pass
    assert not path.exists()
    with Mp4Writer(tmp_path / "odd.mp4") as writer:
        with pytest.raises(ValueError, match="uint8"):
            writer.write(frame.astype(np.float32))
        writer.write(np.zeros((7, 9, 3), dtype=np.uint8))  # odd sides: padded to even
    with av.open(str(writer.path)) as container:
        assert [f.to_ndarray(format="rgb24").shape for f in container.decode(video=0)] == [(8, 10, 3)]


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
    assert np.array_equal(np.asarray(Image.open(path)), grid)


def test_export_asset_for_a_latent_model(tiny_sd_dir, tmp_path) -> None:
    """Latent features: the VAE decodes the renders (x2 for the tiny one), colours come from depth-tested views."""
    from sjc_engine.denoisers.loader import load_denoiser

    den = load_denoiser(str(tiny_sd_dir), device="cpu", half=False)
    assert den.is_latent
    field = VoxelField(24, 4)
    with torch.no_grad():
        field.density.copy_(torch.where(field.grid_points().norm(dim=-1) < 0.5, 60.0, -30.0)[None])
    config = SJCConfig(render_size=16, video_frames=2, display_size=48, target_faces=2000, texture_size=128,
                       cam_radius=2.0, step_ratio=1.0)
    res = export_asset(field, config, tmp_path, decode=den.decode, is_latent=True, outputs=("video", "mesh"),
                       mesh_formats=("glb", "ply"))
    assert set(res.files) == {"turntable.mp4", "thumbnail.png", "mesh.glb", "mesh.ply"}
    with av.open(str(res.files["turntable.mp4"])) as c:
        frame = next(c.decode(c.streams.video[0])).to_ndarray(format="rgb24")
    assert frame.shape == (48, 96, 3), "24 px renders decoded to 48"
    glb = trimesh.load(res.files["mesh.glb"], force="mesh")
    assert glb.visual.kind == "texture" and glb.volume > 0
    ply = trimesh.load(res.files["mesh.ply"])
    assert len(np.unique(np.asarray(ply.visual.vertex_colors)[:, :3], axis=0)) > 10, "colours from the decoded views"
