"""Small C kernels for the CPU hot paths (the fused renderer, trilinear lookups along rays, volume compositing,
the Adamax step, the smoothness loss, the background lookup), called via ``ctypes``.

The C sources (``march.c``, ``rays.c``, ``trilinear.c``, ``composite.c``, ``adamax.c``, ``smoothness.c``,
``background.c``) ship with the package and are compiled on first use (see :mod:`sjc_engine.native.build`:
``$CC``, ``$SJC_NATIVE_CACHE``, ``SJC_NATIVE=0``). Callers check :func:`native_supports` and fall back to their
torch path where it is False::

    if native_supports(x, grid):
        kernel("tri_fwd", x.dtype)(..., pointer_array(planes), ...)

``ctypes`` releases the GIL during a call, so kernels on disjoint rays or channels run in parallel on the
threads of :func:`sjc_engine.parallel.run_jobs`.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch import Tensor

from sjc_engine.native.build import NATIVE_DTYPES, native_lib

__all__ = ["NATIVE_DTYPES", "kernel", "native_lib", "native_supports", "pointer_array"]


def native_supports(*tensors: Tensor) -> bool:
    """Whether the kernels can take ``tensors``: all on the CPU, of one dtype among float32 and float64, and
    the kernels built (the build is tried on the first call that gets this far)."""
    dtype = tensors[0].dtype
    return (
        all(t.device.type == "cpu" for t in tensors)
        and dtype in NATIVE_DTYPES
        and all(t.dtype == dtype for t in tensors)
        and native_lib() is not None
    )


def kernel(name: str, dtype: torch.dtype) -> Any:
    """The ``ctypes`` function ``{name}_f32`` or ``{name}_f64`` for ``dtype`` (after :func:`native_supports`).

    Args:
        name: the kernel's name without its type suffix: ``march_fwd``, ``march_bwd``, ``march_order``,
            ``ray_setup``, ``tri_fwd``, ``tri_bwd``, ``comp_fwd``, ``comp_bwd``, ``adamax``, ``smooth_fwd``, ``wsmooth_fwd``,
            ``bg_fwd``, ``bg_bwd``.
        dtype: torch.float32 or torch.float64.
    """
    lib = native_lib()
    if lib is None:
        raise RuntimeError("the C kernels are not built (SJC_NATIVE=0 or no C compiler): use the torch path")
    return getattr(lib, f"{name}_{NATIVE_DTYPES[dtype][1]}")


def pointer_array(tensors: list[Tensor] | Tensor) -> Any:
    """A C array of the data pointers of ``tensors`` (each contiguous), for a kernel's ``T* const*`` argument; a
    contiguous tensor stands for its slices along the first dimension (its planes: pointers by arithmetic, no
    slice tensors made).

    The tensors must stay alive while the array is used.
    """
    if isinstance(tensors, Tensor):
        if not tensors.is_contiguous():
            raise ValueError("pointer_array: a tensor of planes must be contiguous")
        base, size = tensors.data_ptr(), tensors.stride(0) * tensors.element_size()
        return (ctypes.c_void_p * len(tensors))(*[base + i * size for i in range(len(tensors))])
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])
