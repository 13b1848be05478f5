"""pi0 (Physical Intelligence): PaliGemma prefix + a Gemma action expert sampling a 50-action chunk by flow matching.

The prefix [camera 0 | camera 1 | camera 2 | language] runs once through the VLM Gemma (bidirectional among valid
tokens; a masked camera is never a key); its per-layer keys/values are cached. `sample_actions` (and the policy)
leave a camera slot masked in every sample out of the prefix (`without_empty_cameras`) instead of computing its
rows; `embed_prefix` / `run_prefix` compute whatever slots they are given, as LeRobot does. Each of the
10 Euler steps runs the action expert on [state token | 50 action tokens], every expert layer attending to
[that layer's cached prefix keys | its own keys]. Computed as LeRobot's and openpi's PyTorch pi0 compute it
(checked against LeRobot's own outputs in tests/test_pi0_model.py). Stages for the harness and the pruners:
`embed_prefix`, `run_prefix` (layers in ranges, so a pruner can cut between them), `velocity`, `sample_actions`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel


from vla_pruner.models.checkpoint import resolve_checkpoint, resolve_device_dtype
from vla_pruner.models.pi0.checkpoint import Pi0Stats, inspect_pi0, load_pi0_weights, read_pi0_config, read_stats
from vla_pruner.models.pi0.config import GemmaDims, Pi0Config
from vla_pruner.models.pi0.layers import (
    AttentionProbe, GemmaLayer, GemmaRMSNorm, additive_mask, attend, block_mask, rope, sincos_time,
)


class GemmaStack(nn.Module):
    """A Gemma's layers and final norm (names as transformers stores them); the VLM's also its embedding."""

    def __init__(self, d: GemmaDims, vocab_size: int | None = None):
        super().__init__()
        self.dims = d
        if vocab_size is not None:
            self.embed_tokens = nn.Embedding(vocab_size, d.width)
        self.layers = nn.ModuleList(GemmaLayer(d) for _ in range(d.depth))
        self.norm = GemmaRMSNorm(d.width)


@dataclass
class PrefixCache:
    """Per VLM layer: the rotated keys and values [B, kv, N_l, hd] the expert attends to and which are valid keys
    [B, N_l] (a pruned prefix holds fewer keys from its cut on). `offset` [B]: the suffix's first position id,
    the ORIGINAL prefix's valid-token count."""

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    key_valid: list[torch.Tensor] = field(default_factory=list)
    offset: torch.Tensor | None = None


def siglip_config(config: Pi0Config) -> SiglipVisionConfig:
    v = config.vision
    cfg = SiglipVisionConfig(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                             num_hidden_layers=v.num_hidden_layers, num_attention_heads=v.num_attention_heads,
                             patch_size=v.patch_size, image_size=v.image_size, hidden_act="gelu_pytorch_tanh",
                             layer_norm_eps=1e-6, vision_use_head=False)
    cfg._attn_implementation = "sdpa"
    return cfg


