"""Denoisers loaded once per worker process and kept (loading a model costs seconds to minutes).

Only the pool child calls this: the Celery parent process never imports torch models nor touches CUDA.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

MAX_CACHED = 2
_CACHE: "OrderedDict[tuple[str, str, bool, tuple[str, ...]], Any]" = OrderedDict()
_LOCK = threading.Lock()


def get_denoiser(model: str, device: str = "auto", half: bool = True, model_dirs: Sequence[str] = ()) -> Any:
    """The denoiser for ``model``, loaded on first use and cached (the least recently used is dropped
    beyond :data:`MAX_CACHED` models)."""
    key = (model, device, half, tuple(model_dirs))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        from sjc_engine.denoisers.loader import load_denoiser

        denoiser = load_denoiser(model, device=device, half=half, model_dirs=list(model_dirs))
        _CACHE[key] = denoiser
        while len(_CACHE) > MAX_CACHED:
            _CACHE.popitem(last=False)
        return denoiser

