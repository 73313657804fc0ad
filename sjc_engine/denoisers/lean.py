"""Small diffusers/transformers models without diffusers or transformers: the embedded model's fast path.

Importing diffusers costs about 1.5 s before anything loads (``diffusers.utils.torch_utils`` imports
``torch._dynamo``), and its ``UNet2DConditionModel`` module about 3.5 s on two cores (it pulls in the LoRA,
single-file and quantisation loaders); transformers' ``CLIPTextModel`` module 1-3 s more. A 32x32 pixel model
loads in a tenth of that, so a pixel text-conditioned model whose configs fit what this module implements is built here
from plain torch layers, with the same parameter names (the weights files load strictly, every tensor accounted
for), the same operations in the same order (outputs equal diffusers' to float rounding; the tests compare):

- :class:`LeanUNet`: ``UNet2DConditionModel`` with ``DownBlock2D``/``CrossAttnDownBlock2D``,
  ``UNetMidBlock2DCrossAttn``, ``UpBlock2D``/``CrossAttnUpBlock2D``, positional time embedding, optional
  ``addition_embed_type="text"`` (attention pooling of the prompt into the time embedding);
- :class:`LeanCLIPText`: transformers' ``CLIPTextModel`` (causal encoder, ``quick_gelu`` or ``gelu``), the last
  hidden state only;
- :class:`LeanTokenizer`: a ``tokenizer.json`` (Rust ``tokenizers``) padded and truncated as transformers' fast
  tokenizer does;
- :class:`Schedule`: the config of a ``linear``/``scaled_linear``/``trained_betas`` DDPM schedule
  (:func:`~sjc_engine.denoisers.vpve.alphas_cumprod_float64` reads nothing else).

Per call the UNet also skips what depends on the prompt only: the text-pooled time embedding and the
cross-attention keys and values are computed once per distinct context (:meth:`LeanUNet.context_cache`), not at
each of the 1-2 thousand steps of a run. After :attr:`LeanUNet.TRACE_AFTER` inference calls of one shape the UNet
body is traced (``torch.jit.trace`` of a function: the weights are the parameters' own tensors, the cached keys and
values inputs): 0.1-0.15 s once, then no interpreter between the operations, so the two guidance branches' threads
no longer wait for each other's Python, outputs bit-equal (figures in bench/RESULTS.md, "Embedded model: load and
call cost", and "The guided call traced, the backward shared, smaller charts").

Anything outside this (another block type, a config flag this code does not implement, ``.bin`` weights, a VAE)
is :func:`unet_config_unsupported` & co. returning a reason, and the loader uses diffusers as before.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# UNet2DConditionModel config keys this module implements at the given values (diffusers' defaults) ...
_UNET_FIXED: dict[str, Any] = {
    "act_fn": "silu", "addition_time_embed_dim": None, "attention_type": "default", "center_input_sample": False,
    "class_embed_type": None, "class_embeddings_concat": False, "conv_in_kernel": 3, "conv_out_kernel": 3,
    "cross_attention_norm": None, "downsample_padding": 1, "dual_cross_attention": False, "encoder_hid_dim": None,
    "encoder_hid_dim_type": None, "mid_block_only_cross_attention": None, "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn", "num_class_embeds": None, "only_cross_attention": False,
    "projection_class_embeddings_input_dim": None, "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default", "reverse_transformer_layers_per_block": None, "time_cond_proj_dim": None,
    "time_embedding_act_fn": None, "time_embedding_dim": None, "time_embedding_type": "positional",
    "timestep_post_act": None, "upcast_attention": False, "use_linear_projection": False,
}
# ... and those it takes as they come (checked where they are used).
_UNET_FREE = {
    "in_channels", "out_channels", "block_out_channels", "layers_per_block", "cross_attention_dim",
    "attention_head_dim", "num_attention_heads", "norm_num_groups", "norm_eps", "sample_size", "down_block_types",
    "up_block_types", "addition_embed_type", "addition_embed_type_num_heads", "transformer_layers_per_block",
    "flip_sin_to_cos", "freq_shift", "dropout",
}
log = logging.getLogger(__name__)
_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D")
_UP = ("UpBlock2D", "CrossAttnUpBlock2D")
_CLIP_FREE = {
    "architectures", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id", "dtype", "torch_dtype",
    "hidden_act", "hidden_size", "initializer_factor", "initializer_range", "intermediate_size", "layer_norm_eps",
    "max_position_embeddings", "model_type", "num_attention_heads", "num_hidden_layers", "projection_dim",
    "transformers_version", "vocab_size", "dropout", "output_attentions", "output_hidden_states", "use_cache",
}
_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
_TOKENIZER_FREE = {  # tokenizer_config.json keys that change nothing here (or are checked below)
    "backend", "tokenizer_class", "bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "sep_token",
    "cls_token", "model_max_length", "padding_side", "truncation_side", "added_tokens_decoder",
    "clean_up_tokenization_spaces", "model_input_names", "extra_special_tokens", "additional_special_tokens",
}


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# -- what fits ----------------------------------------------------------------------------------------------------
def unet_config_unsupported(cfg: dict[str, Any]) -> str | None:
    """Why :class:`LeanUNet` cannot build this ``UNet2DConditionModel`` config, or ``None`` when it can."""
    if cfg.get("_class_name") != "UNet2DConditionModel":
        return f"class {cfg.get('_class_name')!r}"
    for key, value in cfg.items():
        if key.startswith("_") or key in _UNET_FREE:
            continue
        if key not in _UNET_FIXED:
            return f"unknown config key {key!r}"
        if value != _UNET_FIXED[key] and not (key == "mid_block_only_cross_attention" and value is False):
            return f"{key}={value!r}"
    n = len(cfg.get("block_out_channels", ()))
    if n == 0 or list(cfg.get("down_block_types", ())) == [] or len(cfg["down_block_types"]) != n:
        return "block types and block_out_channels differ in length"
    if any(b not in _DOWN for b in cfg["down_block_types"]) or any(b not in _UP for b in cfg.get("up_block_types", ())):
        return f"block types {cfg['down_block_types']} / {cfg.get('up_block_types')}"
    if len(cfg["up_block_types"]) != n:
        return "up and down block counts differ"
    if int(cfg["block_out_channels"][0]) % 2:
        return "odd time-embedding width"
    if cfg.get("addition_embed_type") not in (None, "text"):
        return f"addition_embed_type={cfg['addition_embed_type']!r}"
    for key in ("layers_per_block", "transformer_layers_per_block", "attention_head_dim", "num_attention_heads",
                "cross_attention_dim"):
        value = cfg.get(key)
        if isinstance(value, (list, tuple)) and len(value) != n:
            return f"{key} has {len(value)} entries for {n} blocks"
        if isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple)) for v in value):
            return f"nested {key}"
    if isinstance(cfg.get("cross_attention_dim"), (list, tuple)):
        return "per-block cross_attention_dim"
    return None


def clip_config_unsupported(cfg: dict[str, Any]) -> str | None:
    """Why :class:`LeanCLIPText` cannot build this transformers text-encoder config, or ``None``."""
    if cfg.get("model_type") != "clip_text_model" or cfg.get("architectures", ["CLIPTextModel"]) != ["CLIPTextModel"]:
        return f"text encoder {cfg.get('architectures')} / {cfg.get('model_type')!r}"
    unknown = sorted(k for k in cfg if not k.startswith("_") and k not in _CLIP_FREE)
    if unknown:
        return f"unknown text-encoder config keys {unknown}"
    if cfg.get("hidden_act", "quick_gelu") not in ("quick_gelu", "gelu"):
        return f"hidden_act={cfg['hidden_act']!r}"
    return None


def tokenizer_unsupported(folder: Path) -> str | None:
    """Why :class:`LeanTokenizer` cannot stand in for ``AutoTokenizer`` on ``folder``, or ``None``."""
    cfg_file, tok_file = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if not (cfg_file.is_file() and tok_file.is_file()):
        return "no tokenizer.json + tokenizer_config.json"
    cfg = _read(cfg_file)
    if cfg.get("tokenizer_class") not in _TOKENIZER_CLASSES:
        return f"tokenizer_class={cfg.get('tokenizer_class')!r}"
    unknown = sorted(k for k in cfg if k not in _TOKENIZER_FREE)
    if unknown:
        return f"unknown tokenizer config keys {unknown}"
    if not isinstance(cfg.get("pad_token"), str):
        return "no pad token"
    if cfg.get("padding_side", "right") != "right" or cfg.get("truncation_side", "right") != "right":
        return "left padding or truncation"
    return None


def schedule_unsupported(cfg: dict[str, Any]) -> str | None:
    """Why :class:`Schedule` cannot stand in for diffusers' scheduler for this config, or ``None``."""
    if cfg.get("rescale_betas_zero_snr", False):
        return "zero-terminal-SNR rescaling"
    if cfg.get("trained_betas") is None and cfg.get("beta_schedule", "linear") not in ("linear", "scaled_linear"):
        return f"beta_schedule={cfg.get('beta_schedule')!r}"
    return None


