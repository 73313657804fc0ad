"""One run's settings: every knob of the SJC optimiser, with the reference implementation's defaults.

Defaults follow pals-ttic/sjc at commit 509138a (``run_sjc.py``, ``voxnerf/``, ``pose.py``, ``adapt_sd.py``)
for Stable Diffusion; the README's settings table lists them.
A model may carry its own recommended settings (the embedded model does, in its ``sjc_model.json``);
:func:`SJCConfig.for_model` applies them under the caller's explicit overrides.

This module imports no torch so that the service's API can validate settings without it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

SigmaSchedule = Literal["random", "annealed"]
Background = Literal["learned", "random"]


class ConfigError(ValueError):
    """A setting is unknown or out of range; ``field`` names it (the service reports it as that field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class SJCConfig:
    """Settings of one SJC run.

    Args:
        prompt: the text prompt (without view prefix; the loop adds "front view of" etc.).
        model: ``"embedded"`` (the shipped default), a catalog name, or a local path to a diffusers
            folder or a single ``.safetensors``/``.ckpt`` file.
        seed: seeds torch, numpy and Python's ``random``; a run is reproducible on CPU.
        steps: optimiser steps (reference: 10,000).
        grid_size: voxels per side of the density and feature grids (reference: 100).
        bbox: half-size of the scene box ``[-bbox, bbox]^3`` (reference: 1.0).
        render_size: rendered image side in pixels (64 = SD latent size; 32 for the embedded model).
        step_ratio: ray-march step as a fraction of the voxel size (reference: 0.5).
        density_shift: added to the raw density before softplus (reference: -1.0).
        blob_density, blob_radius: a fresh field starts with raw density ``blob_density * max(0, 1 - |x| /
            blob_radius)`` (:mod:`sjc_engine.priors`; reference: 0, empty space; radius default 0.5).
        blob_decay: fraction of the run over which the blob is taken out of the density again, in equal parts
            after each step (default 0: it stays, only the optimiser moves it). The blob then gives every shape
            mass to start from without holding density where no view asks for it (a torus's hole).
        fill_cavities: after the last step, fill what the field's surface encloses (:mod:`sjc_engine.cavities`:
            empty nodes that do not reach the grid's border get the occupied nodes' median raw density and the
            nearest occupied node's features), so the field is the solid the mesh export takes (default False:
            the field as the optimiser left it, as the reference).
        feature_activation: ``"identity"`` (reference) or ``"tanh"`` (features squashed into [-1, 1];
            for pixel models, see :class:`sjc_engine.field.VoxelField`).
        cam_radius: camera distance from the origin (reference: 1.5).
        elev_range_deg: elevation range in degrees, sampled area-uniformly (reference: about -6 to 90).
        fov_range_deg: vertical field of view range in degrees, uniform (reference: 40 to 70).
        test_fov_deg: field of view of turntable renders (reference: 60).
        view_prompts: prefix prompts with "front view of", "overhead view of", ...
        guidance_scale: classifier-free guidance scale (reference: 100 for 3D).
        sigma_schedule: ``"random"`` (uniform over the model's timestep ticks in range) or
            ``"annealed"`` (from sigma_max down to sigma_min over the run).
        tick_trim: ``(high, low)``: ticks dropped from the high-sigma end and from the low-sigma end of
            the model's timestep table when sigma_min/sigma_max are not given. The reference slices
            its descending table ``us[30:-10]``: 30 ticks off the top, 10 off the bottom, leaving
            sigma ~ 0.098..12.23 for Stable Diffusion.
        sigma_min, sigma_max: explicit sigma range; ``None`` uses the trimmed tick table.
        views: cameras rendered and scored per step (reference: 1); their score gradients are averaged, and all
            views and noise samples go through the denoiser in one batch (on a CPU a batch of 4 costs about twice
            a batch of 1, so fewer, better-informed steps come cheaper).
        n_noise: PAAS noise samples averaged per view and step (reference: 1).
        var_red: the reference's variance-reduced gradient ``(D - y)/sigma`` (True) or ``(D - z)/sigma``.
        lr: Adamax learning rate of the grids (reference: 0.05).
        bg_lr: learning rate of the background texture (reference: 1e-4).
        background: what the scored views are composited over: ``"learned"`` (the field's background
            texture, the reference) or ``"random"`` (each view a flat colour drawn uniformly from [-1, 1]^C, new
            every step; for pixel models, ``feature_activation="tanh"``). With ``"random"`` the field's texture is
            set to a flat grey (:data:`sjc_engine.field.NEUTRAL_BACKGROUND`, unless resuming) and left alone;
            renders of the result (previews, video, thumbnail) show it. A sheet of the field that a learned
            background can hide (by taking its colour) shows against a random one.
        emptiness_scale: beta in ``log(1 + beta * w)`` (reference: 10).
        emptiness_weight: emptiness loss weight in the first stage (reference: 1e4).
        emptiness_multiplier: factor on the weight in the second stage (reference: 20).
        emptiness_step: fraction of the run after which the second stage starts (reference: 0.5).
        center_depth_weight: weight of the center-depth loss; 0 disables it (reference: off).
        smooth_weight: weight of the smoothness loss on the raw density (the mean squared difference of
            neighbouring voxels, summed over the three axes; :func:`sjc_engine.losses.smoothness_loss`); 0 disables
            it (reference: off).
        color_smooth_weight: weight of the same smoothness loss on the raw features (for pixel models, the
            colours), each difference weighted by the less occupied of its two nodes (activated density over
            ``mesh_threshold``, at most 1), so the object's colours are evened out and empty space's left alone:
            the score leaves them mottled a voxel or two wide; 0 disables it (reference: off).
        preview_every: steps between preview images passed to callbacks (0: never).
        checkpoint_every: steps between checkpoint callbacks (0: never).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        half: fp16 denoiser on CUDA.
        mesh_threshold: activated density above which a voxel counts as occupied for the mesh and IoU
            (default 5.0: about 10% opacity per voxel at 100^3, 16x the 0.31 of untouched space).
        display_size: height in pixels of the turntable frames and the thumbnail (default 256; the field is
            rendered at this size, or at size / 8 before a VAE decode; never below ``render_size``).
        target_faces: face budget of the exported mesh (default 30,000, like Meshy's default polycount).
        texture_size: side in texels of the mesh's base-colour texture (default 1024).
        video_frames: frames of the turntable video.
    """

    prompt: str = ""
    model: str = "embedded"
    seed: int = 0
    steps: int = 10_000
    grid_size: int = 100
    bbox: float = 1.0
    render_size: int = 64
    step_ratio: float = 0.5
    density_shift: float = -1.0
    blob_density: float = 0.0
    blob_radius: float = 0.5
    blob_decay: float = 0.0
    fill_cavities: bool = False
    feature_activation: Literal["identity", "tanh"] = "identity"
    cam_radius: float = 1.5
    elev_range_deg: tuple[float, float] = (-6.0, 90.0)
    fov_range_deg: tuple[float, float] = (40.0, 70.0)
    test_fov_deg: float = 60.0
    view_prompts: bool = True
    guidance_scale: float = 100.0
    sigma_schedule: SigmaSchedule = "random"
    tick_trim: tuple[int, int] = (30, 10)
    sigma_min: float | None = None
    sigma_max: float | None = None
    views: int = 1
    n_noise: int = 1
    var_red: bool = True
    lr: float = 0.05
    bg_lr: float = 1e-4
    background: Background = "learned"
    emptiness_scale: float = 10.0
    emptiness_weight: float = 1e4
    emptiness_multiplier: float = 20.0
    emptiness_step: float = 0.5
    center_depth_weight: float = 0.0
    smooth_weight: float = 0.0
    color_smooth_weight: float = 0.0
    preview_every: int = 100
    checkpoint_every: int = 500
    device: Literal["auto", "cpu", "cuda"] = "auto"
    half: bool = True
    mesh_threshold: float = 5.0
    display_size: int = 256
    target_faces: int = 30_000
    texture_size: int = 1024
    video_frames: int = 60

    def __post_init__(self) -> None:
        self.elev_range_deg = tuple(self.elev_range_deg)  # type: ignore[assignment]
        self.fov_range_deg = tuple(self.fov_range_deg)  # type: ignore[assignment]
        self.tick_trim = tuple(self.tick_trim)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that is out of range."""
        checks: list[tuple[str, bool]] = [
            ("steps", self.steps >= 1),
            ("grid_size", 4 <= self.grid_size <= 512),
            ("bbox", self.bbox > 0),
            ("render_size", 8 <= self.render_size <= 512),
            ("step_ratio", 0 < self.step_ratio <= 4),
            ("blob_density", 0 <= self.blob_density <= 100),
            ("blob_radius", 0 < self.blob_radius <= 2 * self.bbox),
            ("blob_decay", 0 <= self.blob_decay <= 1),
            ("cam_radius", self.cam_radius > 0),
            ("elev_range_deg", -90 <= self.elev_range_deg[0] <= self.elev_range_deg[1] <= 90),
            ("fov_range_deg", 1 <= self.fov_range_deg[0] <= self.fov_range_deg[1] < 180),
            ("guidance_scale", self.guidance_scale >= 0),
            ("sigma_schedule", self.sigma_schedule in ("random", "annealed")),
            ("views", 1 <= self.views <= 64),
            ("n_noise", self.n_noise >= 1),
            ("lr", self.lr > 0),
            ("emptiness_scale", self.emptiness_scale > 0),
            ("emptiness_step", 0 <= self.emptiness_step <= 1),
            ("smooth_weight", self.smooth_weight >= 0),
            ("color_smooth_weight", self.color_smooth_weight >= 0),
            ("video_frames", self.video_frames >= 1),
            ("display_size", 16 <= self.display_size <= 2048),
            ("target_faces", 100 <= self.target_faces <= 2_000_000),
            ("texture_size", 64 <= self.texture_size <= 8192),
            ("device", self.device in ("auto", "cpu", "cuda")),
            ("feature_activation", self.feature_activation in ("identity", "tanh")),
            ("background", self.background in get_args(Background)),
        ]
        if self.sigma_min is not None and self.sigma_max is not None:
            checks.append(("sigma_min", 0 < self.sigma_min < self.sigma_max))
        for name, ok in checks:
            if not ok:
                raise ConfigError(name, f"SJCConfig.{name} is out of range: {getattr(self, name)!r}")
        if self.background == "random" and self.feature_activation != "tanh":
            raise ConfigError("background", "SJCConfig.background 'random' needs feature_activation 'tanh' "
                                            "(flat colours in [-1, 1]: pixel models)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("elev_range_deg", "fov_range_deg", "tick_trim"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SJCConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"unknown SJCConfig settings: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def for_model(cls, model_defaults: dict[str, Any], **overrides: Any) -> "SJCConfig":
        """Reference defaults, then the model's recommended settings, then the caller's overrides.

        ``None`` values in ``overrides`` mean "not given" and are skipped.
        """
        merged: dict[str, Any] = dict(model_defaults)
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(merged)
