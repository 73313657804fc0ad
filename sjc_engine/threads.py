"""Thread defaults of the CPU path: OpenMP's wait policy and torch's thread count.

OpenMP threads spin-wait for a while after each parallel region (libgomp's default policy). On a CPU shared
with other work that burns the cores the other threads need: measured here, two threads on a busy 2-core
machine spent 4.5x the CPU time per step of one. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep at once.
OpenMP reads it when torch loads its runtime, so :func:`apply_openmp_defaults` must run before the first
``import torch`` of the process: at the very top of an entry point (``sjc`` CLI, Celery worker).

Torch threads: ``SJC_THREADS`` if set, else the model's recommendation (``cpu_threads`` in its
``sjc_model.json``, :attr:`sjc_engine.catalog.ModelInfo.cpu_threads`) capped to the usable cores, else every core
this process may run on (``os.sched_getaffinity``; torch's own default counts physical cores and ignores CPU sets),
see :func:`set_torch_threads`. The embedded model recommends one: its operations are so small that waking a second
thread for each costs more than it gains (measured: 48 ms a step at one thread, 60-63 ms at two, idle 2-core
machine; bench/RESULTS.md "Threads for the embedded model"). A model-based default keeps a seeded run's bits
independent of the machine's load (the thread count changes summation order).
This module imports no torch at import time.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ENV_THREADS = "SJC_THREADS"
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_openmp_defaults(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set :data:`OPENMP_DEFAULTS` in ``environ`` where not already set (a user's choice wins); returns the
    values now in effect. Call before torch is imported, or it has no effect on this process's OpenMP."""
    for key, value in OPENMP_DEFAULTS.items():
        environ.setdefault(key, value)
    return {key: environ[key] for key in OPENMP_DEFAULTS}


def default_threads(environ: MutableMapping[str, str] = os.environ, model_threads: int | None = None) -> int:
    """``SJC_THREADS`` when set (an integer >= 1), else ``model_threads`` (a model's recommendation) capped to the
    number of cores this process may run on, else that number."""
    raw = environ.get(ENV_THREADS)
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_THREADS} must be an integer >= 1, got {raw!r}") from None
        if n < 1:
            raise ValueError(f"{ENV_THREADS} must be an integer >= 1, got {raw!r}")
        return n
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = max(1, os.cpu_count() or 1)
    return min(cores, max(1, int(model_threads))) if model_threads else cores


def set_torch_threads(threads: int | None = None, model_threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default :func:`default_threads` with the model's
    recommendation ``model_threads``); returns the count."""
    import torch

    n = default_threads(model_threads=model_threads) if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n
