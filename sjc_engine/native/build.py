"""Build, cache and load the C kernels (``march.c``, ``rays.c``, ``trilinear.c``, ``composite.c``, ``adamax.c``,
``smoothness.c``, ``background.c`` beside this file) with ``ctypes``.

The sources are compiled once with the system C compiler (``$CC``, default ``cc``) into one shared library,
with AVX2/FMA code where the CPU has it (falling back to plain flags if that build fails), and cached in
``$SJC_NATIVE_CACHE`` (default ``~/.cache/sjc_engine``) under a name keyed by a hash of the sources, the
compiler, the flags and the machine: an edited ``.c`` file rebuilds. A library already in the cache loads
without a compiler (the worker image builds it at image build time). ``SJC_NATIVE=0`` turns the kernels off;
without a compiler and no cached library, or if every build fails, they are off with one warning and callers
use their torch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

# in this folder, compiled together into one library
SOURCES = ("trilinear.c", "composite.c", "adamax.c", "march.c", "rays.c", "smoothness.c", "background.c")
HEADERS = ("corner.h", "log1p.h")  # included by the sources: part of the cache key
NATIVE_DTYPES = {torch.float32: ("float", "f32"), torch.float64: ("double", "f64")}  # dtype -> (C type, suffix)
BASE_FLAGS = ["-O3", "-shared", "-fPIC", "-fno-math-errno"]  # no kernel reads errno: sqrt is one instruction
_X86_V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}  # /proc/cpuinfo names
SOURCE_DIR = Path(__file__).resolve().parent

_native_state: dict[str, Any] = {}  # "lib": the loaded library or None, decided once per process
_native_lock = threading.Lock()


def arch_flags() -> list[list[str]]:
    """Extra compiler flags to try, best first: AVX2/FMA code (about 25% faster here) where the CPU has it."""
    if platform.machine() == "x86_64":
        try:
            cpu = set(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            cpu = set()
        if _X86_V3 <= cpu:
            return [["-march=x86-64-v3"], []]
    return [[]]


def _declare(lib: ctypes.CDLL) -> None:
    """Set the argument and return types of every kernel (see the signatures in the .c files)."""
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    for ty, suf in NATIVE_DTYPES.values():
        fl = ctypes.c_float if ty == "float" else ctypes.c_double
        getattr(lib, f"tri_fwd_{suf}").argtypes = [vp, vp, vp, i64, i64, i64, i64, vp, i64, vp, vp, i64, i64, fl, fl, fl,
                                                    fl, vp]
        getattr(lib, f"tri_bwd_{suf}").argtypes = [vp, vp, vp, i64, i64, i64, i64, vp, i64, i64, vp]
        getattr(lib, f"comp_fwd_{suf}").argtypes = [vp, vp, i64, vp, fl, vp, i64, i64, i64, fl, vp, vp, vp, vp]
        getattr(lib, f"comp_bwd_{suf}").argtypes = [vp, vp, i64, vp, fl, vp, i64, i64, i64, fl] + [vp] * 7
        getattr(lib, f"adamax_{suf}").argtypes = [vp, vp, vp, vp, i64, i64, fl, fl, fl, fl]
        getattr(lib, f"march_fwd_{suf}").argtypes = [vp, vp, i64, i64, vp, fl] + [vp] * 8
        getattr(lib, f"march_bwd_{suf}").argtypes = [vp, vp, i64, i64, vp, fl] + [vp] * 8 + [i64, vp, vp, vp]
        getattr(lib, f"march_bwd_{suf}").restype = ctypes.c_int
        getattr(lib, f"march_order_{suf}").argtypes = [vp, i64, vp]
        getattr(lib, f"march_order_{suf}").restype = ctypes.c_int
        getattr(lib, f"march_range_{suf}").argtypes = [vp, vp, vp, i64, vp, i64, i64, i64, vp, vp]
        getattr(lib, f"march_range_{suf}").restype = None
        getattr(lib, f"ray_setup_{suf}").argtypes = [vp, vp, i64, fl, fl, fl, fl, vp, vp, vp, vp, vp]
        getattr(lib, f"ray_setup_{suf}").restype = i64
        getattr(lib, f"smooth_fwd_{suf}").argtypes = [vp, i64, i64, i64, i64, vp]
        getattr(lib, f"smooth_fwd_{suf}").restype = ctypes.c_double
        getattr(lib, f"wsmooth_fwd_{suf}").argtypes = [vp, vp, i64, i64, i64, i64, vp]
        getattr(lib, f"wsmooth_fwd_{suf}").restype = ctypes.c_double
        getattr(lib, f"bg_fwd_{suf}").argtypes = [vp, i64, vp, i64, i64, i64, vp]
        getattr(lib, f"bg_bwd_{suf}").argtypes = [vp, i64, i64, i64, i64, vp, vp, vp]
        for name in ("tri_fwd", "tri_bwd", "comp_fwd", "comp_bwd", "adamax", "march_fwd", "bg_fwd", "bg_bwd"):
            getattr(lib, f"{name}_{suf}").restype = None
    lib.adamax_hw_fma.argtypes, lib.adamax_hw_fma.restype = [], ctypes.c_int
    lib.march_max_channels.argtypes, lib.march_max_channels.restype = [], ctypes.c_int
    lib.march_aos.argtypes, lib.march_aos.restype = [], ctypes.c_int
    lib.march_pack.argtypes, lib.march_pack.restype = [vp, vp, i64, vp, vp], None
    lib.march_unpack.argtypes, lib.march_unpack.restype = [vp, vp, i64, vp, vp, vp], None


def build_native() -> ctypes.CDLL | None:
    """Build (unless cached on disk) and load the C kernels; None where they are off or that fails."""
    if os.environ.get("SJC_NATIVE", "1") == "0":
        return None
    cc = os.environ.get("CC", "cc")
    sources = [SOURCE_DIR / name for name in SOURCES]
    text = "".join(f"{p.name}\n{p.read_text()}" for p in [*sources, *(SOURCE_DIR / h for h in HEADERS)])
    lib, errors = None, []
    for arch in arch_flags():
        flags = BASE_FLAGS + arch
        key = hashlib.sha256(f"{text}{cc}{flags}{platform.machine()}".encode()).hexdigest()[:16]
        try:
            cache = Path(os.environ.get("SJC_NATIVE_CACHE") or Path.home() / ".cache" / "sjc_engine")
            so = cache / f"sjc-kernels-{key}.so"
            if not so.exists():
                if shutil.which(cc) is None:  # a library built beforehand (an image's) loads without one
                    raise FileNotFoundError(f"no C compiler ({cc!r})")
                cache.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=cache) as tmp:
                    out = Path(tmp) / "sjc-kernels.so"
                    cmd = [cc, *flags, "-o", str(out), *map(str, sources), "-lm"]
                    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
                    os.replace(out, so)  # atomic: concurrent builders each write their own file
            lib = ctypes.CDLL(str(so))
            break
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            detail = (getattr(e, "stderr", b"") or b"").decode(errors="replace")[:500]
            errors.append(f"{' '.join(flags)}: {e} {detail}")
    if lib is None:
        warnings.warn(f"building the C kernels failed ({'; '.join(errors)}): rendering, trilinear lookups, "
                      "compositing and Adamax use the slower torch path", RuntimeWarning)
        return None
    _declare(lib)
    return lib


def native_lib() -> ctypes.CDLL | None:
    """The loaded C kernels, or None where they are off or could not be built (decided once per process)."""
    try:
        return _native_state["lib"]  # decided: no lock (a hot path asks on every render)
    except KeyError:
        pass
    with _native_lock:
        if "lib" not in _native_state:
            _native_state["lib"] = build_native()
        return _native_state["lib"]
