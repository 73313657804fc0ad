"""The voxel radiance field SJC optimises: a density grid and a feature grid over a box, plus a background.

Follows pals-ttic/sjc ``voxnerf/vox.py`` (``V_SD``): density ``(1, N, N, N)`` initialised to zeros, features
``(C, N, N, N)`` initialised from a standard normal, density activated *after* interpolation as
``softplus(raw * exp(d_scale) + shift)`` with a learnable scalar ``d_scale`` and ``shift = -1``, and a small
learnable background texture looked up by ray direction. Features are not squashed: the field renders straight
into the denoiser's space (SD latents or [-1, 1] pixels).

Grid convention: ``grid[..., i, j, k]`` holds the value at world point ``(x_i, y_j, z_k)`` with
``x_i = -bbox + 2 * bbox * i / (N - 1)`` (nodes on the box corners, like ``grid_sample(align_corners=True)``),
so ``density_grid()`` and ``occupancy()`` index as ``[x, y, z]``. Lookups are trilinear; the gather/scatter
kernels below replace ``F.grid_sample`` (3D), whose CPU backward is slow.

Two implementations of the same lookups (:func:`trilinear_rays`, :func:`trilinear_points`), both with an
analytic backward and the same values and gradients:

* native (CPU, float32/float64): small C kernels (``_NATIVE_SRC``; the renderer's compositing kernels live
  there too), compiled once with the system C compiler (``$CC``, default ``cc``; AVX2/FMA code where the CPU has
  it) into ``$SJC_NATIVE_CACHE`` (default ``~/.cache/sjc_engine``, keyed by a hash of source and flags) and
  called through ``ctypes``. Per sample they compute the cell and weights on the fly (no (P, 8) index/weight
  tensors) and gather (forward) or scatter (backward) every channel; consecutive samples of a ray in the same
  cell share one corner load (forward) and one scatter (backward). ``ctypes`` releases the GIL, so with more
  than one torch thread two Python threads split rays (forward) or channels (backward). ``SJC_NATIVE=0`` turns
  them off; without a compiler, or if the build fails, they are off with one warning.
* torch (any device; the fallback): :func:`trilinear_corners`, then ``F.embedding_bag`` over a channels-last
  table (one gather for every channel) and one ``scatter_add_`` per channel.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FORMAT_VERSION = 1


def corner_offsets(n: int) -> list[int]:
    """Flat offsets of a cell's 8 corners in an ``n^3`` grid, order ``(a, b, c)`` over x, y, z in {0, 1}."""
    return [a * n * n + b * n + c for a in (0, 1) for b in (0, 1) for c in (0, 1)]


_CHUNK = 32768  # points per block in trilinear_corners: keeps the (chunk, 8) outputs in cache while written