# -- the schedule -------------------------------------------------------------------------------------------------
class Schedule:
    """A DDPM scheduler's config, all :class:`~sjc_engine.denoisers.diffusers_denoiser.DiffusersDenoiser` reads.

    ``alphas_cumprod_float64`` computes the table from ``beta_schedule``/``beta_start``/``beta_end``/
    ``trained_betas``; ``prediction_type`` picks the output conversion. Diffusers' defaults fill missing keys.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        full = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                "trained_betas": None, "prediction_type": "epsilon", "rescale_betas_zero_snr": False}
        full.update({k: v for k, v in cfg.items() if not k.startswith("_")})
        self.config = SimpleNamespace(**full)


# -- the tokenizer ------------------------------------------------------------------------------------------------
class LeanTokenizer:
    """``tokenizer.json`` through the Rust ``tokenizers`` library, called like transformers' fast tokenizer.

    Only what :meth:`DiffusersDenoiser._embed` uses: ``pad_token``, ``model_max_length`` and
    ``tok(prompt, padding="max_length", max_length=n, truncation=True, return_tensors="pt").input_ids``.
    """

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        cfg = _read(folder / "tokenizer_config.json")
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.pad_token: str | None = cfg.get("pad_token")
        self.model_max_length = int(cfg.get("model_max_length", 10**30))
        pad_id = self._tok.token_to_id(self.pad_token) if self.pad_token is not None else None
        if self.pad_token is not None and pad_id is None:
            raise ValueError(f"pad token {self.pad_token!r} is not in the vocabulary")
        self.pad_token_id = pad_id
        self._configured: int | None = None

    def __call__(self, text: str, padding: str = "max_length", max_length: int | None = None,
                 truncation: bool = True, return_tensors: str = "pt") -> SimpleNamespace:
        if padding != "max_length" or not truncation or return_tensors != "pt" or max_length is None:
            raise NotImplementedError("LeanTokenizer pads and truncates to max_length, returning tensors")
        if self._configured != max_length:
            self._tok.enable_truncation(max_length, stride=0, strategy="longest_first", direction="right")
            self._tok.enable_padding(length=max_length, direction="right", pad_id=self.pad_token_id,
                                     pad_type_id=0, pad_token=self.pad_token)
            self._configured = max_length
        ids = self._tok.encode(text, add_special_tokens=True).ids
        return SimpleNamespace(input_ids=torch.tensor([ids], dtype=torch.long))


# -- the text encoder ---------------------------------------------------------------------------------------------
class _CLIPAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, L, D = x.shape
        q, k, v = (p(x).view(B, L, self.heads, D // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, L, d)
        return self.out_proj(out.transpose(1, 2).reshape(B, L, D))


class _CLIPMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else F.gelu(h)
        return self.fc2(h)


class _CLIPLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, act: str, eps: float) -> None:
        super().__init__()
        self.self_attn = _CLIPAttention(dim, heads)
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.mlp = _CLIPMLP(dim, hidden, act)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class LeanCLIPText(nn.Module):
    """transformers' ``CLIPTextModel`` forward (no attention mask: causal only); returns ``(last_hidden_state,)``."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        full = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
                "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "vocab_size": 49408}
        full.update(cfg)
        self.config = SimpleNamespace(**full)
        D = int(full["hidden_size"])
        self.embeddings = nn.Module()
        self.embeddings.token_embedding = nn.Embedding(int(full["vocab_size"]), D)
        self.embeddings.position_embedding = nn.Embedding(int(full["max_position_embeddings"]), D)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            _CLIPLayer(D, int(full["num_attention_heads"]), int(full["intermediate_size"]), full["hidden_act"],
                       float(full["layer_norm_eps"]))
            for _ in range(int(full["num_hidden_layers"]))
        )
        self.final_layer_norm = nn.LayerNorm(D, eps=float(full["layer_norm_eps"]))

    @property
    def dtype(self) -> torch.dtype:
        return self.final_layer_norm.weight.dtype

    def forward(self, input_ids: Tensor) -> tuple[Tensor]:
        L = input_ids.shape[1]
        pos = torch.arange(L, device=input_ids.device)
        x = self.embeddings.token_embedding(input_ids) + self.embeddings.position_embedding(pos)[None]
        for layer in self.encoder.layers:
            x = layer(x)
        return (self.final_layer_norm(x),)


