"""Seconds :func:`sjc_engine.export.asset.export_asset` takes for one saved field: this tree, or this tree against
another checkout (A/B), with the time of each phase.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_export_time.py FIELD.pt [--rounds 5]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_export_time.py FIELD.pt --against /tmp/wt_base [--rounds 7]

``FIELD.pt`` is a ``field.pt`` written by ``sjc generate`` (its saved config gives the export settings:
display size, video frames, face budget, texture size). Each tree's export runs in its own long-lived Python
process (``PYTHONPATH`` = that tree, so the other checkout's ``sjc_engine`` is imported, warm after a first
untimed export, as in a worker that exports right after optimising); with ``--against`` the rounds alternate
A B B A A B ... so that a machine whose load drifts (shared, noisy) weighs on both alike. Printed: each
round's wall seconds and CPU seconds (user + system, all threads: steadier than wall time on a busy
machine), the medians, each phase's median seconds, the phases of the last round (start and end in
seconds from the export's start, and the thread: phases on different threads overlap) and the load average
before and after.

Phases are timed by wrapping the functions the exporter calls, where the tree has them: the crop, the
turntable render and the MP4 writing (``render_turntable`` + ``write_mp4`` in older trees; ``Mp4Writer``, which
renders and encodes frame by frame, in newer ones), the thumbnail, the surface with its colours
(``extract_mesh``), the UV atlas (``unwrap``), the texture bake and each mesh file.
(Until this version the script compared the exporter of an older commit, ``--old``; see
``git show 8c2feb9:bench/bench_export_time.py``.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PHASES = [  # (module, attribute, phase name)
    ("sjc_engine.export.asset", "crop_to_content", "crop"),
    ("sjc_engine.export.video", "render_turntable", "turntable render"),
    ("sjc_engine.export.video", "write_mp4", "mp4 write"),
    ("sjc_engine.export.asset", "write_thumbnail", "thumbnail"),
    ("sjc_engine.export.mesh", "extract_mesh", "surface + colours"),
    ("sjc_engine.export.mesh", "unwrap", "uv atlas (xatlas)"),
    ("sjc_engine.export.mesh", "bake_texture", "texture bake"),
    ("sjc_engine.export.mesh", "write_glb", "glb"),
    ("sjc_engine.export.mesh", "write_obj", "obj+mtl+png"),
    ("sjc_engine.export.mesh", "write_ply", "ply"),
    ("sjc_engine.export.mesh", "write_stl", "stl"),
]


def _instrument(log: list) -> None:
    """Wrap the exporter's functions (where they exist) so that each call appends (phase, start, end, thread)."""
    import importlib

    def wrap(fn, name):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                log.append((name, t0, time.perf_counter(), threading.current_thread().name))
        return timed

    for mod_name, attr, name in PHASES:
        mod = importlib.import_module(mod_name)
        if hasattr(mod, attr):
            setattr(mod, attr, wrap(getattr(mod, attr), name))
    video = importlib.import_module("sjc_engine.export.video")
    writer = getattr(video, "Mp4Writer", None)
    if writer is not None:  # newer trees: frames rendered and encoded one by one, from open to close
        init, close = writer.__init__, writer.close

        def timed_init(self, *a, **k):
            self._bench_t0 = time.perf_counter()
            init(self, *a, **k)

        def timed_close(self):
            try:
                return close(self)
            finally:
                if getattr(self, "_bench_t0", None) is not None:
                    log.append(("turntable render + mp4", self._bench_t0, time.perf_counter(),
                                threading.current_thread().name))
                    self._bench_t0 = None

        writer.__init__, writer.close = timed_init, timed_close


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far, every thread (the renderer's, the encoder's) included."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def serve(field_path: Path) -> None:
    """Worker: load the field, export once untimed, then one timed export per line read from stdin."""
    sys.path.insert(0, os.environ.get("PYTHONPATH", str(ROOT)).split(os.pathsep)[0])
    import torch

    from sjc_engine.config import SJCConfig
    from sjc_engine.export.asset import export_asset
    from sjc_engine.field import VoxelField

    field = VoxelField.load(field_path)
    saved = dict(field.extra.get("config", {}))
    cfg = SJCConfig.from_dict({k: v for k, v in saved.items() if k in SJCConfig.__dataclass_fields__})
    log: list = []
    _instrument(log)
    with tempfile.TemporaryDirectory() as tmp:
        export_asset(field, cfg, Path(tmp) / "warm")
        print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
        for i, _ in enumerate(sys.stdin):
            log.clear()
            c0 = _cpu_seconds()
            t0 = time.perf_counter()
            export_asset(field, cfg, Path(tmp) / f"r{i}")
            total = time.perf_counter() - t0
            phases = [(n, a - t0, b - t0, th) for n, a, b, th in log]
            print(json.dumps({"total": total, "cpu": _cpu_seconds() - c0, "phases": phases}), flush=True)


class Worker:
    def __init__(self, tree: Path, field: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree))
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.tree = tree
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(field), "--serve"], env=env,
                                     cwd=str(tree), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())

    def run(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def print_phases(label: str, res: dict) -> None:
    print(f"  {label}: {res['total']:.2f} s; phases (start-end s, thread):")
    for name, a, b, th in sorted(res["phases"], key=lambda p: p[1]):
        print(f"    {name:24s} {b - a:6.3f} s   [{a:5.2f} - {b:5.2f}]  {th}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("field", type=Path, help="a field.pt written by sjc generate")
    p.add_argument("--against", type=Path, help="another checkout (its export_asset is B; this tree is A)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve:
        serve(a.field)
        return
    field = a.field.resolve()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    trees = {"A (this tree)": ROOT}
    if a.against:
        trees[f"B ({a.against})"] = a.against.resolve()
    workers = {k: Worker(t, field) for k, t in trees.items()}
    times: dict[str, list[float]] = {k: [] for k in workers}
    cpus: dict[str, list[float]] = {k: [] for k in workers}
    last: dict[str, dict] = {}
    phase_times: dict[str, dict[str, list[float]]] = {k: {} for k in workers}
    keys = list(workers)
    for r in range(a.rounds):
        order = keys if r % 2 == 0 else keys[::-1]
        line = []
        for k in order:
            res = workers[k].run()
            times[k].append(res["total"])
            cpus[k].append(res["cpu"])
            last[k] = res
            sums: dict[str, float] = {}
            for name, t0, t1, _ in res["phases"]:
                sums[name] = sums.get(name, 0.0) + t1 - t0
            for name, v in sums.items():
                phase_times[k].setdefault(name, []).append(v)
            line.append(f"{k.split()[0]} {res['total']:.2f} s (cpu {res['cpu']:.2f} s)")
        print(f"round {r + 1}: " + ", ".join(line) + f"   load {os.getloadavg()[0]:.2f}", flush=True)
    for w in workers.values():
        w.close()
    for k in keys:
        print(f"{k}: median {statistics.median(times[k]):.2f} s, min {min(times[k]):.2f} s over {len(times[k])} rounds,"
              f" CPU median {statistics.median(cpus[k]):.2f} s (torch threads {workers[k].info['threads']})")
    if len(keys) == 2:
        ma, mb = (statistics.median(times[k]) for k in keys)
        print(f"A - B: {ma - mb:+.2f} s ({ma / mb:.2f}x)")
    for k in keys:
        meds = ", ".join(f"{n} {statistics.median(v):.2f}" for n, v in phase_times[k].items())
        print(f"{k.split()[0]} phase medians (s): {meds}")
    for k in keys:
        print_phases(k, last[k])
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
