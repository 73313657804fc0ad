"""The mesh of a field built from a known shape: one closed piece, facing outward, matching the shape."""

import numpy as np
import pytest
import torch
import trimesh
from scipy import ndimage

from sjc_engine.export.mesh import extract_mesh
from sjc_engine.export.quality import chamfer, mesh_iou
from sjc_engine.export.surface import EmptyMeshError, decimate, extract_surface, smooth_density
from sjc_engine.field import VoxelField

THRESHOLD = 5.0
SPHERE_R = 0.45
TORUS_R, TORUS_r = 0.45, 0.18


def sdf_sphere(p: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p, axis=-1) - SPHERE_R


def sdf_torus(p: np.ndarray) -> np.ndarray:
    q = np.stack([np.linalg.norm(p[..., [0, 2]], axis=-1) - TORUS_R, p[..., 1]], axis=-1)
    return np.linalg.norm(q, axis=-1) - TORUS_r


def analytic_field(sdf, n: int = 48, floaters: bool = True) -> VoxelField:
    """A field whose raw density is a steep ramp of -sdf (density 5 within a tenth of a voxel of the surface),
    features orange (pixel colours in [-1, 1]); optionally with single-voxel floaters and a separate small lump."""
    field = VoxelField(n, 3, density_shift=-5.0)
    with torch.no_grad():
        p = field.grid_points().numpy()  # (n, n, n, 3)
        raw = np.clip(-sdf(p) / field.voxel_size * 20.0 + 5.0 + np.log(np.expm1(THRESHOLD)), -30, 60)  # 5.0 undoes the shift
        if floaters:
            for c in ([0.8, 0.8, 0.8], [-0.8, 0.7, 0.1], [0.1, -0.85, -0.8]):  # one node each: single-voxel floaters
                i = np.round((np.array(c) + 1) / 2 * (n - 1)).astype(int)
                raw[i[0], i[1], i[2]] = 60.0
            lump = np.linalg.norm(p - np.array([0.0, 0.75, 0.0]), axis=-1) < 0.07  # a small separate lump
            raw[lump] = 60.0
        field.density.copy_(torch.from_numpy(raw).float()[None])
        field.features.copy_(torch.tensor([0.9, 0.1, -0.9]).view(3, 1, 1, 1).expand(3, n, n, n))  # orange
    return field


def face_normals_agree(mesh: trimesh.Trimesh) -> float:
    """Fraction of faces whose winding normal points the same way as their vertices' mean normal."""
    vn = mesh.vertex_normals[mesh.faces].mean(axis=1)  # (F, 3)
    return float((np.einsum("ij,ij->i", mesh.face_normals, vn) > 0).mean())


@pytest.mark.parametrize("name,sdf", [("sphere", sdf_sphere), ("torus", sdf_torus)])
def test_surface_of_known_shape(name, sdf) -> None:
    mesh = extract_surface(analytic_field(sdf), THRESHOLD, target_faces=20_000)
    assert len(mesh.split(only_watertight=False)) == 1, "floaters and the lump are gone: one piece"
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0, "counter-clockwise seen from outside: positive signed volume"
    assert face_normals_agree(mesh) == 1.0
    # outward: the normal at each vertex points away from the shape (the SDF grows along it)
    v, nrm = mesh.vertices, mesh.vertex_normals
    assert (sdf(v + 0.02 * nrm) > sdf(v - 0.02 * nrm)).mean() > 0.99
    assert len(mesh.faces) <= 20_000
    iou = mesh_iou(mesh, sdf, pitch=0.01)
    assert iou >= 0.9, f"{name}: IoU {iou:.3f}"
    assert chamfer(mesh, sdf, n=5000) < 0.01, "within a fifth of a voxel of the true surface on average"
    genus = {"sphere": 0, "torus": 1}[name]
    assert mesh.euler_number == 2 - 2 * genus, "the torus keeps its hole, the sphere has none"


def test_face_budget_is_kept() -> None:
    field = analytic_field(sdf_torus, n=64, floaters=False)
    for budget in (2_000, 8_000):
        mesh = extract_surface(field, THRESHOLD, target_faces=budget)
        assert 0.5 * budget <= len(mesh.faces) <= budget, (budget, len(mesh.faces))
        assert mesh.is_watertight and mesh.volume > 0
        assert mesh_iou(mesh, sdf_torus, pitch=0.01) >= 0.85