# -- the UNet -----------------------------------------------------------------------------------------------------
def _per_block(value: Any, n: int) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


class _Resnet(nn.Module):
    """diffusers' ``ResnetBlock2D`` (``time_embedding_norm="default"``, output scale 1); ``temb`` is ``silu(emb)``."""

    def __init__(self, cin: int, cout: int, temb: int, groups: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class _Attention(nn.Module):
    """diffusers' ``Attention`` with ``AttnProcessor2_0``; cross-attention keys/values may come precomputed."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, heads, L, head_dim) of ``context`` (B, L, D)."""
        B = context.shape[0]
        k, v = self.to_k(context), self.to_v(context)
        d = k.shape[-1] // self.heads
        return k.view(B, -1, self.heads, d).transpose(1, 2), v.view(B, -1, self.heads, d).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None, kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        B = x.shape[0]
        k, v = kv if kv is not None else self.kv(x if context is None else context)
        q = self.to_q(x)
        q = q.view(B, -1, self.heads, q.shape[-1] // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(B, -1, self.heads * q.shape[-1])
        return self.to_out[0](out)


class _GEGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden * 2)

    def forward(self, x: Tensor) -> Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class _FeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class _TransformerBlock(nn.Module):
    """diffusers' ``BasicTransformerBlock`` (``norm_type="layer_norm"``, self- then cross-attention, GEGLU)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))
        self.attn1 = _Attention(dim, heads, head_dim, None)
        self.attn2 = _Attention(dim, heads, head_dim, context_dim)
        self.ff = _FeedForward(dim)

    def forward(self, x: Tensor, context: Tensor, kv: tuple[Tensor, Tensor] | None) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context, kv) + x
        return self.ff(self.norm3(x)) + x


class _Transformer2D(nn.Module):
    """diffusers' ``Transformer2DModel`` on continuous inputs with 1x1-conv projections."""

    def __init__(self, channels: int, heads: int, layers: int, context_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            _TransformerBlock(channels, heads, channels // heads, context_dim) for _ in range(layers)
        )
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, context: Tensor, kvs: list[tuple[Tensor, Tensor]] | None) -> Tensor:
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(B, H * W, C)
        for i, block in enumerate(self.transformer_blocks):
            h = block(h, context, kvs[i] if kvs is not None else None)
        h = h.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(h) + x


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, attn: tuple[int, int, int] | None, down: bool,
                 temb: int, groups: int, eps: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(_Resnet(cin if i == 0 else cout, cout, temb, groups, eps) for i in range(layers))
        if attn is not None:
            heads, tl, ctx = attn
            self.attentions = nn.ModuleList(_Transformer2D(cout, heads, tl, ctx, groups) for _ in range(layers))
        if down:
            self.downsamplers = nn.ModuleList([nn.Module()])
            self.downsamplers[0].conv = nn.Conv2d(cout, cout, 3, stride=2, padding=1)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, prev: int, layers: int, attn: tuple[int, int, int] | None, up: bool,
                 temb: int, groups: int, eps: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            _Resnet((prev if i == 0 else cout) + (cin if i == layers - 1 else cout), cout, temb, groups, eps)
            for i in range(layers)
        )
        if attn is not None:
            heads, tl, ctx = attn
            self.attentions = nn.ModuleList(_Transformer2D(cout, heads, tl, ctx, groups) for _ in range(layers))
        if up:
            self.upsamplers = nn.ModuleList([nn.Module()])
            self.upsamplers[0].conv = nn.Conv2d(cout, cout, 3, padding=1)


