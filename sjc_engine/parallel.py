"""Two-thread job runner of the native kernels (the fused renderer, trilinear lookups, compositing, Adamax) and
of the two guidance branches of a small denoiser.

torch kernels and ``ctypes`` calls release the GIL, so jobs on disjoint rays or channels of one lookup run in
parallel on two Python threads when the run may use more than one thread (:func:`workers`: the count
:func:`sjc_engine.threads.set_torch_threads` gave it, else torch's thread count); with one, they run in turn on
the calling thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

MIN_SPLIT = 8192  # samples below which one thread does it all

_POOL: tuple[int, ThreadPoolExecutor] | None = None
_WORKERS: int | None = None


def set_workers(n: int | None) -> None:
    """Threads a run may use in all (None: follow ``torch.get_num_threads()``); torch's own intra-op threads may be
    fewer (a model whose operations are too small for them, :mod:`sjc_engine.threads`)."""
    global _WORKERS
    if n is not None and n < 1:
        raise ValueError(f"workers must be >= 1, got {n}")
    _WORKERS = n


def workers() -> int:
    """Threads a run may use in all: :func:`set_workers`'s count, else torch's thread count."""
    return _WORKERS if _WORKERS is not None else torch.get_num_threads()


def _pool() -> ThreadPoolExecutor:
    """Two worker threads, made anew in a forked child (a parent's pool has no threads there)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="sjc-trilinear"))
    return _POOL[1]


def run_jobs(jobs: list[Callable[[], Any]]) -> None:
    """Run the zero-argument callables ``jobs`` (which must touch disjoint outputs); on two threads when the run
    may use more than one (:func:`workers`), else one after the other. Exceptions of a job are raised here.
    Jobs on the pool's threads run with autograd's default (grad) mode: a job that needs ``no_grad`` sets it."""
    if len(jobs) > 1 and workers() > 1:
        for f in [_pool().submit(j) for j in jobs]:
            f.result()
    else:
        for j in jobs:
            j()


def split_rays(n_rays: int, k: int) -> list[int]:
    """Cut points of ``n_rays`` rays of ``k`` samples into one or two ranges: ``[0, n // 2, n]`` when the run may
    use more than one thread (:func:`workers`) and there are at least :data:`MIN_SPLIT` samples, else ``[0, n]``."""
    if workers() > 1 and n_rays * k >= MIN_SPLIT:
        return [0, n_rays // 2, n_rays]
    return [0, n_rays]
