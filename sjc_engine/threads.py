"""Thread defaults of the CPU path: OpenMP's wait policy, the run's threads and torch's share of them.

OpenMP threads spin-wait for a while after each parallel region (libgomp's default policy). On a CPU shared
with other work that burns the cores the other threads need: measured here, two threads on a busy 2-core
machine spent 4.5x the CPU time per step of one. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep at once.
OpenMP reads it when torch loads its runtime, so :func:`apply_openmp_defaults` must run before the first
``import torch`` of the process: at the very top of an entry point (``sjc`` CLI, Celery worker).

Threads of a run: ``SJC_THREADS`` if set, else every core this process may run on (``os.sched_getaffinity``;
torch's own default counts physical cores and ignores CPU sets), see :func:`set_torch_threads`. Of those, torch's
intra-op threads are capped by the model's recommendation (``torch_threads`` in its ``sjc_model.json``,
:attr:`sjc_engine.catalog.ModelInfo.torch_threads`); the run's other threads then serve
:mod:`sjc_engine.parallel` (the native kernels' halves and the two guidance branches of the denoiser, side by
side). The embedded model recommends one torch thread: its operations are so small that waking a second thread
for each costs more than it gains, while its two guidance branches on two threads do pay (measured on an idle
2-core machine: 48 ms a step with one torch thread, 60-68 ms with two, and the guided UNet call 18 ms against 25 ms
with the branches side by side; bench/RESULTS.md, "Embedded model v2: random backgrounds"). The counts depend on
the settings and the model only, never on the machine's load, so a seeded run's bits do not either (torch's thread
count changes summation order).
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


def default_threads(environ: MutableMapping[str, str] = os.environ) -> int:
    """``SJC_THREADS`` when set (an integer >= 1), else the number of cores this process may run on."""
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
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def set_torch_threads(threads: int | None = None, torch_threads: int | None = None) -> int:
    """Give the run ``threads`` threads (default :func:`default_threads`): torch's intra-op threads are that many,
    at most ``torch_threads`` (a model's recommendation; None: no cap), and :mod:`sjc_engine.parallel` may use all
    of them. Returns torch's count."""
    import torch

    from sjc_engine.parallel import set_workers

    n = default_threads() if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    if torch_threads is not None and torch_threads < 1:
        raise ValueError(f"torch_threads must be >= 1, got {torch_threads}")
    own = min(n, torch_threads) if torch_threads else n
    torch.set_num_threads(own)
    set_workers(n)
    return own
