"""``torch.optim.Adamax`` whose step runs the fused C kernel of ``adamax.c`` on large CPU tensors.

torch 2.13 has no fused Adamax on the CPU, and ``foreach=True`` only groups its six elementwise passes per
tensor (no faster here); the C kernel makes one pass over parameter, gradient and both moments (3-4x faster on
a 100^3 field at one thread). Its arithmetic is torch's, in the same order and rounding, so parameters and
moments stay bit-identical to ``torch.optim.Adamax`` (a NaN stays a NaN, its bit pattern may differ), and
the state dict is the same: checkpoints load into either.

A tensor takes the kernel when it is a contiguous float32/float64 CPU tensor, its group has no weight decay
and is not maximising, differentiable or capturable, and the kernels were built with hardware FMA while torch's
own CPU kernels use it too (so the lerp rounds alike); every other tensor takes torch's single-tensor step.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.optim.adamax import adamax as torch_adamax

from sjc_engine.native import kernel, native_lib, native_supports
from sjc_engine.parallel import run_jobs, workers

def fused_adamax_available() -> bool:
    """Whether the kernel may run: built with hardware FMA, and torch's CPU kernels vectorised (they fuse the
    lerp's multiply-add only there)."""
    lib = native_lib()
    return lib is not None and bool(lib.adamax_hw_fma()) and torch.backends.cpu.get_cpu_capability() != "DEFAULT"


def _plain(method: Any) -> Any:
    """The function under torch's lazy ``torch._disable_dynamo`` wrapper (``functools.wraps`` keeps it as
    ``__wrapped__``), or ``method`` itself."""
    return getattr(method, "__wrapped__", method)


class FusedAdamax(torch.optim.Adamax):
    """``torch.optim.Adamax`` (same arguments, defaults, state and results) with a fused step on large CPU
    tensors; see the module docstring.

    ``torch.optim.Optimizer`` wraps ``add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` in
    ``torch._disable_dynamo``, which imports ``torch._dynamo`` on the first call: 1.5-3.6 s measured here, more
    than a tenth of an embedded asset. Nothing here is compiled, so this class calls the plain methods.
    """

    add_param_group = _plain(torch.optim.Optimizer.add_param_group)
    zero_grad = _plain(torch.optim.Optimizer.zero_grad)
    state_dict = _plain(torch.optim.Optimizer.state_dict)
    load_state_dict = _plain(torch.optim.Optimizer.load_state_dict)

    def _fusable(self, group: dict[str, Any], p: Tensor, tensors: tuple[Tensor, ...]) -> bool:
        return (
            group["weight_decay"] == 0
            and not (group["maximize"] or group["differentiable"] or group["capturable"])
            and all(t.is_contiguous() and t.shape == p.shape for t in tensors)
            and native_supports(*tensors)
            and fused_adamax_available()
        )

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Adamax step over every parameter with a gradient; returns ``closure()``'s loss where given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_infs: list[Tensor] = []
            steps: list[Tensor] = []
            has_complex = self._init_group(group, params, grads, exp_avgs, exp_infs, steps)
            beta1, beta2 = group["betas"]
            rest: list[int] = []
            for i, p in enumerate(params):
                tensors = (p, grads[i], exp_avgs[i], exp_infs[i])
                if not self._fusable(group, p, tensors):
                    rest.append(i)
                    continue
                steps[i] += 1
                clr = group["lr"] / (1 - beta1 ** steps[i].item())
                fn, n = kernel("adamax", p.dtype), p.numel()
                ptrs = [t.data_ptr() for t in tensors]
                cuts = [0, n // 2, n] if workers() > 1 else [0, n]
                run_jobs([partial(fn, *ptrs, a, b, 1 - beta1, beta2, group["eps"], -clr) for a, b in zip(cuts, cuts[1:])])
            if rest:
                torch_adamax(
                    [params[i] for i in rest], [grads[i] for i in rest], [exp_avgs[i] for i in rest],
                    [exp_infs[i] for i in rest], [steps[i] for i in rest], eps=group["eps"], beta1=beta1,
                    beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], foreach=group["foreach"],
                    maximize=group["maximize"], differentiable=group["differentiable"],
                    capturable=group["capturable"], has_complex=has_complex,
                )
        return loss
