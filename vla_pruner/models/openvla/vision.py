"""OpenVLA's vision side: two timm ViTs (DINOv2 + SigLIP) fused on channels, and the MLP projector.

Each ViT contributes the patch tokens of its SECOND-TO-LAST block (no final norm, prefix tokens dropped),
as the official Prismatic code does; the last block, final norm and SigLIP's attention pool keep their
checkpoint weights but never run (`forward_intermediates(..., stop_early=True)` stops before them).
"""
from __future__ import annotations

import timm
import torch
from torch import nn

from vla_pruner.models.openvla.config import OpenVLAConfig


def create_vit(config: OpenVLAConfig, i: int) -> nn.Module:
    """Backbone i (0 = `featurizer`, 1 = `fused_featurizer`), built as the official code builds it."""
    return timm.create_model(config.timm_model_ids[i], **config.timm_kwargs(i))


def unused_parameter_prefixes(vit: nn.Module) -> list[str]:
    """Submodules whose weights are stored but never run: last block, final norm, attention pool."""
    prefixes = [f"blocks.{len(vit.blocks) - 1}.", "norm."]
    if getattr(vit, "attn_pool", None) is not None:
        prefixes.append("attn_pool.")
    return prefixes


def patch_features(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Patch tokens [B, N, D] of the second-to-last block of `vit`."""
    (tokens,) = vit.forward_intermediates(
        x, indices=[len(vit.blocks) - 2], norm=False, stop_early=True, output_fmt="NLC", intermediates_only=True
    )
    return tokens


class FusedViTBackbone(nn.Module):
    def __init__(self, config: OpenVLAConfig):
        super().__init__()
        self.featurizer = create_vit(config, 0)
        self.fused_featurizer = create_vit(config, 1)
        self.embed_dim = self.featurizer.embed_dim + self.fused_featurizer.embed_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 6, H, W] (DINO-normalised channels 0-2, SigLIP-normalised 3-5) -> [B, N, D_dino + D_siglip]."""
        dino_px, siglip_px = pixel_values.split([3, 3], dim=1)
        dino = patch_features(self.featurizer, dino_px)
        siglip = patch_features(self.fused_featurizer, siglip_px)
        return torch.cat([dino, siglip], dim=2)


class FusedProjector(nn.Module):
    """vision_dim -> 4*vision_dim -> llm_dim -> llm_dim, GELU between (Prismatic's fused-gelu-mlp)."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(patches)))))
