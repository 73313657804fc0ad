"""The SJC optimiser loop: render a random view, score it with PAAS, chain the score into the voxels.

Per step (pals-ttic/sjc ``run_sjc.py``, with callbacks, checkpoints and exact resume added):

1. sample ``config.views`` cameras (azimuth, area-uniform elevation, fov; the reference: one) and their view
   prompts ("front view of ...");
2. render the field from each (over the learned background, or a random flat colour per view with
   ``config.background="random"``): images ``y`` (V, C, H, W), depths, and each view's emptiness loss of its
   compositing weights (made by the renderer from the weighted samples);
3. pick sigma (random over the trimmed ticks, or annealed) and compute the PAAS gradient on ``y`` (every view
   and noise sample in one denoiser call);
4. backward ``-grad / V`` through the renderer (a vector-Jacobian product) together with the emptiness and
   center-depth losses (means over the views) and the smoothness losses of the density and of the features
   (the colours, for pixel models), then one Adamax step
   (:class:`~sjc_engine.native.adamax.FusedAdamax`: torch's Adamax, bit for bit, with a one-pass C step on the CPU
   grids);
5. over the first ``config.blob_decay`` of the run, take an equal part of the starting blob
   (:mod:`sjc_engine.priors`) out of the density.

After the last step, with ``config.fill_cavities``, the field's enclosed cavities are filled
(:mod:`sjc_engine.cavities`), before the last preview and checkpoint.

Every ``occupancy.every`` steps the field's occupancy grid is rebuilt from its density (empty-space skipping,
:mod:`sjc_engine.occupancy`); it is part of the resumable state, and rebuilt once more at the end so renders of
the result (previews, video) skip empty space too.

Randomness: cameras and sigmas come from a numpy ``Generator``, PAAS noise from a CPU ``torch.Generator``,
both seeded from ``config.seed``; torch's and Python's global RNGs are seeded too. All of them are in the
checkpoint state, so ``run_sjc(resume=state)`` continues bit-for-bit like an uninterrupted run on the CPU.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field as dc_field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sjc_engine.callbacks import Callbacks, StepReport
from sjc_engine.cameras import sample_camera, spherical_camera, view_prompt
from sjc_engine.cavities import fill_cavities
from sjc_engine.config import SJCConfig
from sjc_engine.denoisers.base import Denoiser
from sjc_engine.field import NEUTRAL_BACKGROUND, VoxelField
from sjc_engine.losses import center_depth_loss, emptiness_weight, smoothness_loss
from sjc_engine.native.adamax import FusedAdamax
from sjc_engine.occupancy import DEFAULT_SETTINGS, OccupancyGrid, OccupancySettings
from sjc_engine.paas import paas_grad
from sjc_engine.priors import add_density_blob, blob_profile
from sjc_engine.renderer import render_image, render_images
from sjc_engine.sigmas import SigmaSchedule

PREVIEW_AZIMUTH_DEG = 30.0
PREVIEW_ELEVATION_DEG = 20.0


@dataclass
class SJCResult:
    """What a run returns.

    Attributes:
        field: the optimised voxel field.
        step: steps done in all (including those before a resume).
        stopped: True when ``should_stop`` ended the run early.
        losses: the last step's losses.
    """

    field: VoxelField
    step: int
    stopped: bool
    losses: dict[str, float] = dc_field(default_factory=dict)


@dataclass
class _RNG:
    cameras: np.random.Generator
    noise: torch.Generator

    @classmethod
    def seeded(cls, seed: int) -> "_RNG":
        torch.manual_seed(seed)
        random.seed(seed)
        return cls(np.random.default_rng(seed), torch.Generator().manual_seed(seed))

    def state(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": copy.deepcopy(self.cameras.bit_generator.state),
            "noise": self.noise.get_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            s["cuda"] = torch.cuda.get_rng_state_all()
        return s

    def restore(self, s: dict[str, Any]) -> None:
        torch.set_rng_state(s["torch"])
        self.cameras.bit_generator.state = s["numpy"]
        self.noise.set_state(s["noise"])
        version, internal, gauss = s["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])


def _cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor detached on the CPU (the state must not change as training goes on)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


def field_args_for(config: SJCConfig, channels: int) -> dict[str, Any]:
    """The VoxelField constructor arguments a config asks for."""
    return {"grid_size": config.grid_size, "channels": channels, "bbox": config.bbox,
            "density_shift": config.density_shift, "feature_activation": config.feature_activation}


def make_state(field: VoxelField, field_args: dict, opt: torch.optim.Optimizer, step: int, rng: _RNG, config: SJCConfig) -> dict[str, Any]:
    """The resumable state after ``step`` steps (CPU copies; see :mod:`sjc_engine.checkpoint`)."""
    grid = field.occupancy_grid
    return {
        "field": _cpu_copy(field.state_dict()),
        "occupancy": None if grid is None else {"bits": _cpu_copy(grid.bits), "cell": grid.cell,
                                                "stop_transmittance": grid.stop_transmittance},
        "field_args": dict(field_args),
        "optimizer": _cpu_copy(opt.state_dict()),
        "step": step,
        "rng": rng.state(),
        "config": config.to_dict(),
    }


def resolve_field_device(config: SJCConfig, denoiser: Denoiser) -> torch.device:
    """Where the field lives: ``config.device``, or the denoiser's device for ``"auto"``."""
    return torch.device(denoiser.device) if config.device == "auto" else torch.device(config.device)


