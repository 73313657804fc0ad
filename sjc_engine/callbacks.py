"""How the optimiser loop talks to the outside world (minGPT-style callbacks).

The loop never imports a web, queue or storage framework: the CLI draws a progress bar and the
service's worker pushes progress to Redis and checkpoints to S3, both through this interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class StepReport:
    """What the loop reports after each optimiser step.

    Attributes:
        step: steps completed so far (1-based after the first step).
        total: steps the run will make in all.
        losses: named scalar losses of this step (``"score"``, ``"emptiness"``, ``"center_depth"``, ...).
        sigma: the noise level used this step.
        preview: an ``(H, W, 3)`` uint8 RGB picture of the current field every ``preview_every`` steps,
            else ``None``.
        extra: details of the step, e.g. ``{"prompt": <the view prompt used>}``.
    """

    step: int
    total: int
    losses: dict[str, float]
    sigma: float
    preview: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Callbacks:
    """Override what you need; every hook is optional and the defaults do nothing."""

    def on_step(self, report: StepReport) -> None:
        """Called after every step."""

    def should_stop(self) -> bool:
        """Polled every step; returning True ends the run early (cooperative cancel)."""
        return False

    def on_checkpoint(self, state: dict[str, Any], step: int) -> None:
        """Called every ``checkpoint_every`` steps and at the end with a resumable state.

        ``state`` is what :func:`sjc_engine.checkpoint.save_checkpoint` writes (field, optimiser,
        step, random state, config) and what ``run_sjc(resume=...)`` takes back.
        """

    def on_export(self, steps_done: int) -> None:
        """Called once the optimiser is done (not after a stop), before the exports are written."""


class CallbackList(Callbacks):
    """Fans every hook out to several callbacks; stops when any of them asks to."""

    def __init__(self, *callbacks: Callbacks | None) -> None:
        self.callbacks = [c for c in callbacks if c is not None]

    def on_step(self, report: StepReport) -> None:
        for c in self.callbacks:
            c.on_step(report)

    def should_stop(self) -> bool:
        return any(c.should_stop() for c in self.callbacks)

    def on_checkpoint(self, state: dict[str, Any], step: int) -> None:
        for c in self.callbacks:
            c.on_checkpoint(state, step)

    def on_export(self, steps_done: int) -> None:
        for c in self.callbacks:
            c.on_export(steps_done)