class _Mid(nn.Module):
    def __init__(self, ch: int, heads: int, tl: int, ctx: int, temb: int, groups: int, eps: float) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([_Transformer2D(ch, heads, tl, ctx, groups)])
        self.resnets = nn.ModuleList([_Resnet(ch, ch, temb, groups, eps), _Resnet(ch, ch, temb, groups, eps)])


class LeanUNet(nn.Module):
    """diffusers' ``UNet2DConditionModel`` for the configs :func:`unet_config_unsupported` accepts.

    ``forward(sample, timestep, encoder_hidden_states)`` returns the prediction tensor (diffusers returns it
    wrapped in ``.sample``). ``config`` holds the config's keys, as diffusers' does. Inference only: the
    prompt-dependent parts are cached (:meth:`context_cache`), so gradients never reach the text side, and the
    weights are made without ``requires_grad`` (a trace takes them as constants, :meth:`_build_trace`).
    """

    CONTEXT_CACHE = 16
    #: Inference calls with the same shapes after which the UNet body is traced (``torch.jit.trace``: 0.1-0.15 s
    #: for the embedded model on two cores, then 24-26 ms against 31-35 ms a guided call of 4 views with its two
    #: branches side by side, outputs equal; a run pays it back within about 20 steps, and makes two calls a
    #: step). ``trace = False`` (``SJC_LEAN_TRACE=0`` in the loader) keeps every call eager.
    TRACE_AFTER = 8
    MAX_TRACES = 4
    #: Layout of the convolutions' weights and activations: channels last, as oneDNN's kernels take them (no
    #: reorder around each convolution). A guided call of the embedded model, 4 views, branches side by side,
    #: traced: 22.0 against 25.1 ms in NCHW (interleaved in one process, 140 calls each); outputs to ~3e-6.
    MEMORY_FORMAT = torch.channels_last

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        reason = unet_config_unsupported(cfg)
        if reason is not None:
            raise ValueError(f"LeanUNet cannot build this config: {reason}")
        self.config = SimpleNamespace(**cfg)
        c = cfg
        chans = list(c["block_out_channels"])
        n = len(chans)
        groups, eps = int(c.get("norm_num_groups", 32)), float(c.get("norm_eps", 1e-5))
        ctx = int(c.get("cross_attention_dim", 1280))
        heads = _per_block(c.get("num_attention_heads") or c.get("attention_head_dim", 8), n)
        layers = _per_block(c.get("layers_per_block", 2), n)
        tlayers = _per_block(c.get("transformer_layers_per_block", 1), n)
        temb = chans[0] * 4
        self.flip_sin_to_cos = bool(c.get("flip_sin_to_cos", True))
        self.freq_shift = float(c.get("freq_shift", 0))
        self.conv_in = nn.Conv2d(int(c.get("in_channels", 4)), chans[0], 3, padding=1)
        self.time_embedding = nn.Module()
        self.time_embedding.linear_1 = nn.Linear(chans[0], temb)
        self.time_embedding.linear_2 = nn.Linear(temb, temb)
        self.add_embedding: nn.Module | None = None
        if c.get("addition_embed_type") == "text":
            self.add_embedding = nn.Module()
            self.add_embedding.norm1 = nn.LayerNorm(ctx)
            self.add_embedding.pool = nn.Module()
            self.add_embedding.pool.positional_embedding = nn.Parameter(torch.zeros(1, ctx))
            for name in ("k_proj", "q_proj", "v_proj"):
                setattr(self.add_embedding.pool, name, nn.Linear(ctx, ctx))
            self.add_embedding.proj = nn.Linear(ctx, temb)
            self.add_embedding.norm2 = nn.LayerNorm(temb)
            self.pool_heads = int(c.get("addition_embed_type_num_heads", 64))
        self.down_blocks = nn.ModuleList()
        out = chans[0]
        for i, kind in enumerate(c["down_block_types"]):
            cin, out = out, chans[i]
            attn = (heads[i], tlayers[i], ctx) if kind == "CrossAttnDownBlock2D" else None
            self.down_blocks.append(_Down(cin, out, layers[i], attn, i < n - 1, temb, groups, eps))
        self.mid_block = _Mid(chans[-1], heads[-1], tlayers[-1], ctx, temb, groups, eps)
        rchans, rheads, rlayers, rtl = chans[::-1], heads[::-1], layers[::-1], tlayers[::-1]
        self.up_blocks = nn.ModuleList()
        out = rchans[0]
        for i, kind in enumerate(c["up_block_types"]):
            prev, out, cin = out, rchans[i], rchans[min(i + 1, n - 1)]
            attn = (rheads[i], rtl[i], ctx) if kind == "CrossAttnUpBlock2D" else None
            self.up_blocks.append(_Up(cin, out, prev, rlayers[i] + 1, attn, i < n - 1, temb, groups, eps))
        self.conv_norm_out = nn.GroupNorm(groups, chans[0], eps=eps)
        self.conv_out = nn.Conv2d(chans[0], int(c.get("out_channels", 4)), 3, padding=1)
        self.num_upsamplers = n - 1
        self._ctx_cache: list[tuple[Tensor, tuple[Tensor | None, list[list[tuple[Tensor, Tensor]]]]]] = []
        self.trace = True  # see TRACE_AFTER
        self._lock = threading.RLock()  # the context cache and the traces, for callers on two threads
        self._traces: dict[tuple[Any, ...], Any] = {}
        self._calls: dict[tuple[Any, ...], int] = {}
        self.requires_grad_(False)
        self.to(memory_format=self.MEMORY_FORMAT)  # the convolutions' weights (a loaded state dict keeps it)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    # -- the parts that depend on the prompt only ---------------------------------------------------------------
    def _transformers(self) -> list[_Transformer2D]:
        return [m for m in self.modules() if isinstance(m, _Transformer2D)]

    def _text_time(self, context: Tensor) -> Tensor:
        """diffusers' ``TextTimeEmbedding``: LayerNorm, attention pooling, projection, LayerNorm; (B, temb)."""
        a = self.add_embedding
        assert a is not None
        x = a.norm1(context)
        bs, _, width = x.shape
        heads, d = self.pool_heads, width // self.pool_heads
        pool = a.pool

        def shape(t: Tensor) -> Tensor:
            return t.view(bs, -1, heads, d).transpose(1, 2).reshape(bs * heads, -1, d).transpose(1, 2)

        cls = x.mean(dim=1, keepdim=True) + pool.positional_embedding.to(x.dtype)
        x = torch.cat([cls, x], dim=1)
        q, k, v = shape(pool.q_proj(cls)), shape(pool.k_proj(x)), shape(pool.v_proj(x))
        scale = 1 / math.sqrt(math.sqrt(d))
        w = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        w = torch.softmax(w.float(), dim=-1).type(w.dtype)
        pooled = torch.einsum("bts,bcs->bct", w, v).reshape(bs, -1, 1).transpose(1, 2)[:, 0, :]
        return a.norm2(a.proj(pooled))

    def context_cache(self, context: Tensor) -> tuple[Tensor | None, list[list[tuple[Tensor, Tensor]]]]:
        """The text-pooled time embedding (B, temb) and every cross-attention's keys and values for ``context``.

        Kept for the last :attr:`CONTEXT_CACHE` distinct contexts, found by value (``torch.equal``, a few
        microseconds), so a caller that rebuilds the same guidance batch at every step, for a handful of view
        prompts, computes them once each. Safe to call from two threads (the guidance branches side by side).
        """
        with self._lock:
            return self._context_cache(context)

    def _context_cache(self, context: Tensor) -> tuple[Tensor | None, list[list[tuple[Tensor, Tensor]]]]:
        for i, (seen, value) in enumerate(self._ctx_cache):
            if seen.shape == context.shape and seen.dtype == context.dtype and seen.device == context.device \
                    and torch.equal(seen, context):
                if i:
                    self._ctx_cache.insert(0, self._ctx_cache.pop(i))
                return value
        aug = self._text_time(context) if self.add_embedding is not None else None
        kvs = [[blk.attn2.kv(context) for blk in t.transformer_blocks] for t in self._transformers()]
        self._ctx_cache.insert(0, (context.detach().clone(), (aug, kvs)))
        del self._ctx_cache[self.CONTEXT_CACHE:]
        return aug, kvs

    def _apply(self, fn, *args, **kwargs):  # .to() / .half() / .cuda(): cached tensors and traces are stale
        self._ctx_cache, self._traces, self._calls = [], {}, {}
        return super()._apply(fn, *args, **kwargs)

    # -- forward ------------------------------------------------------------------------------------------------
    def _time(self, timestep: Tensor | float | int, batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=device)
        t = t.reshape(-1).to(device).expand(batch) if t.numel() in (1, batch) else t
        half = self.time_embedding.linear_1.in_features // 2
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=device) / (half - self.freq_shift)
        emb = t[:, None].float() * torch.exp(exponent)[None, :]
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
        if self.flip_sin_to_cos:
            emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
        te = self.time_embedding
        return te.linear_2(F.silu(te.linear_1(emb.to(dtype))))

    def forward(self, sample: Tensor, timestep: Tensor | float | int, encoder_hidden_states: Tensor) -> Tensor:
        aug, kvs = self.context_cache(encoder_hidden_states)
        if self.trace and torch.is_tensor(timestep) and not torch.is_grad_enabled():
            sig = (sample.shape, sample.dtype, sample.device, timestep.shape, timestep.dtype,
                   encoder_hidden_states.shape, encoder_hidden_states.dtype)
            with self._lock:  # one trace per shape, also with two threads calling
                traced = self._traces.get(sig)
                if traced is None:
                    self._calls[sig] = n = self._calls.get(sig, 0) + 1
                    if n >= self.TRACE_AFTER and len(self._traces) < self.MAX_TRACES:
                        traced = self._traces[sig] = self._build_trace(sample, timestep, encoder_hidden_states, aug,
                                                                       kvs)
            if traced:
                with torch.jit.optimized_execution(False):  # this thread's calls: no profiling runs (_build_trace)
                    return traced(sample, timestep, encoder_hidden_states, *_flat(aug, kvs))
        return self.forward_cached(sample, timestep, encoder_hidden_states, aug, kvs)

    def _build_trace(self, sample: Tensor, timestep: Tensor, context: Tensor, aug: Tensor | None,
                     kvs: list[list[tuple[Tensor, Tensor]]]) -> Any:
        """:meth:`forward_cached` traced for these shapes (``torch.jit.trace``), or ``False`` when tracing fails
        (then the call stays eager).

        A function is traced, not the module: the weights enter the graph as constants that are the parameters'
        own tensors (an in-place change of a weight shows in the trace; ``.to()`` and the like drop the traces),
        and no ScriptModule is made for each of the UNet's ~240 submodules (0.45 s of a 0.57 s trace of the
        module, measured on the embedded model). Calls run with the graph executor's optimisations off
        (:func:`torch.jit.optimized_execution`, per thread): its two profiling runs cost 0.2 s and the calls after
        them were no faster."""
        import warnings

        body = _Traceable(self, [len(ab) for ab in kvs], aug is not None)
        args = (sample, timestep, context, *_flat(aug, kvs))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings on shape checks; jit's deprecation notice
                return torch.jit.trace(lambda *a: body(*a), args, check_trace=False)
        except Exception as e:  # noqa: BLE001 - any tracing failure only costs the speed-up
            log.warning("lean UNet: tracing failed (%s: %s); calls stay eager", type(e).__name__, e)
            return False

    def forward_cached(self, sample: Tensor, timestep: Tensor | float | int, context: Tensor, aug: Tensor | None,
                       kvs: list[list[tuple[Tensor, Tensor]]]) -> Tensor:
        """:meth:`forward` given :meth:`context_cache`'s ``aug`` and ``kvs`` for ``context``."""
        B = sample.shape[0]
        sample = sample.contiguous(memory_format=self.MEMORY_FORMAT)  # (B, C, H, W), stored channels last
        emb = self._time(timestep, B, sample.dtype, sample.device)
        if aug is not None:
            emb = emb + aug
        temb = F.silu(emb)  # every ResnetBlock2D applies its nonlinearity to emb first
        attn_kv = iter(kvs)
        forward_upsample_size = any(s % (2 ** self.num_upsamplers) for s in sample.shape[-2:])

        h = self.conv_in(sample)
        skips = [h]
        for blk in self.down_blocks:
            attns = getattr(blk, "attentions", None)
            for i, res in enumerate(blk.resnets):
                h = res(h, temb)
                if attns is not None:
                    h = attns[i](h, context, next(attn_kv))
                skips.append(h)
            if hasattr(blk, "downsamplers"):
                h = blk.downsamplers[0].conv(h)
                skips.append(h)
        mid = self.mid_block
        h = mid.resnets[0](h, temb)
        h = mid.attentions[0](h, context, next(attn_kv))
        h = mid.resnets[1](h, temb)
        for blk in self.up_blocks:
            attns = getattr(blk, "attentions", None)
            for i, res in enumerate(blk.resnets):
                h = res(torch.cat([h, skips.pop()], dim=1), temb)
                if attns is not None:
                    h = attns[i](h, context, next(attn_kv))
            if hasattr(blk, "upsamplers"):
                if forward_upsample_size:
                    h = F.interpolate(h, size=skips[-1].shape[2:], mode="nearest")
                else:
                    h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = blk.upsamplers[0].conv(h)
        return self.conv_out(F.silu(self.conv_norm_out(h))).contiguous()


