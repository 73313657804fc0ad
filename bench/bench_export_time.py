"""Seconds the export adds per asset: the exporter of an older commit vs today's, on one field, in one process.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_export_time.py FIELD.pt [--old 904d93f] [--repeat 2]

The old ``sjc_engine/export/mesh.py`` and ``video.py`` are taken from ``git show <old>:...`` into a temporary
folder; the old export is its turntable at ``render_size`` plus its mesh in glb/ply/obj; the new one is
:func:`sjc_engine.export.asset.export_asset` (turntable and thumbnail at display size, the mesh in every format).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sjc_engine.config import SJCConfig  # noqa: E402
from sjc_engine.export.asset import TURNTABLE_ELEVATION_DEG, export_asset  # noqa: E402
from sjc_engine.field import VoxelField  # noqa: E402


def old_modules(commit: str, folder: Path) -> tuple:
    for name in ("mesh", "video"):
        src = subprocess.run(["git", "show", f"{commit}:sjc_engine/export/{name}.py"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        src = src.replace("from sjc_engine.export.video import", "from old_video import")
        (folder / f"old_{name}.py").write_text(src)
    sys.path.insert(0, str(folder))
    import old_mesh
    import old_video

    return old_mesh, old_video


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("field", type=Path, help="a field.pt written by sjc generate")
    p.add_argument("--old", default="904d93f", help="the commit of the old exporter")
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args()
    field = VoxelField.load(a.field)
    saved = dict(field.extra.get("config", {}))
    cfg = SJCConfig.from_dict({k: v for k, v in saved.items() if k in SJCConfig.__dataclass_fields__})
    with tempfile.TemporaryDirectory() as mods:
        old_mesh, old_video = old_modules(a.old, Path(mods))
        for _ in range(a.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                frames = old_video.render_turntable(field, None, n_frames=cfg.video_frames, size=cfg.render_size,
                                                    radius=cfg.cam_radius, fov_deg=cfg.test_fov_deg,
                                                    elevation_deg=TURNTABLE_ELEVATION_DEG)
                old_video.write_mp4(frames, Path(tmp) / "turntable.mp4")
                old_mesh.save_mesh(old_mesh.extract_mesh(field, cfg.mesh_threshold, None), tmp)
                t1 = time.perf_counter()
                export_asset(field, cfg, Path(tmp) / "new", outputs=("video", "mesh", "previews"))
                t2 = time.perf_counter()
            print(f"old {t1 - t0:.1f} s, new {t2 - t1:.1f} s, added {t2 - t1 - (t1 - t0):+.1f} s", flush=True)


if __name__ == "__main__":
    main()