def test_decimate_keeps_small_meshes_and_rejects_tiny_budgets() -> None:
    box = trimesh.creation.box()
    assert decimate(box, 100) is box
    with pytest.raises(ValueError):
        decimate(box, 2)


def test_vertex_colors_are_the_field_colour() -> None:
    mesh = extract_mesh(analytic_field(sdf_sphere), THRESHOLD, decode=None, target_faces=5_000)
    rgb = mesh.visual.vertex_colors[:, :3].astype(float) / 255  # features (0.9, 0.1, -0.9) -> (0.95, 0.55, 0.05)
    assert np.allclose(rgb.mean(0), [0.95, 0.55, 0.05], atol=0.03), rgb.mean(0)
    assert rgb.std(0).max() < 0.02


def test_empty_field_raises() -> None:
    with pytest.raises(EmptyMeshError):
        extract_surface(VoxelField(8, 3), THRESHOLD)


def test_quality_measures_on_a_known_mesh() -> None:
    ball = trimesh.creation.icosphere(subdivisions=5, radius=SPHERE_R)
    assert mesh_iou(ball, sdf_sphere, pitch=0.01) > 0.95
    assert chamfer(ball, sdf_sphere, n=5000) < 0.003
    moved = ball.copy()
    moved.apply_translation([0.2, 0.0, 0.0])
    assert 0.4 < mesh_iou(moved, sdf_sphere, pitch=0.01) < 0.7  # two balls of radius 0.45, centres 0.2 apart: 0.506
    assert chamfer(moved, sdf_sphere, n=5000) > 0.05


def test_smooth_density_keeps_the_count_above_the_level() -> None:
    rng = np.random.default_rng(0)
    p = np.stack(np.meshgrid(*[np.linspace(-1, 1, 40)] * 3, indexing="ij"), -1)  # (40, 40, 40, 3)
    faint = np.where(np.linalg.norm(p, axis=-1) < 0.5, 6.0, 0.0) + rng.uniform(0, 2, (40, 40, 40))  # just over 5
    dense = faint.astype(np.float32)
    smoothed = smooth_density(dense, THRESHOLD, 1.5)
    assert smoothed.dtype == np.float32 and not np.array_equal(smoothed, dense)
    assert abs(int((smoothed > THRESHOLD).sum()) - int((dense > THRESHOLD).sum())) <= 1
    plain = ndimage.gaussian_filter(dense, 1.5, mode="nearest")  # a plain blur shrinks a faint object
    assert (plain > THRESHOLD).sum() < 0.9 * (dense > THRESHOLD).sum()
    assert smooth_density(dense, THRESHOLD, 0.0) is dense
    specks = dense.copy()
    specks[tuple(rng.integers(0, 40, (3, 200)))] = 50.0  # 200 single-node specks, most outside the ball
    ball = int((specks[np.linalg.norm(p, axis=-1) < 0.5] > THRESHOLD).sum())
    assert abs(int((smooth_density(specks, THRESHOLD, 1.5) > THRESHOLD).sum()) - ball) <= 1 + 0.01 * ball
    empty = np.zeros((8, 8, 8), np.float32)
    assert smooth_density(empty, THRESHOLD, 1.0) is empty


def test_blur_takes_the_bumps_off_a_noisy_sphere() -> None:
    field = analytic_field(sdf_sphere, floaters=False)
    rng = np.random.default_rng(0)
    bumps = ndimage.gaussian_filter(rng.standard_normal(field.density.shape[1:]), 1.0)  # a voxel or two wide
    with torch.no_grad():
        field.density[0] += torch.from_numpy(20.0 * bumps / bumps.std()).float()  # the surface moved by ~a voxel
    meshes = {blur: extract_surface(field, THRESHOLD, target_faces=20_000, blur=blur) for blur in (0.0, 1.0)}
    assert all(m.is_watertight for m in meshes.values())
    assert meshes[1.0].euler_number == 2  # a sphere, no tunnels between bumps
    radius = {blur: np.linalg.norm(m.vertices, axis=1) for blur, m in meshes.items()}  # (V,) each
    assert radius[1.0].std() < 0.6 * radius[0.0].std(), (radius[1.0].std(), radius[0.0].std())
    assert abs(meshes[1.0].volume / meshes[0.0].volume - 1) < 0.05  # the same size
    assert chamfer(meshes[1.0], sdf_sphere, n=5000) < chamfer(meshes[0.0], sdf_sphere, n=5000)
