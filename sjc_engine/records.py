"""The field as node records for the fused renderer (``march.c``): density and 3 feature channels side by side.

Stored as planes (density (1, N, N, N), features (C, N, N, N)), a trilinear lookup reads 8 corners in each of
4 planes: 16 scattered loads a sample, and as many read-modify-writes of gradient lines in the backward. As
records of 4 floats a node (density, then the features), the 8 corners are 4 loads of 32 bytes (a corner and its
z neighbour), and a cell's gradients 4 adds of 32 bytes. :func:`pack` copies the planes into records before a
forward, :func:`unpack` the records' gradients into planes after a backward; on a 64^3 field with a random
density the step is 10-15 % faster with them than without (``bench/bench_render.py``: 6.6-6.7x the reference
algorithm against 5.7-6.1x, runs in turn). The sums are the same as
from the planes, in the same order: the same bits.

Records are used for float32 fields of 3 channels (the embedded model's) where the kernels were built with
AVX2 and FMA (:func:`records_supported`) and a render looks up enough samples to pay for the copies
(:func:`records_box`: a random field's steps, not a converged object's); only the nodes a render can read
are copied. The buffers are kept between steps (:class:`_Pool`): a gradient buffer is handed back zeroed by
:func:`unpack`, so its next backward clears nothing.
"""

from __future__ import annotations

import ctypes
import threading
import weakref

import torch
from torch import Tensor

from sjc_engine.field import VoxelField
from sjc_engine.native import native_lib, pointer_array

__all__ = ["ENABLED", "gradients_pay", "note_shaded", "pack", "records_box", "records_supported", "release",
           "take_gradients", "unpack"]

ENABLED = True  # False: the planes, always (tests compare both)
_SHADED: weakref.WeakKeyDictionary[VoxelField, float] = weakref.WeakKeyDictionary()  # see note_shaded
CHANNELS = 3  # feature channels of a record (4 floats: density, then the features)
# shaded samples a render must expect per grid node for records to pay: packing and unpacking cost about as much
# as 0.3 shaded samples a node save (64^3, 32 x 32 at one thread: 0.55 ms against the forward's 7 ns a sample,
# both from cold caches)
MIN_SHADED_PER_NODE = 0.4


def records_supported(channels: int, dtype: torch.dtype) -> bool:
    """Whether the fused kernels can use records for a field of ``channels`` channels of ``dtype``."""
    lib = native_lib()
    return ENABLED and channels == CHANNELS and dtype == torch.float32 and lib is not None and bool(lib.march_aos())


def records_box(field: VoxelField, samples: float, saved: bool) -> Tensor | None:
    """The nodes of ``field`` to pack where records pay for a render of ``samples`` samples (the rays' kept ones),
    else None.

    Records pay where they are supported (:func:`records_supported`) and the render can be expected to shade (look
    up the features of) at least :data:`MIN_SHADED_PER_NODE` samples a node of the grid (``saved``, a render a
    backward follows; without one a quarter of that: no gradients to unpack), as many as the share of the last
    render's samples it shaded (:func:`note_shaded`; nothing known: the planes). A sample that is looked up but
    not shaded reads only the density plane, a quarter of the records' bytes: a random field's every sample is
    shaded (records pay), a converged object's few are (they do not).

    The nodes are (6,) int64 ``lo[3], hi[3]`` (inclusive node indices per axis): all of the grid, or with an
    occupancy grid those of its occupied coarse cells' bounding box (a looked-up sample lies in an occupied cell,
    whose corners are its nodes and the next ones)."""
    n, grid = field.grid_size, field.occupancy_grid
    share = _SHADED.get(field, 0.0)
    need = MIN_SHADED_PER_NODE * n**3 * (1.0 if saved else 0.25)
    if not records_supported(field.channels, field.density.dtype) or samples * share < need:
        return None
    if grid is None:
        return torch.tensor([0, 0, 0, n - 1, n - 1, n - 1], dtype=torch.int64)
    cells = grid.bits.cpu().nonzero()  # (k, 3) occupied coarse cells
    if cells.numel() == 0:
        return None
    return torch.cat([cells.amin(0) * grid.cell, ((cells.amax(0) + 1) * grid.cell).clamp(max=n - 1)])