def trilinear_corners(u: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The 8 cell corners and trilinear weights of points given in voxel index coordinates.

    Args:
        u: (P, 3) coordinates in index units, ``u = (x + bbox) / (2 * bbox) * (n - 1)``, inside ``[0, n - 1]``.
        n: grid size per side.

    Returns:
        ``idx`` (P, 8) int32 flat indices ``(i * n + j) * n + k`` into an ``n^3`` grid, and ``w`` (P, 8) weights
        (rows sum to 1), corners in the order of :func:`corner_offsets`.

    The flat base index is computed in ``u``'s floating dtype (exact: integers below ``2^24``) and converted
    once; the (P, 8) outputs are filled block by block, so their strided writes stay in cache.
    """
    if n**3 >= 2**31:
        raise ValueError(f"grid_size {n} is too large for int32 indices")
    if u.dim() != 2 or u.shape[1] != 3:
        raise ValueError(f"u must be (P, 3), got {tuple(u.shape)}")
    u = u.detach()
    P = u.shape[0]
    exact_float = n**3 <= 2**24 or u.dtype == torch.float64
    offs = torch.tensor(corner_offsets(n), dtype=torch.int32, device=u.device)  # (8,)
    idx = torch.empty(P, 8, dtype=torch.int32, device=u.device)
    w = torch.empty(P, 8, dtype=u.dtype, device=u.device)
    chunk = _CHUNK if u.device.type == "cpu" else max(P, 1)
    for s in range(0, P, chunk):
        uc = u[s : s + chunk].T  # (3, c) planar view
        i0 = uc.floor().clamp_(0, n - 2)  # (3, c) cell's lower corner
        f = (uc - i0).clamp_(0.0, 1.0)  # (3, c) position inside the cell
        g = 1.0 - f
        if exact_float:
            base = ((i0[0] * n + i0[1]) * n + i0[2]).to(torch.int32)  # (c,)
        else:
            i0i = i0.to(torch.int32)
            base = (i0i[0] * n + i0i[1]) * n + i0i[2]
        torch.add(base[:, None], offs, out=idx[s : s + chunk])  # (c, 8)
        wc = w[s : s + chunk]  # (c, 8)
        for j, a in enumerate((g[0] * g[1], g[0] * f[1], f[0] * g[1], f[0] * f[1])):
            torch.mul(a, g[2], out=wc[:, 2 * j])
            torch.mul(a, f[2], out=wc[:, 2 * j + 1])
    return idx, w


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """Two worker threads, made anew in a forked child (a parent's pool has no threads there)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="sjc-trilinear"))
    return _POOL[1]


def _run(jobs: list[Any]) -> None:
    """Run the zero-argument callables ``jobs``; on two Python threads when torch may use more than one.

    torch kernels and ``ctypes`` calls release the GIL, and scatters are serial, so jobs on disjoint channels
    (or rays) run in parallel.
    """
    if len(jobs) > 1 and torch.get_num_threads() > 1:
        for f in [_pool().submit(j) for j in jobs]:
            f.result()
    else:
        for j in jobs:
            j()


_SPARSE_ROWS = 0.5  # scatter only the points with a non-zero gradient when fewer than this fraction have one


def _scatter_jobs(grad: Tensor, idx: Tensor, idx64: Tensor | None, w: Tensor, grad_out: Tensor) -> list[Any]:
    """Jobs doing ``grad[c, idx[p, k]] += w[p, k] * grad_out[p, c]`` for every channel ``c`` (grad (C, M)).

    Points whose gradient row is all zero add nothing and are skipped when they are the majority (features
    of samples below the weight threshold). ``idx64`` is ``idx`` as int64 (``scatter_add_`` wants int64 and is
    faster than ``index_add_`` with int32), converted once per backward and shared.
    """
    P = idx.shape[0]
    if grad_out.shape[1] > 0 and P > 0:
        rows = grad_out.ne(0).any(1)  # (P,)
        n_rows = int(rows.sum())
        if n_rows < _SPARSE_ROWS * P:
            sel = rows.nonzero().squeeze(1)  # (P2,)
            idx, w, grad_out = idx.index_select(0, sel), w.index_select(0, sel), grad_out.index_select(0, sel)
            idx64 = None
    flat = (idx64 if idx64 is not None else idx.long()).view(-1)  # (P * 8,)

    def job(c: int) -> Any:
        return lambda: grad[c].scatter_add_(0, flat, (w * grad_out[:, c, None]).view(-1))

    return [job(c) for c in range(grad.shape[0])]


class _Trilinear(torch.autograd.Function):
    """Trilinear interpolation of several flattened grids at once, as one weighted gather per point.

    ``out[p, :] = sum_k w[p, k] * table[idx[p, k], :]`` with ``table`` (M, sum C_i) the grids side by side,
    channels last, so a single ``F.embedding_bag`` (fused gather-multiply-sum, one index walk for every
    channel) serves the density and the features. Returns one (P, C_i) view per grid.

    Backward is analytic: ``grad_i[c, idx[p, k]] += w[p, k] * grad_out_i[p, c]``, one ``scatter_add_`` per
    channel into the flat (C_i, M) gradient, reusing the forward's saved ``idx``/``w``; channels are spread
    over two threads. Both are several times faster on CPU than ``F.grid_sample`` 3D, whose backward is
    serial scalar code. ``w`` gets no gradient (sample positions are fixed).
    """

    @staticmethod
    def forward(ctx: Any, idx: Tensor, w: Tensor, *grids: Tensor) -> tuple[Tensor, ...]:  # grids (C_i, M)
        ctx.save_for_backward(idx, w)
        ctx.shapes = [g.shape for g in grids]
        if len(grids) == 1 and grids[0].shape[0] == 1:
            table = grids[0].reshape(-1, 1)  # (M, 1), no copy
        else:
            table = torch.cat([g.T for g in grids], dim=1)  # (M, sum C_i)
        if table.device.type == "cpu":
            out = F.embedding_bag(idx, table, per_sample_weights=w, mode="sum")  # (P, sum C_i)
        else:  # one gather kernel is as good on GPUs, and embedding_bag wants int64 there
            out = torch.einsum("pkc,pk->pc", table[idx.long()], w)
        splits = [g.shape[0] for g in grids]
        return tuple(out.split(splits, dim=1))  # (P, C_i) each

    @staticmethod
    def backward(ctx: Any, *grad_outs: Tensor | None) -> tuple[Tensor | None, ...]:
        idx, w = ctx.saved_tensors
        grads: list[Tensor | None] = []
        jobs: list[Any] = []
        idx64 = None
        for i, (shape, go) in enumerate(zip(ctx.shapes, grad_outs)):
            if not ctx.needs_input_grad[2 + i] or go is None:
                grads.append(None)
                continue
            grad = go.new_zeros(shape)  # (C_i, M)
            if idx64 is None:
                idx64 = idx.long()  # (P, 8)
            jobs += _scatter_jobs(grad, idx, idx64, w, go)
            grads.append(grad)
        _run(jobs)
        return (None, None, *grads)


_NATIVE_SRC = r"""
#include <stdint.h>
#include <math.h>
#define MAXC 16 /* channels per pass over the samples */
/* typed kernels: T, EXPM1 and SUF are filled in once per dtype */

/* Cell and trilinear weights of the point x (index coordinates); 0 for a NaN point. Same clamping as
   trilinear_corners: x into [0, n - 1], cell corner into [0, n - 2]. Corner k = 4a + 2b + c sits at
   base + a n^2 + b n + c with weight (x: 1 - f | f)(y)(z). */
static inline int corner_SUF(const T* x3, int64_t n, int64_t* base, T* w) {
    int64_t c[3];
    T f[3];
    for (int a = 0; a < 3; ++a) {
        T x = x3[a];
        if (x != x) return 0;
        if (x < 0) x = 0;
        if (x > (T)(n - 1)) x = (T)(n - 1);
        int64_t i = (int64_t)x; /* floor, x >= 0 */
        if (i > n - 2) i = n - 2;
        c[a] = i;
        f[a] = x - (T)i;
    }
    *base = (c[0] * n + c[1]) * n + c[2];
    T gx = 1 - f[0], gy = 1 - f[1], gz = 1 - f[2];
    T xy[4] = {gx * gy, gx * f[1], f[0] * gy, f[0] * f[1]};
    for (int j = 0; j < 4; ++j) {
        w[2 * j] = xy[j] * gz;
        w[2 * j + 1] = xy[j] * f[2];
    }
    return 1;
}

/* Sample i of ray r sits at start[r] + i * delta[r] (index coordinates), for i < counts[r]; the output has the
   dense (R, k) layout, one plane per channel, zero past a ray's end and NaN at NaN points.
   outs[c][r k + i] = sum_q w_q planes[c][corner_q] for rays r in [r0, r1), channels c in [c0, c1), at most
   MAXC of them. Consecutive samples in the same cell (about 40% at half-voxel steps) reuse its corner values. */
static void fwd_block_SUF(const T* start, const T* delta, const int64_t* counts, int64_t r0, int64_t r1,
                          int64_t k, int64_t n, const T* const* planes, int64_t c0, int64_t c1, T* const* outs) {
    const int64_t nn = n * n, C = c1 - c0;
    const int64_t o[8] = {0, 1, n, n + 1, nn, nn + 1, nn + n, nn + n + 1};
    const T* pl[MAXC];
    T* ou[MAXC];
    for (int64_t c = 0; c < C; ++c) {
        pl[c] = planes[c0 + c];
        ou[c] = outs[c0 + c];
    }
    T vals[MAXC][8];
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t m = counts[r] < k ? counts[r] : k;
        const T sx = start[3 * r], sy = start[3 * r + 1], sz = start[3 * r + 2];
        const T dx = delta[3 * r], dy = delta[3 * r + 1], dz = delta[3 * r + 2];
        int64_t prev = -1;
        for (int64_t i = 0; i < m; ++i) {
            const int64_t p = r * k + i;
            int64_t b;
            T w[8];
            const T x[3] = {sx + (T)i * dx, sy + (T)i * dy, sz + (T)i * dz};
            if (!corner_SUF(x, n, &b, w)) {
                for (int64_t c = 0; c < C; ++c) ou[c][p] = NAN;
                prev = -1;
                continue;
            }
            if (b != prev) {
                for (int64_t c = 0; c < C; ++c)
                    for (int q = 0; q < 8; ++q) vals[c][q] = pl[c][b + o[q]];
                prev = b;
            }
            for (int64_t c = 0; c < C; ++c) {
                T s = 0;
                for (int q = 0; q < 8; ++q) s += w[q] * vals[c][q];
                ou[c][p] = s;
            }
        }
        for (int64_t c = 0; c < C; ++c)
            for (int64_t i = m; i < k; ++i) ou[c][r * k + i] = 0;
    }
}

void tri_fwd_SUF(const T* start, const T* delta, const int64_t* counts, int64_t r0, int64_t r1, int64_t k,
                 int64_t n, const T* const* planes, int64_t C, T* const* outs) {
    for (int64_t c0 = 0; c0 < C; c0 += MAXC)
        fwd_block_SUF(start, delta, counts, r0, r1, k, n, planes, c0, c0 + MAXC < C ? c0 + MAXC : C, outs);
}

/* grads[c][corner_q] += w_q gs[c][r k + i] for rays r in [r0, r1), samples i < counts[r], channels c in
   [c0, c1). Samples whose gradient is zero on those channels are skipped; consecutive samples in the same
   cell are summed before one scatter of the cell. */
static void bwd_block_SUF(const T* start, const T* delta, const int64_t* counts, int64_t r0, int64_t r1,
                          int64_t k, int64_t n, const T* const* gs, int64_t c0, int64_t c1, T* const* grads) {
    const int64_t nn = n * n, C = c1 - c0;
    const int64_t o[8] = {0, 1, n, n + 1, nn, nn + 1, nn + n, nn + n + 1};
    const T* gi[MAXC];
    T* go[MAXC];
    for (int64_t c = 0; c < C; ++c) {
        gi[c] = gs[c0 + c];
        go[c] = grads[c0 + c];
    }
    T acc[MAXC][8];
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t m = counts[r] < k ? counts[r] : k;
        const T sx = start[3 * r], sy = start[3 * r + 1], sz = start[3 * r + 2];
        const T dx = delta[3 * r], dy = delta[3 * r + 1], dz = delta[3 * r + 2];
        int64_t cur = -1;
        for (int64_t i = 0; i <= m; ++i) {
            const int64_t p = r * k + i;
            int64_t b = -1;
            T w[8];
            int live = 0;
            if (i < m) {
                for (int64_t c = 0; c < C; ++c) live |= (gi[c][p] != 0);
                if (live) {
                    const T x[3] = {sx + (T)i * dx, sy + (T)i * dy, sz + (T)i * dz};
                    live = corner_SUF(x, n, &b, w);
                }
            }
            if (cur >= 0 && (i == m || (live && b != cur))) { /* flush the cell being summed */
                for (int64_t c = 0; c < C; ++c) {
                    T* G = go[c] + cur;
                    for (int q = 0; q < 8; ++q) G[o[q]] += acc[c][q];
                }
                cur = -1;
            }
            if (!live) continue;
            if (cur < 0) {
                cur = b;
                for (int64_t c = 0; c < C; ++c)
                    for (int q = 0; q < 8; ++q) acc[c][q] = 0;
            }
            for (int64_t c = 0; c < C; ++c) {
                const T v = gi[c][p];
                for (int q = 0; q < 8; ++q) acc[c][q] += w[q] * v;
            }
        }
    }
}

void tri_bwd_SUF(const T* start, const T* delta, const int64_t* counts, int64_t r0, int64_t r1, int64_t k,
                 int64_t n, const T* const* gs, int64_t c0, int64_t c1, T* const* grads) {
    for (int64_t a = c0; a < c1; a += MAXC)
        bwd_block_SUF(start, delta, counts, r0, r1, k, n, gs, a, a + MAXC < c1 ? a + MAXC : c1, grads);
}

/* Volume compositing of rays r in [r0, r1) (used by the renderer): tau (R, k) optical thickness, feats C planes
   (R, k), sample i of ray r at distance t0[r] + i * step, i < counts[r]. Writes w (R, k) = (1 - e^-tau_i) T_i
   with T_i = exp(-sum_{j<i} tau_j) (zero past the end), rgb (R, C) = sum_i [w_i >= thr] w_i f_i,
   opacity (R,) = 1 - exp(-sum tau), depth (R,) = sum_i w_i t_i. */
void comp_fwd_SUF(const T* tau, const T* const* feats, int64_t C, const T* t0, T step, const int64_t* counts,
                  int64_t r0, int64_t r1, int64_t k, T thr, T* w, T* rgb, T* opacity, T* depth) {
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t m = counts[r] < k ? counts[r] : k;
        const T* tr = tau + r * k;
        T* wr = w + r * k;
        T trans = 1, dep = 0; /* trans = T_i, a running product: one transcendental per sample */
        for (int64_t c = 0; c < C; ++c) rgb[r * C + c] = 0;
        for (int64_t i = 0; i < m; ++i) {
            const T em = EXPM1(-tr[i]); /* e^-tau - 1, exact for small tau */
            const T wi = -em * trans;
            trans += em * trans;
            wr[i] = wi;
            dep += wi * (t0[r] + (T)i * step);
            if (wi >= thr)
                for (int64_t c = 0; c < C; ++c) rgb[r * C + c] += wi * feats[c][r * k + i];
        }
        for (int64_t i = m; i < k; ++i) wr[i] = 0;
        opacity[r] = 1 - trans;
        depth[r] = dep;
    }
}

/* Backward of comp_fwd: with a_i = g_w_i + [w_i >= thr] <g_rgb, f_i> + g_depth t_i,
   g_tau_j = a_j T_{j+1} - sum_{i>j} a_i w_i + g_opacity T_end, g_feats[c]_i = [w_i >= thr] w_i g_rgb_c.
   g_w may be NULL (no gradient on the weights). g_tau holds T_{j+1} in between. */
void comp_bwd_SUF(const T* tau, const T* const* feats, int64_t C, const T* t0, T step, const int64_t* counts,
                  int64_t r0, int64_t r1, int64_t k, T thr, const T* w, const T* g_w, const T* g_rgb,
                  const T* g_op, const T* g_depth, T* g_tau, T* const* g_feats) {
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t m = counts[r] < k ? counts[r] : k;
        const T* tr = tau + r * k;
        const T* wr = w + r * k;
        T* gt = g_tau + r * k;
        T trans = 1;
        for (int64_t i = 0; i < m; ++i) {
            trans += EXPM1(-tr[i]) * trans;
            gt[i] = trans; /* T_{i+1}, as in comp_fwd */
        }
        const T t_end = trans;
        T suffix = 0;
        for (int64_t j = m - 1; j >= 0; --j) {
            const int64_t p = r * k + j;
            const int keep = wr[j] >= thr;
            T a = (g_w ? g_w[p] : 0) + g_depth[r] * (t0[r] + (T)j * step);
            for (int64_t c = 0; c < C; ++c) {
                const T gfc = keep ? wr[j] * g_rgb[r * C + c] : 0;
                g_feats[c][p] = gfc;
                if (keep) a += g_rgb[r * C + c] * feats[c][p];
            }
            gt[j] = a * gt[j] - suffix + g_op[r] * t_end;
            suffix += a * wr[j];
        }
        for (int64_t i = m; i < k; ++i) {
            gt[i] = 0;
            for (int64_t c = 0; c < C; ++c) g_feats[c][r * k + i] = 0;
        }
    }
}
"""

_NATIVE_TYPES = {torch.float32: ("float", "f32"), torch.float64: ("double", "f64")}
_NATIVE_FLAGS = ["-O3", "-shared", "-fPIC"]
_X86_V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}  # /proc/cpuinfo names


def _arch_flags() -> list[list[str]]:
    """Extra compiler flags to try, best first: AVX2/FMA code (about 25% faster here) where the CPU has it."""
    if platform.machine() == "x86_64":
        try:
            cpu = set(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            cpu = set()
        if _X86_V3 <= cpu:
            return [["-march=x86-64-v3"], []]
    return [[]]
_native_state: dict[str, Any] = {}
_native_lock = threading.Lock()


def _compile_native() -> ctypes.CDLL | None:
    """Build (once per source/compiler, cached on disk) and load the C kernels; None where that fails."""
    if os.environ.get("SJC_NATIVE", "1") == "0":
        return None
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        warnings.warn(f"no C compiler ({cc!r}): trilinear lookups and compositing use the slower torch path",
                      RuntimeWarning)
        return None
    marker = "/* typed kernels: T, EXPM1 and SUF are filled in once per dtype */"
    src, body = _NATIVE_SRC.split(marker)
    for ty, suf in _NATIVE_TYPES.values():
        f = "f" if ty == "float" else ""
        src += f"#define T {ty}\n#define EXPM1 expm1{f}\n" + body.replace("SUF", suf) + "#undef T\n#undef EXPM1\n"
    lib, errors = None, []
    for arch in _arch_flags():
        flags = _NATIVE_FLAGS + arch
        key = hashlib.sha256(f"{src}{cc}{flags}{platform.machine()}".encode()).hexdigest()[:16]
        try:
            cache = Path(os.environ.get("SJC_NATIVE_CACHE") or Path.home() / ".cache" / "sjc_engine")
            so = cache / f"trilinear-{key}.so"
            if not so.exists():
                cache.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=cache) as tmp:
                    c_file, out = Path(tmp) / "trilinear.c", Path(tmp) / "trilinear.so"
                    c_file.write_text(src)
                    cmd = [cc, *flags, "-o", str(out), str(c_file), "-lm"]
                    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
                    os.replace(out, so)  # atomic: concurrent builders each write their own file
            lib = ctypes.CDLL(str(so))
            break
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            detail = (getattr(e, "stderr", b"") or b"").decode(errors="replace")[:500]
            errors.append(f"{' '.join(flags)}: {e} {detail}")
    if lib is None:
        warnings.warn(f"building the trilinear C kernels failed ({'; '.join(errors)}): trilinear lookups and "
                      "compositing use the slower torch path", RuntimeWarning)
        return None
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    for ty, suf in _NATIVE_TYPES.values():
        fl = ctypes.c_float if ty == "float" else ctypes.c_double
        getattr(lib, f"tri_fwd_{suf}").argtypes = [vp, vp, vp, i64, i64, i64, i64, vp, i64, vp]
        getattr(lib, f"tri_bwd_{suf}").argtypes = [vp, vp, vp, i64, i64, i64, i64, vp, i64, i64, vp]
        getattr(lib, f"comp_fwd_{suf}").argtypes = [vp, vp, i64, vp, fl, vp, i64, i64, i64, fl, vp, vp, vp, vp]
        getattr(lib, f"comp_bwd_{suf}").argtypes = [vp, vp, i64, vp, fl, vp, i64, i64, i64, fl] + [vp] * 7
        for name in ("tri_fwd", "tri_bwd", "comp_fwd", "comp_bwd"):
            getattr(lib, f"{name}_{suf}").restype = None
    return lib


def native_lib() -> ctypes.CDLL | None:
    """The loaded C kernels, or None where they are off or could not be built (decided once per process)."""
    with _native_lock:
        if "lib" not in _native_state:
            _native_state["lib"] = _compile_native()
        return _native_state["lib"]


_MIN_SPLIT = 8192  # samples below which one thread does it all


def _ptrs(planes: list[Tensor]) -> Any:
    return (ctypes.c_void_p * len(planes))(*[p.data_ptr() for p in planes])


def _call(fn: Any, *args: Any) -> Any:
    return lambda: fn(*args)


class _NativeTrilinear(torch.autograd.Function):
    """:func:`trilinear_rays` with the C kernels: grids (C_i, M) in, one (C_i, R, k) tensor per grid out."""

    @staticmethod
    def forward(
        ctx: Any, start: Tensor, delta: Tensor, counts: Tensor, k: int, n: int, *grids: Tensor
    ) -> tuple[Tensor, ...]:
        fn = getattr(native_lib(), f"tri_fwd_{_NATIVE_TYPES[start.dtype][1]}")
        R = start.shape[0]
        outs = [start.new_empty(g.shape[0], R, k) for g in grids]  # (C_i, R, k) each
        planes = [g[c] for g in grids for c in range(g.shape[0])]  # (M,) each, contiguous
        out_planes = [o[c] for o in outs for c in range(o.shape[0])]  # (R, k) each
        src, dst = _ptrs(planes), _ptrs(out_planes)
        C = len(planes)
        cuts = [0, R // 2, R] if torch.get_num_threads() > 1 and R * k >= _MIN_SPLIT else [0, R]
        ptr = (start.data_ptr(), delta.data_ptr(), counts.data_ptr())
        _run([_call(fn, *ptr, a, b, k, n, src, C, dst) for a, b in zip(cuts, cuts[1:])])
        ctx.save_for_backward(start, delta, counts)
        ctx.k, ctx.n, ctx.shapes = k, n, [g.shape for g in grids]
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grad_outs: Tensor | None) -> tuple[Tensor | None, ...]:
        start, delta, counts = ctx.saved_tensors
        k, n = ctx.k, ctx.n
        need = [ctx.needs_input_grad[5 + i] and go is not None for i, go in enumerate(grad_outs)]
        grads = [go.new_zeros(shape) if nd else None for nd, go, shape in zip(need, grad_outs, ctx.shapes)]
        gos = [go.contiguous() for nd, go in zip(need, grad_outs) if nd]  # (C_i, R, k) each
        g_planes = [go[c] for go in gos for c in range(go.shape[0])]  # (R, k) each
        planes = [gr[c] for gr in grads if gr is not None for c in range(gr.shape[0])]  # (M,) each
        if not planes:
            return (None,) * 5 + tuple(grads)
        fn = getattr(native_lib(), f"tri_bwd_{_NATIVE_TYPES[start.dtype][1]}")
        R, C = start.shape[0], len(planes)
        ptr = (start.data_ptr(), delta.data_ptr(), counts.data_ptr())
        gp, arr = _ptrs(g_planes), _ptrs(planes)
        if torch.get_num_threads() == 1 or R * k < _MIN_SPLIT:
            fn(*ptr, 0, R, k, n, gp, 0, C, arr)
        elif C % 2 == 0:  # two threads on disjoint channels
            h = C // 2
            _run([_call(fn, *ptr, 0, R, k, n, gp, 0, h, arr), _call(fn, *ptr, 0, R, k, n, gp, h, C, arr)])
        else:  # the odd channel out is split by rays, one half scattered into a plane aside
            h, half = C // 2, R // 2
            aside = torch.zeros_like(planes[-1])
            arr2 = _ptrs(planes[:-1] + [aside])

            def first() -> None:
                fn(*ptr, 0, R, k, n, gp, 0, h, arr)
                fn(*ptr, 0, half, k, n, gp, C - 1, C, arr2)

            def second() -> None:
                fn(*ptr, 0, R, k, n, gp, h, C - 1, arr)
                fn(*ptr, half, R, k, n, gp, C - 1, C, arr)

            _run([first, second])
            planes[-1] += aside
        return (None,) * 5 + tuple(grads)


def _torch_rays(start: Tensor, delta: Tensor, counts: Tensor, k: int, n: int, *grids: Tensor) -> tuple[Tensor, ...]:
    """The torch path of :func:`trilinear_rays`: every (R, k) sample through :func:`trilinear_multi`."""
    R = start.shape[0]
    steps = torch.arange(k, device=start.device, dtype=start.dtype)  # (k,)
    u = (start[:, None, :] + steps[None, :, None] * delta[:, None, :]).reshape(-1, 3)  # (R * k, 3)
    inside = (steps[None, :] < counts[:, None]).reshape(-1, 1)  # (R * k, 1)
    idx, w = trilinear_corners(u, n)
    outs = trilinear_multi(idx, w * inside, *grids)  # (R * k, C_i) each, zero past a ray's end
    return tuple(o.T.reshape(o.shape[1], R, k) for o in outs)


def trilinear_rays(
    start: Tensor, delta: Tensor, counts: Tensor, k: int, n: int, *grids: Tensor
) -> tuple[Tensor, ...]:
    """Trilinear interpolation of several flattened grids at evenly spaced samples along rays.

    Args:
        start: (R, 3) first sample of each ray, in voxel index coordinates (see :func:`trilinear_corners`).
        delta: (R, 3) step between samples, in index units.
        counts: (R,) int64 samples of each ray, ``<= k``.
        k: samples per ray of the dense output layout.
        n: grid size per side.
        grids: each (C_i, M) values, ``M = n^3``, flat index ``(i * n + j) * n + k``.

    Returns:
        one (C_i, R, k) tensor per grid: sample ``i`` of ray ``r`` at ``start[r] + i * delta[r]`` (clamped into
        ``[0, n - 1]``), zero for ``i >= counts[r]``; differentiable with respect to the grids (not the samples).

    Uses the native kernels where they are built and everything is a float32/float64 CPU tensor, else the torch
    path; both give the same values and gradients.
    """
    if not grids:
        raise ValueError("trilinear_rays needs at least one grid")
    if start.dim() != 2 or start.shape[1] != 3 or delta.shape != start.shape or counts.shape != start.shape[:1]:
        raise ValueError(
            f"start and delta must be (R, 3) and counts (R,), got {tuple(start.shape)}, {tuple(delta.shape)}, "
            f"{tuple(counts.shape)}"
        )
    if n**3 >= 2**31:
        raise ValueError(f"grid_size {n} is too large")
    for g in grids:
        if g.dim() != 2 or g.shape[1] != n**3:
            raise ValueError(f"grids must be (C, {n}^3), got {tuple(g.shape)}")
    start, delta, counts = start.detach(), delta.detach().to(start.dtype), counts.detach().long()
    native = (
        start.device.type == "cpu"
        and start.dtype in _NATIVE_TYPES
        and all(g.device.type == "cpu" and g.dtype == start.dtype for g in grids)
        and native_lib() is not None
    )
    if native:
        args = (start.contiguous(), delta.contiguous(), counts.contiguous(), int(k), int(n))
        return _NativeTrilinear.apply(*args, *[g.contiguous() for g in grids])
    return _torch_rays(start, delta, counts, int(k), int(n), *grids)


def trilinear_points(u: Tensor, n: int, *grids: Tensor) -> tuple[Tensor, ...]:
    """Trilinear interpolation of several flattened grids at points ``u`` (P, 3) in voxel index coordinates
    (clamped into ``[0, n - 1]``): one (P, C_i) tensor per grid (:func:`trilinear_rays` with one sample per ray).
    """
    if u.dim() != 2 or u.shape[1] != 3:
        raise ValueError(f"u must be (P, 3), got {tuple(u.shape)}")
    ones = torch.ones(u.shape[0], dtype=torch.long, device=u.device)
    return tuple(o[:, :, 0].T for o in trilinear_rays(u, torch.zeros_like(u), ones, 1, n, *grids))


def trilinear_multi(idx: Tensor, w: Tensor, *grids: Tensor) -> tuple[Tensor, ...]:
    """Trilinear interpolation of several flattened grids at the same points, in one gather.

    Args:
        idx: (P, 8) int32 corner indices from :func:`trilinear_corners`.
        w: (P, 8) corner weights.
        grids: each (C_i, M) values, ``M = n^3``, flat index ``(i * n + j) * n + k``.

    Returns:
        one (P, C_i) tensor per grid; differentiable with respect to the grids.
    """
    if not grids:
        raise ValueError("trilinear_multi needs at least one grid")
    return _Trilinear.apply(idx, w, *grids)


def trilinear(grid: Tensor, idx: Tensor, w: Tensor) -> Tensor:
    """Trilinear interpolation of a flattened grid at points given by :func:`trilinear_corners`.

    Args:
        grid: (C, M) values, ``M = n^3``, flat index ``(i * n + j) * n + k``.
        idx: (P, 8) int32 corner indices.
        w: (P, 8) corner weights.

    Returns:
        (C, P) interpolated values; differentiable with respect to ``grid``.
    """
    return trilinear_multi(idx, w, grid)[0].T


class VoxelField(nn.Module):
    """Density and feature grids over ``[-bbox, bbox]^3`` with a direction-indexed background.

    Args:
        grid_size: voxels per side ``N`` (reference: 100).
        channels: feature channels ``C`` (4 for SD latents, 3 for pixel models).
        bbox: half-size of the box (reference: 1.0).
        density_shift: added before the softplus (reference: -1.0, so an empty init has density ~0.31).
        bg_res: side of the background texture (the reference's SJC runs use 4 x 4).
    """

    def __init__(
        self, grid_size: int, channels: int, bbox: float = 1.0, density_shift: float = -1.0, bg_res: int = 4
    ) -> None:
        super().__init__()
        if grid_size < 2:
            raise ValueError(f"grid_size must be >= 2, got {grid_size}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if bbox <= 0:
            raise ValueError(f"bbox must be > 0, got {bbox}")
        if bg_res < 1:
            raise ValueError(f"bg_res must be >= 1, got {bg_res}")
        self.grid_size = int(grid_size)
        self.channels = int(channels)
        self.bbox = float(bbox)
        self.density_shift = float(density_shift)
        self.bg_res = int(bg_res)
        n = self.grid_size
        self.density = nn.Parameter(torch.zeros(1, n, n, n))
        self.features = nn.Parameter(torch.randn(channels, n, n, n))
        self.d_scale = nn.Parameter(torch.tensor(0.0))
        self.bg = nn.Parameter(torch.randn(channels, bg_res, bg_res))  # (C, polar, azimuth)

    # ---------------------------------------------------------------- geometry
    @property
    def voxel_size(self) -> float:
        """World length of one voxel, ``2 * bbox / N`` (the reference's unit for the march step)."""
        return 2.0 * self.bbox / self.grid_size

    def to_voxel_coords(self, x: Tensor) -> Tensor:
        """World points (..., 3) to index coordinates in ``[0, N - 1]`` (no clamping)."""
        return (x + self.bbox) * ((self.grid_size - 1) / (2.0 * self.bbox))

    def grid_points(self) -> Tensor:
        """World coordinates of the grid nodes, (N, N, N, 3) indexed ``[i, j, k]``."""
        ax = torch.linspace(-self.bbox, self.bbox, self.grid_size, device=self.density.device)
        return torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1)

    # ---------------------------------------------------------------- values
    def activate(self, raw: Tensor) -> Tensor:
        """Raw (interpolated) density to density: ``softplus(raw * exp(d_scale) + shift)``."""
        return F.softplus(raw * torch.exp(self.d_scale) + self.density_shift)

    def raw_density_at(self, idx: Tensor, w: Tensor) -> Tensor:
        """Interpolated raw density (P,) at points given by :func:`trilinear_corners`."""
        return trilinear(self.density.view(1, -1), idx, w)[0]

    def features_at(self, idx: Tensor, w: Tensor) -> Tensor:
        """Interpolated features (P, C) at points given by :func:`trilinear_corners`."""
        return trilinear(self.features.view(self.channels, -1), idx, w).T

    def lookup(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Interpolated raw density (P,) and features (P, C) at index coordinates ``u`` (P, 3), in one pass
        over the points (see :func:`trilinear_points`)."""
        n = self.grid_size
        raw, feats = trilinear_points(u, n, self.density.view(1, -1), self.features.view(self.channels, -1))
        return raw[:, 0], feats

    def lookup_rays(self, start: Tensor, delta: Tensor, counts: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Raw density (R, k) and features (C, R, k) at ``k`` evenly spaced samples per ray, zero past each
        ray's ``counts`` (see :func:`trilinear_rays`; ``start``/``delta`` in voxel index coordinates)."""
        grids = (self.density.view(1, -1), self.features.view(self.channels, -1))
        raw, feats = trilinear_rays(start, delta, counts, k, self.grid_size, *grids)
        return raw[0], feats

    def query(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density (P,) and features (P, C) at world points ``x`` (P, 3), clamped into the box."""
        u = self.to_voxel_coords(x).clamp(0, self.grid_size - 1)
        raw, feats = self.lookup(u)
        return self.activate(raw), feats

    def background(self, dirs: Tensor) -> Tensor:
        """Background features (R, C) for unit ray directions ``dirs`` (R, 3).

        The texture is indexed by (polar angle from +y, azimuth around y): bilinear, wrapping around in
        azimuth and clamped at the poles.
        """
        x, y, z = dirs.unbind(-1)
        polar = torch.acos(y.clamp(-1.0, 1.0)) / math.pi  # (R,) in [0, 1]
        azim = (torch.atan2(x, z) / (2 * math.pi)) % 1.0  # (R,) in [0, 1)
        res = self.bg_res
        tex = torch.cat([self.bg[:, :, -1:], self.bg, self.bg[:, :, :1]], dim=2)  # (C, res, res + 2) wrap
        col = azim * res + 0.5  # texel centres of the padded texture at 1, ..., res
        row = (polar * res - 0.5).clamp(0, res - 1)
        gx = col / (res + 1) * 2 - 1
        gy = row / max(res - 1, 1) * 2 - 1 if res > 1 else torch.zeros_like(row)
        grid = torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2)  # (1, 1, R, 2)
        out = F.grid_sample(tex[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.view(self.channels, -1).T  # (R, C)

    def density_grid(self) -> Tensor:
        """Activated density at the grid nodes, (N, N, N) indexed ``[x, y, z]``."""
        return self.activate(self.density[0])

    @torch.no_grad()
    def occupancy(self, threshold: float) -> Tensor:
        """Bool (N, N, N): nodes whose activated density exceeds ``threshold``."""
        return self.density_grid() > threshold

    # ---------------------------------------------------------------- optimisation
    def param_groups(self, lr: float, bg_lr: float) -> list[dict[str, Any]]:
        """Parameter groups for ``torch.optim.Adamax``: the grids and ``d_scale`` at ``lr``, the background
        at ``bg_lr`` (reference: 0.05 and 1e-4)."""
        return [
            {"params": [self.density, self.features, self.d_scale], "lr": lr},
            {"params": [self.bg], "lr": bg_lr},
        ]

    # ---------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {
            "grid_size": self.grid_size,
            "channels": self.channels,
            "bbox": self.bbox,
            "density_shift": self.density_shift,
            "bg_res": self.bg_res,
        }

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``{"format", "config", "state_dict", "extra"}`` to ``path`` with ``torch.save``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save({"format": FORMAT_VERSION, "config": self.config(), "state_dict": state, "extra": extra or {}}, path)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "VoxelField":
        """Rebuild a field written by :meth:`save`; its ``extra`` dict is kept as ``field.extra``."""
        blob = torch.load(Path(path), map_location=map_location, weights_only=True)
        if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
            raise ValueError(f"{path} is not a VoxelField file (no 'config'/'state_dict')")
        field = cls(**blob["config"])
        field.load_state_dict(blob["state_dict"])
        field.extra = dict(blob.get("extra") or {})
        return field.to(map_location)
