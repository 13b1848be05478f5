"""pi0's building blocks: a Gemma decoder layer split into its attention halves, RoPE, the additive block masks.

Written out (not transformers' GemmaDecoderLayer) because pi0 runs one attention over two Gemmas' tokens: at
every action-expert layer the expert's queries attend to [the VLM's cached prefix keys | the expert's own keys],
and a pruned prefix holds a different key set per layer. `GemmaLayer.qkv` gives a layer's rotated queries, keys
and values, `attend` is eager attention exactly as LeRobot/openpi compute it (float32 softmax over an additive
mask whose masked entries are a large finite negative, so an all-masked row stays finite), and `finish` applies
o_proj, the residuals and the MLP. Parameter names follow transformers' Gemma so checkpoints load as stored.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vla_pruner.models.pi0.config import GemmaDims

MASKED = -2.3819763e38  # openpi's additive value for a masked attention entry
ROPE_THETA = 10_000.0
RMS_EPS = 1e-6

# (probabilities [B, heads, T, N]) of one layer's attention, shown to a probe (the pruners' scores)
AttentionProbe = Callable[[torch.Tensor], None]


class GemmaRMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * (1 + w), in float32 (Gemma stores w - 1)."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().square().mean(-1, keepdim=True)
        return (x * torch.rsqrt(variance + RMS_EPS) * (1.0 + self.weight.float())).type_as(x)


class GemmaAttentionProj(nn.Module):
    def __init__(self, d: GemmaDims):
        super().__init__()
        self.q_proj = nn.Linear(d.width, d.num_heads * d.head_dim, bias=False)
        self.k_proj = nn.Linear(d.width, d.num_kv_heads * d.head_dim, bias=False)
        self.v_proj = nn.Linear(d.width, d.num_kv_heads * d.head_dim, bias=False)
        self.o_proj = nn.Linear(d.num_heads * d.head_dim, d.width, bias=False)


class GemmaMLP(nn.Module):
    def __init__(self, d: GemmaDims):
        super().__init__()
        self.gate_proj = nn.Linear(d.width, d.mlp_dim, bias=False)
        self.up_proj = nn.Linear(d.width, d.mlp_dim, bias=False)
        self.down_proj = nn.Linear(d.mlp_dim, d.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


def rope(position_ids: torch.Tensor, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [B, T, head_dim] at `position_ids` [B, T], computed in float32 as transformers' Gemma does."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=position_ids.device)
                                     / head_dim))
    freqs = position_ids[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class GemmaLayer(nn.Module):
    def __init__(self, d: GemmaDims):
        super().__init__()
        self.dims = d
        self.input_layernorm = GemmaRMSNorm(d.width)
        self.self_attn = GemmaAttentionProj(d)
        self.post_attention_layernorm = GemmaRMSNorm(d.width)
        self.mlp = GemmaMLP(d)

    def qkv(self, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]):
        """Rotated queries [B, heads, T, hd], rotated keys and values [B, kv_heads, T, hd] of `hidden` [B, T, w]."""
        B, T, _ = hidden.shape
        x = self.input_layernorm(hidden)
        a, hd = self.self_attn, self.dims.head_dim
        q = a.q_proj(x).view(B, T, -1, hd).transpose(1, 2)
        k = a.k_proj(x).view(B, T, -1, hd).transpose(1, 2)
        v = a.v_proj(x).view(B, T, -1, hd).transpose(1, 2)
        cos, sin = (t[:, None] for t in rotary)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin, v

    def finish(self, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The rest of the layer after attention: `attended` [B, T, heads*hd] -> o_proj, residual, MLP, residual."""
        hidden = hidden + self.self_attn.o_proj(attended.to(self.self_attn.o_proj.weight.dtype))
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
           probe: AttentionProbe | None = None) -> torch.Tensor:
    """Eager attention as openpi computes it: q [B, H, T, hd], k/v [B, kv, N, hd] (kv divides H), additive `mask`
    [B, 1, T, N] -> [B, T, H*hd]. `probe` (if given) sees the float32 probabilities."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * q.shape[-1] ** -0.5 + mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    if probe is not None:
        probe(probs)
    out = torch.matmul(probs.to(q.dtype), v)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean [B, T, N] (True = may attend) -> additive [B, 1, T, N]."""
    return torch.where(allowed[:, None], 0.0, MASKED).to(dtype)


def block_mask(valid: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """Boolean [B, T, T]: query q sees key k iff both are valid and cumsum(blocks)[k] <= cumsum(blocks)[q]."""
    level = torch.cumsum(blocks, dim=1)
    return (level[:, None, :] <= level[:, :, None]) & valid[:, None, :] & valid[:, :, None]


def sincos_time(t: torch.Tensor, width: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sine-cosine embedding [B, width] of flow-matching times t [B], computed in float64, returned as t's dtype."""
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = t[:, None] * (1.0 / period * 2 * torch.pi)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).to(t.dtype)