@torch.no_grad()
def preview_image(field: VoxelField, denoiser: Denoiser, config: SJCConfig) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the field from a fixed three-quarter view (uses no random state).

    Shown at ``config.display_size``: a pixel model (its rendering is the image, e.g. 32 px) renders at twice
    ``render_size`` while that stays within the display size (the field renders at any size); the decoded
    image is then scaled up (bicubic) to the display height. Latent models decode at 8x and render as trained.
    """
    from sjc_engine.export.images import to_uint8_image
    from sjc_engine.export.video import upscale

    size = config.render_size
    if not denoiser.is_latent and 2 * size <= config.display_size:
        size *= 2
    cam = spherical_camera(PREVIEW_AZIMUTH_DEG, PREVIEW_ELEVATION_DEG, config.cam_radius, config.test_fov_deg, size)
    img = render_image(field, cam, config.step_ratio).image[None]  # (1, C, H, W)
    image = to_uint8_image(denoiser.decode(img.to(denoiser.device)).float()[0])  # (3, H', W') -> (H', W', 3)
    return upscale(image, config.display_size)


def run_sjc(
    config: SJCConfig,
    denoiser: Denoiser,
    callbacks: Callbacks | None = None,
    resume: dict[str, Any] | None = None,
    field: VoxelField | None = None,
    occupancy: OccupancySettings | None = DEFAULT_SETTINGS,
) -> SJCResult:
    """Optimise a voxel field for ``config.prompt`` with the denoiser's score (Score Jacobian Chaining).

    Args:
        config: the run's settings (``config.steps`` is the total, also when resuming).
        denoiser: the VE denoiser (its ``channels`` sets the field's feature channels).
        callbacks: progress, previews, checkpoints and cooperative cancel.
        resume: a state from ``on_checkpoint`` / :func:`sjc_engine.checkpoint.load_checkpoint`; the run
            continues from its step with its field, optimiser and random state.
        field: start from this field instead of a fresh one (ignored when resuming; a fresh one gets the
            config's density blob, :mod:`sjc_engine.priors`).
        occupancy: empty-space skipping (:class:`~sjc_engine.occupancy.OccupancySettings`, default: on, rebuilt
            every 8 steps); None or ``every=0``: every sample is marched, as the reference does.
    """
    cb = callbacks or Callbacks()
    # 1. seeds and the field
    with_blob = resume is not None or field is None  # the field started from the config's blob (a resumed run too)
    rng = _RNG.seeded(config.seed)
    device = resolve_field_device(config, denoiser)
    if resume is not None:
        field_args = dict(resume["field_args"])
        field = VoxelField(**field_args)
        field.load_state_dict(resume["field"])
    elif field is None:
        field_args = field_args_for(config, denoiser.channels)
        field = add_density_blob(VoxelField(**field_args), config.blob_density, config.blob_radius)
    else:
        field_args = field.config()
    if resume is None and config.background == "random":
        field.fill_background(NEUTRAL_BACKGROUND)  # what renders of the result show; the views get random ones
    field = field.to(device).train()
    skip_every = occupancy.every if occupancy is not None else 0
    field.occupancy_grid = None
    if resume is not None and skip_every > 0 and resume.get("occupancy") is not None:
        o = resume["occupancy"]
        field.occupancy_grid = OccupancyGrid(o["bits"].to(device), int(o["cell"]), float(o["stop_transmittance"]))
    march_step = config.step_ratio * field.voxel_size

    # 2. optimiser, schedule, conditioning
    opt = FusedAdamax(field.param_groups(config.lr, config.bg_lr), lr=config.lr)
    start = 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        rng.restore(resume["rng"])
        start = int(resume["step"])
    schedule = SigmaSchedule.from_config(denoiser.sigmas, config)
    total = config.steps
    # the blob leaves the density in equal parts after each of the first decay_steps steps (config.blob_decay)
    decay_steps = round(config.blob_decay * total) if with_blob and config.blob_density > 0 else 0
    decay = blob_profile(field, config.blob_radius) * (config.blob_density / decay_steps) if decay_steps else None
    losses: dict[str, float] = {}
    stopped = False
    step = start
    last_ckpt = start if resume is not None else -1

    # 3. the loop
    for step in range(start, total):
        if cb.should_stop():
            stopped = True
            break
        cams = [sample_camera(rng.cameras, config.render_size, config.cam_radius, config.elev_range_deg, config.fov_range_deg)
                for _ in range(config.views)]
        prompts = [view_prompt(config.prompt, cam) if config.view_prompts else config.prompt for cam in cams]
        cond = denoiser.encode_prompts(prompts)
        if skip_every > 0 and step % skip_every == 0:
            field.refresh_occupancy(march_step, occupancy)

        backgrounds = None
        if config.background == "random":  # one flat colour per view, uniform in [-1, 1]^C
            backgrounds = torch.rand(len(cams), field.channels, generator=rng.noise).mul_(2).sub_(1)  # (V, C)
        outs = render_images(field, cams, config.step_ratio, backgrounds=backgrounds,  # one batch of rays
                             emptiness_scale=config.emptiness_scale, view_weights=False)
        y = torch.stack([out.image for out in outs])  # (V, C, H, W)
        y_model = y
        if y.shape[-1] != denoiser.image_size:
            y_model = F.interpolate(y, size=(denoiser.image_size, denoiser.image_size), mode="bilinear", align_corners=False)

        sigma = schedule(step, rng.cameras)
        paas = paas_grad(
            denoiser, y_model.detach().to(denoiser.device), sigma, cond=cond, guidance_scale=config.guidance_scale,
            n_noise=config.n_noise, var_red=config.var_red, generator=rng.noise,
        )
        grad = paas.grad.to(device=y.device, dtype=y.dtype)  # (1, C, H, W)

        opt.zero_grad(set_to_none=True)
        w_e = emptiness_weight(step, total, config.emptiness_weight, config.emptiness_multiplier, config.emptiness_step)
        l_empty = torch.stack([out.emptiness for out in outs]).mean()  # emptiness_loss of each view's weights
        reg = w_e * l_empty
        l_depth = l_smooth = l_color = None
        if config.center_depth_weight > 0:
            l_depth = torch.stack([center_depth_loss(out.depth) for out in outs]).mean()
            reg = reg + config.center_depth_weight * l_depth
        if config.smooth_weight > 0:
            l_smooth = smoothness_loss(field.density)
            reg = reg + config.smooth_weight * l_smooth
        if config.color_smooth_weight > 0:  # the object's colours' voxel-wide mottle, empty space left out
            with torch.no_grad():
                occupied = (field.density_grid() / config.mesh_threshold).clamp_(max=1.0)  # (N, N, N) in [0, 1]
            l_color = smoothness_loss(field.features, weight=occupied)
            reg = reg + config.color_smooth_weight * l_color
        # the score enters as the vector-Jacobian product y.backward(-grad / V) (the mean over the views; exact
        # for V = 1), written as the scalar sum(y * (-grad / V)) whose gradient in y is exactly that (1 * g), in
        # one pass with the regularisers (autograd.backward with explicit gradients imports sympy: ~1 s)
        loss = (y_model * (-grad / len(outs))).sum()
        if reg.requires_grad:
            loss = loss + reg
        loss.backward()
        opt.step()
        if step < decay_steps:
            with torch.no_grad():
                field.density.sub_(decay)

        done = step + 1
        if done == total and config.fill_cavities:  # the field becomes the solid its surface encloses
            fill_cavities(field, config.mesh_threshold)
            if skip_every > 0:
                field.refresh_occupancy(march_step, occupancy)
        losses = {"score": float(grad.pow(2).mean()), "emptiness": float(l_empty.detach()), "emptiness_weight": float(w_e)}
        if l_depth is not None:
            losses["center_depth"] = float(l_depth.detach())
        if l_smooth is not None:
            losses["smoothness"] = float(l_smooth.detach())
        if l_color is not None:
            losses["color_smoothness"] = float(l_color.detach())
        preview = None
        if config.preview_every > 0 and (done % config.preview_every == 0 or done == total):
            preview = preview_image(field, denoiser, config)
        cb.on_step(StepReport(step=done, total=total, losses=losses, sigma=sigma, preview=preview, extra={"prompt": prompts[0]}))
        if config.checkpoint_every > 0 and done % config.checkpoint_every == 0:
            cb.on_checkpoint(make_state(field, field_args, opt, done, rng, config), done)
            last_ckpt = done
        step = done

    # 4. the final state
    if last_ckpt != step:
        cb.on_checkpoint(make_state(field, field_args, opt, step, rng, config), step)
    if skip_every > 0:
        field.refresh_occupancy(march_step, occupancy)
    field.eval()
    return SJCResult(field=field, step=step, stopped=stopped, losses=losses)