def note_shaded(field: VoxelField, shaded: int, samples: float) -> None:
    """Remember the share of a render's ``samples`` that ``field``'s render shaded (for :func:`records_box`'s next
    guess)."""
    if samples > 0:
        _SHADED[field] = shaded / samples


def gradients_pay(n: int, stats: Tensor) -> bool:
    """Whether a backward should add its gradients into records (:func:`take_gradients`) rather than the planes,
    given its forward's ``stats`` (rays, 2), samples looked up and shaded a ray: where at least
    :data:`MIN_SHADED_PER_NODE` samples a node were shaded (a sample that was not has only a density gradient,
    whose plane is a quarter of the records' bytes)."""
    return float(stats[:, 1].sum()) >= MIN_SHADED_PER_NODE * n**3


class _Pool:
    """Record buffers kept between steps, by size: any content (packed fields) or all zeros (gradients)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[tuple[int, bool], list[Tensor]] = {}

    def take(self, numel: int, zeroed: bool) -> Tensor:
        with self._lock:
            free = self._free.get((numel, zeroed))
            if free:
                return free.pop()
        return torch.zeros(numel, dtype=torch.float32) if zeroed else torch.empty(numel, dtype=torch.float32)

    def give(self, buf: Tensor, zeroed: bool) -> None:
        with self._lock:
            free = self._free.setdefault((buf.numel(), zeroed), [])
            if len(free) < 2:  # at most two of a kind (a backward on two threads takes two)
                free.append(buf)


_POOL = _Pool()


def pack(density: Tensor, features: Tensor, box: Tensor) -> Tensor:
    """The records (N^3 * 4,) of ``density`` (1, N, N, N) and ``features`` (3, N, N, N) (float32) over the nodes of
    ``box`` (:func:`records_box`; the rest hold anything). Hand it back with :func:`release` when the render is done."""
    n = density.shape[-1]
    dens = density.reshape(-1).contiguous()  # (N^3,)
    feats = features.reshape(CHANNELS, -1).contiguous()  # (3, N^3)
    out = _POOL.take(4 * n**3, zeroed=False)
    planes = pointer_array(feats)
    native_lib().march_pack(dens.data_ptr(), ctypes.cast(planes, ctypes.c_void_p), n, box.data_ptr(), out.data_ptr())
    return out


def release(records: Tensor) -> None:
    """Hand back the buffer of :func:`pack` (its content is not needed any more)."""
    _POOL.give(records, zeroed=False)


def take_gradients(n: int) -> Tensor:
    """A zeroed record buffer (n^3 * 4,) for a backward to add gradients into; :func:`unpack` hands it back."""
    return _POOL.take(4 * n**3, zeroed=True)


def unpack(bufs: list[Tensor], n: int, box: Tensor, g_density: Tensor, g_features: Tensor) -> None:
    """Write the gradients of the record buffers ``bufs`` (one, or two whose sum is taken) over the nodes of ``box``
    into ``g_density`` (1, n, n, n) and ``g_features`` (3, n, n, n) (contiguous float32), zeros elsewhere (a
    backward scatters only into nodes of the box its forward read), zero the buffers there and hand them back to
    the pool."""
    planes = pointer_array(g_features)
    second = bufs[1].data_ptr() if len(bufs) > 1 else None
    native_lib().march_unpack(bufs[0].data_ptr(), second, n, box.data_ptr(), g_density.data_ptr(),
                              ctypes.cast(planes, ctypes.c_void_p))
    for buf in bufs:
        _POOL.give(buf, zeroed=True)
