"""Two-thread job runner of the native kernels (the fused renderer, trilinear lookups, compositing, Adamax).

torch kernels and ``ctypes`` calls release the GIL, so jobs on disjoint rays or channels of one lookup run in
parallel on two Python threads when torch may use more than one thread (``torch.get_num_threads() > 1``);
with one, they run in turn on the calling thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

MIN_SPLIT = 8192  # samples below which one thread does it all

_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """Two worker threads, made anew in a forked child (a parent's pool has no threads there)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="sjc-trilinear"))
    return _POOL[1]


def run_jobs(jobs: list[Callable[[], Any]]) -> None:
    """Run the zero-argument callables ``jobs`` (which must touch disjoint outputs); on two threads when torch
    may use more than one, else one after the other. Exceptions of a job are raised here."""
    if len(jobs) > 1 and torch.get_num_threads() > 1:
        for f in [_pool().submit(j) for j in jobs]:
            f.result()
    else:
        for j in jobs:
            j()


def split_rays(n_rays: int, k: int) -> list[int]:
    """Cut points of ``n_rays`` rays of ``k`` samples into one or two ranges: ``[0, n // 2, n]`` when torch may
    use more than one thread and there are at least :data:`MIN_SPLIT` samples, else ``[0, n]``."""
    if torch.get_num_threads() > 1 and n_rays * k >= MIN_SPLIT:
        return [0, n_rays // 2, n_rays]
    return [0, n_rays]
