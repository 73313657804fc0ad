"""The embedded model's components, built from configs: tokenizer, text encoder, UNet, scheduler.

Saved in diffusers layout (``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``,
``model_index.json``) plus ``sjc_model.json`` (see :mod:`sjc_engine.catalog`), so the engine loads it with the
same code as any pixel text-conditioned diffusers model. Text conditioning is the text encoder's
``last_hidden_state`` of ``tokenizer(prompt, padding="max_length", max_length=model_max_length)`` without an
attention mask (as Stable Diffusion pipelines do); the empty prompt ``""`` is the unconditional input.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from sjc_engine.cameras import view_prefix

from .dataset import CAMERA, LIGHT_DIR, PALETTE
from .shapes import SHAPES

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
MAX_LENGTH = 16
TEXT_HIDDEN = 64


def vocabulary_words(colors: list[str] | None = None, shapes: list[str] | None = None) -> list[str]:
    """Every word a caption can hold: view-prefix words, articles, colours and shapes."""
    prefixes = {view_prefix(az, el) for az in (0, 90, 180, 270) for el in (0, 89)}
    words: list[str] = []
    for w in [*" ".join(sorted(prefixes)).split(), "a", "an", "the", *(colors or PALETTE), *(shapes or SHAPES)]:
        if w not in words:
            words.append(w)
    return words


def build_tokenizer(words: list[str] | None = None, max_length: int = MAX_LENGTH) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (lower-cased, split on whitespace and punctuation) adding ``<bos>``/``<eos>``."""
    vocab = {tok: i for i, tok in enumerate([PAD, UNK, BOS, EOS, *(words or vocabulary_words())])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=max_length,
        padding_side="right",
    )


def build_text_encoder(tokenizer: PreTrainedTokenizerFast, hidden: int = TEXT_HIDDEN, layers: int = 2) -> CLIPTextModel:
    """A tiny CLIP text transformer, randomly initialised (trained from scratch with the UNet)."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        projection_dim=hidden,
    )
    return CLIPTextModel(config)


def build_unet(cross_attention_dim: int = TEXT_HIDDEN, sample_size: int = 32) -> UNet2DConditionModel:
    """A small pixel UNet (~0.6M parameters): 32 -> 16 -> 8 (16/32/64 channels), cross attention at 8 x 8.

    Sized for training on two shared CPU cores in under an hour; the objects are flat-shaded and simple.

    The text also conditions every ResNet block globally (``addition_embed_type="text"``: an attention-pooled
    text embedding added to the time embedding), cheap on a CPU and enough for "colour + shape" prompts.
    It needs nothing beyond ``encoder_hidden_states``, so any diffusers caller drives it unchanged.
    """
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
    )


def build_scheduler() -> DDPMScheduler:
    """Stable Diffusion's scaled-linear schedule (VE sigma ~0.03..14.6), epsilon prediction."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=True,
    )


def encode_text(tokenizer: PreTrainedTokenizerFast, text_encoder: CLIPTextModel, prompts: list[str]) -> Tensor:
    """Conditioning (B, L, hidden) exactly as the engine computes it (padded to max length, no mask)."""
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def default_meta(steps_trained: int = 0) -> dict[str, Any]:
    """``sjc_model.json``: kind, vocabulary and the SJC settings recommended with this model."""
    return {
        "name": "embedded",
        "kind": "pixel",
        "description": (
            "small text-to-image pixel diffusion model (32x32) trained by this project on procedural renders: "
            "prompts 'a <colour> <shape>'"
        ),
        "torch_threads": 1,  # its operations are too small for a second torch thread to pay (sjc_engine/threads.py)
        "vocabulary": {"colors": list(PALETTE), "shapes": list(SHAPES)},
        "training": {"steps": steps_trained},
        # the light the training renders are shaded by: the mesh export takes it out of the meshes' colours
        "baked_light": {"direction": list(LIGHT_DIR)},
        "defaults": {
            # the camera distribution the training views were rendered from
            "render_size": 32,
            "grid_size": 64,
            "cam_radius": CAMERA.radius,
            "elev_range_deg": list(CAMERA.elev_range_deg),
            "fov_range_deg": list(CAMERA.fov_range_deg),
            "test_fov_deg": 52.0,
            "view_prompts": True,
            # SJC settings tuned on short CPU runs (see bench/QUALITY.md)
            "steps": 1000,
            "step_ratio": 1.0,
            "guidance_scale": 10.0,
            "sigma_schedule": "random",
            "sigma_min": 0.05,
            "sigma_max": 2.0,
            "density_shift": -5.0,
            "lr": 0.1,
            "bg_lr": 0.1,
            "emptiness_weight": 100.0,
            "emptiness_multiplier": 3.0,
            "emptiness_step": 0.5,
            "half": False,
            "feature_activation": "tanh",
        },
    }


def save_model(
    out_dir: str | Path,
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: PreTrainedTokenizerFast,
    scheduler: DDPMScheduler,
    meta: dict[str, Any],
) -> Path:
    """Write the model folder atomically: build it in a sibling temp folder, then swap it in.

    If ``out_dir`` already holds an ``sjc_model.json``, its ``defaults`` are kept (they may have been tuned
    after training started); the rest of ``meta`` is written as given.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    old_meta = out / "sjc_model.json"
    if old_meta.is_file():
        meta = {**meta, "defaults": json.loads(old_meta.read_text()).get("defaults", meta.get("defaults", {}))}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "tokenizer")
        scheduler.save_pretrained(tmp / "scheduler")
        index = {
            "_class_name": "SJCEmbeddedPipeline",
            "_diffusers_version": _diffusers_version(),
            "unet": ["diffusers", "UNet2DConditionModel"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
            "scheduler": ["diffusers", "DDPMScheduler"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "sjc_model.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        for f in tmp.rglob("*"):
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_model(path: str | Path) -> tuple[UNet2DConditionModel, CLIPTextModel, PreTrainedTokenizerFast, DDPMScheduler]:
    """Load the four components back from a saved folder (offline)."""
    from transformers import AutoTokenizer

    p = Path(path)
    unet = UNet2DConditionModel.from_pretrained(p / "unet")
    text_encoder = CLIPTextModel.from_pretrained(p / "text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(p / "tokenizer")
    scheduler = DDPMScheduler.from_pretrained(p / "scheduler")
    return unet, text_encoder, tokenizer, scheduler


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