def _flat(aug: Tensor | None, kvs: list[list[tuple[Tensor, Tensor]]]) -> list[Tensor]:
    return ([aug] if aug is not None else []) + [t for ab in kvs for kv in ab for t in kv]


class _Traceable:
    """:meth:`LeanUNet.forward_cached` with ``aug`` and the keys and values as flat tensors (what tracing takes)."""

    def __init__(self, unet: LeanUNet, blocks: list[int], has_aug: bool) -> None:
        self.unet = unet
        self.blocks = blocks
        self.has_aug = has_aug

    def __call__(self, sample: Tensor, timestep: Tensor, context: Tensor, *flat: Tensor) -> Tensor:
        it = iter(flat)
        aug = next(it) if self.has_aug else None
        kvs = [[(next(it), next(it)) for _ in range(n)] for n in self.blocks]
        return self.unet.forward_cached(sample, timestep, context, aug, kvs)


# -- loading ------------------------------------------------------------------------------------------------------
def load_state(module: nn.Module, files: list[Path], strip_prefix: str = "") -> None:
    """Load safetensors ``files`` into ``module`` strictly (every tensor used, every parameter set)."""
    from safetensors.torch import load_file

    state: dict[str, Tensor] = {}
    for f in files:
        for k, v in load_file(str(f)).items():
            state[k[len(strip_prefix):] if strip_prefix and k.startswith(strip_prefix) else k] = v
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}  # transformers' buffer, not a weight
    module.load_state_dict(state, strict=True)