class Pi0(nn.Module):
    def __init__(self, config: Pi0Config):
        super().__init__()
        self.config = config
        self.vision = SiglipVisionModel(siglip_config(config))
        self.projector = nn.Linear(config.vision.hidden_size, config.vlm.width)
        self.vlm = GemmaStack(config.vlm, config.vocab_size)
        self.expert = GemmaStack(config.expert)
        w = config.expert.width
        self.state_proj = nn.Linear(config.max_state_dim, w)
        self.action_in_proj = nn.Linear(config.max_action_dim, w)
        self.action_out_proj = nn.Linear(w, config.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * w, w)
        self.action_time_mlp_out = nn.Linear(w, w)
        self.stats: Pi0Stats | None = None  # set by from_pretrained
        self.checkpoint_dir: Path | None = None
        self.layout: str | None = None  # "lerobot" | "openpi"

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "auto") -> "Pi0":
        """A LeRobot pi0 directory or an openpi converted PyTorch checkpoint (see pi0_checkpoint), in eval mode."""
        directory = resolve_checkpoint(path_or_id)
        ckpt = inspect_pi0(directory)
        config, stats = read_pi0_config(ckpt), read_stats(ckpt)
        device, dtype = resolve_device_dtype(device, dtype)
        with torch.device("meta"):
            model = cls(config)
        load_pi0_weights(model, ckpt, device, dtype)
        embeddings = model.vision.embeddings  # its position ids are a derived buffer, never stored
        embeddings.position_ids = torch.arange(config.vision.num_patches, device=device)[None]
        left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left_on_meta:
            raise RuntimeError(f"tensors neither stored nor computed after loading: {left_on_meta}")
        model.stats, model.checkpoint_dir, model.layout = stats, directory, ckpt.layout
        return model.eval()

    @property
    def device(self) -> torch.device:
        return self.projector.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.weight.dtype

    # --- prefix -----------------------------------------------------------------------------------------
    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, cameras, 3, H, W] in [-1, 1] -> projected SigLIP tokens [B, cameras, patches, width]."""
        B, C = pixel_values.shape[:2]
        flat = pixel_values.flatten(0, 1).to(self.device, self.dtype)
        tokens = self.projector(self.vision(pixel_values=flat).last_hidden_state)
        return tokens.view(B, C, *tokens.shape[1:])

    def embed_prefix(self, pixel_values: torch.Tensor, image_masks: torch.Tensor, tokens: torch.Tensor,
                     token_masks: torch.Tensor, image_embeddings: torch.Tensor | None = None):
        """(embeddings [B, P, width], valid [B, P]) of [cameras' tokens | language tokens * sqrt(width)]."""
        images = self.embed_images(pixel_values) if image_embeddings is None else image_embeddings
        B, C, N, _ = images.shape
        words = self.vlm.embed_tokens(tokens.to(self.device))
        words = words * torch.tensor(self.config.vlm.width ** 0.5, dtype=words.dtype)
        valid = torch.cat([image_masks.to(self.device, torch.bool)[:, :, None].expand(B, C, N).reshape(B, C * N),
                           token_masks.to(self.device, torch.bool)], dim=1)
        return torch.cat([images.reshape(B, C * N, -1), words], dim=1), valid

    def prefix_layers(self, hidden: torch.Tensor, position_ids: torch.Tensor, allowed: torch.Tensor,
                      key_valid: torch.Tensor, cache: PrefixCache, start: int = 0, stop: int | None = None,
                      probes: Mapping[int, AttentionProbe] | None = None) -> torch.Tensor:
        """VLM layers start..stop-1 on `hidden` [B, T, w] (`allowed` [B, T, T] bool); each layer's keys/values
        and `key_valid` [B, T] go to `cache`. `probes[l]` sees layer l's attention probabilities."""
        rotary = rope(position_ids, self.config.vlm.head_dim, hidden.dtype)
        mask = additive_mask(allowed, hidden.dtype)
        probes = probes or {}
        for index in range(start, len(self.vlm.layers) if stop is None else stop):
            layer = self.vlm.layers[index]
            q, k, v = layer.qkv(hidden, rotary)
            cache.keys.append(k)
            cache.values.append(v)
            cache.key_valid.append(key_valid)
            hidden = layer.finish(hidden, attend(q, k, v, mask, probes.get(index)))
        return hidden

    def run_prefix(self, embeds: torch.Tensor, valid: torch.Tensor,
                   probes: Mapping[int, AttentionProbe] | None = None) -> tuple[PrefixCache, torch.Tensor]:
        """The dense prefix pass: (its cache, the final-norm hidden states [B, P, w])."""
        cache = PrefixCache(offset=valid.sum(dim=1))
        position_ids = torch.cumsum(valid.long(), dim=1) - 1
        allowed = block_mask(valid, torch.zeros_like(valid, dtype=torch.long))
        hidden = self.prefix_layers(embeds, position_ids, allowed, valid, cache, probes=probes)
        return cache, self.vlm.norm(hidden)

    # --- suffix -----------------------------------------------------------------------------------------
    def embed_suffix(self, state: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[state token | action tokens] [B, 1 + chunk, expert width] for padded state [B, 32], x_t, times t [B]."""
        state_token = self.state_proj(state)[:, None]
        time = sincos_time(t, self.action_in_proj.out_features, self.config.min_period, self.config.max_period)
        actions = self.action_in_proj(x_t)
        fused = torch.cat([actions, time[:, None].expand_as(actions).to(actions.dtype)], dim=2)
        return torch.cat([state_token, self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))], dim=1)

    def velocity(self, cache: PrefixCache, state: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 probes: Mapping[int, AttentionProbe] | None = None) -> torch.Tensor:
        """v_t [B, chunk, 32] (float32): the expert over [state | actions] attending to the cached prefix.
        `probes[l]` sees expert layer l's probabilities over [prefix keys of layer l | suffix keys]."""
        hidden = self.embed_suffix(state, x_t, t)
        B, S, _ = hidden.shape
        position_ids = cache.offset[:, None] + torch.arange(S, device=hidden.device)
        rotary = rope(position_ids, self.config.expert.head_dim, hidden.dtype)
        blocks = torch.zeros(B, S, dtype=torch.long, device=hidden.device)
        blocks[:, :2] = 1  # state: its own block; actions: the next one
        own = block_mask(torch.ones(B, S, dtype=torch.bool, device=hidden.device), blocks)
        probes = probes or {}
        for index, layer in enumerate(self.expert.layers):
            q, k, v = layer.qkv(hidden, rotary)
            prefix_keys = cache.key_valid[index][:, None, :].expand(B, S, -1)
            mask = additive_mask(torch.cat([prefix_keys, own], dim=2), hidden.dtype)
            keys = torch.cat([cache.keys[index], k], dim=2)
            values = torch.cat([cache.values[index], v], dim=2)
            hidden = layer.finish(hidden, attend(q, keys, values, mask, probes.get(index)))
        out = self.expert.norm(hidden)[:, -self.config.chunk_size:]
        return self.action_out_proj(out.float().to(self.action_out_proj.weight.dtype)).float()

    def pad_state(self, state: torch.Tensor) -> torch.Tensor:
        state = torch.as_tensor(state, device=self.device).to(self.dtype)
        return F.pad(state, (0, self.config.max_state_dim - state.shape[-1]))

    def integrate(self, cache: PrefixCache, state: torch.Tensor, noise: torch.Tensor,
                  probes: Mapping[int, AttentionProbe] | None = None) -> torch.Tensor:
        """Euler from t = 1 (noise) to 0 in `num_steps` steps, reusing the prefix cache: x_0 [B, chunk, 32]."""
        steps = self.config.num_steps
        dt = -1.0 / steps
        x = noise
        for step in range(steps):
            t = torch.tensor(1.0 + step * dt, dtype=torch.float32, device=x.device).expand(x.shape[0])
            x = x + dt * self.velocity(cache, state, x.to(self.dtype), t, probes)
        return x

    def make_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (batch, self.config.chunk_size, self.config.max_action_dim)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)

    @torch.inference_mode()
    def sample_actions(self, pixel_values: torch.Tensor, image_masks: torch.Tensor, state: torch.Tensor,
                       tokens: torch.Tensor, token_masks: torch.Tensor,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
        """The padded normalised action chunk [B, chunk, 32] (float32), as LeRobot's `actions_padded`: images
        [B, cameras, 3, H, W] in [-1, 1], image_masks [B, cameras], normalised state [B, <= 32] (padded here),
        tokens/token_masks [B, L], noise [B, chunk, 32] (default: fresh Gaussian noise)."""
        embeds, valid = self.embed_prefix(*without_empty_cameras(pixel_values, image_masks), tokens, token_masks)
        cache, _ = self.run_prefix(embeds, valid)
        noise = self.make_noise(embeds.shape[0]) if noise is None else noise.to(self.device, torch.float32)
        return self.integrate(cache, self.pad_state(state), noise)


def without_empty_cameras(pixel_values: torch.Tensor, image_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values, image_masks) without the camera slots masked in every sample (LIBERO's empty third slot).
    openpi and LeRobot compute such a slot's rows and mask them as keys, so they never change an output; skipped,
    the prefix holds only the valid cameras (560 tokens instead of 816) and the outputs stay the same to float
    rounding (tests/test_pi0_model.py)."""
    used = image_masks.to(torch.bool).any(dim=0).cpu()
    if used.all() or not used.any():
        return pixel_values, image_masks
    return pixel_values[:, used], image_masks[:, used]
