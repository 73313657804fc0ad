"""Resumable state of an SJC run: write it atomically, read it back on the CPU.

The state (built by :func:`sjc_engine.optimize.run_sjc`) is a plain dict of tensors and Python values:
``field`` (state_dict), ``field_args`` (VoxelField constructor args), ``optimizer`` (state_dict), ``step``
(steps done), ``rng`` (torch, torch CUDA, numpy generator, noise generator, Python ``random``) and ``config``
(``SJCConfig.to_dict()``). It loads with ``weights_only=True``: a checkpoint from storage cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

REQUIRED_KEYS = ("field", "field_args", "optimizer", "step", "rng", "config")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` (via a temporary file and a rename, so a crash leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_checkpoint`, tensors on the CPU; raises if keys are missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path} is not an SJC run checkpoint (missing {missing})")
    return state
