"""OpenVLA-7B: fused ViTs -> projector -> Llama-2, decoding 7 action tokens greedily with a KV cache.

Reproduces the official Hugging Face implementation (`OpenVLAForActionPrediction`) on current transformers
and timm. A policy query is split into stages the harness times: `encode_image` (vision + projector),
`multimodal_embeds`, then the LLM through the pruning engine (`vla_pruner.engine`, its runner for pruned and
plain queries alike): its prefill (all prompt tokens, fills the cache, gives the first action token) on
`sequence_layout`, and its decode (the 6 remaining tokens, one cached step each).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from vla_pruner.engine import PruningEngine
from vla_pruner.layout import SequenceLayout
from vla_pruner.pruning import ModelLayout, Pruner

from vla_pruner.models.openvla.action_tokenizer import ActionTokenizer, select_action_stats, unnormalize
from vla_pruner.models.checkpoint import load_weights, resolve_checkpoint, resolve_device_dtype
from vla_pruner.models.openvla.checkpoint import read_config
from vla_pruner.models.openvla.config import OpenVLAConfig
from vla_pruner.models.llama import LlamaLM, causal_padding_mask
from vla_pruner.models.openvla.vision import FusedProjector, FusedViTBackbone, unused_parameter_prefixes

EMPTY_TOKEN_ID = 29871  # Llama-2's "▁": appended after "Out:" as in training
ACTION_DIM = 7


@dataclass
class OpenVLAOutput:
    logits: torch.Tensor  # [B, 1 + N_visual + T - 1, vocab]


class OpenVLA(nn.Module):
    def __init__(self, config: OpenVLAConfig):
        super().__init__()
        self.config = config
        self.vision_backbone = FusedViTBackbone(config)
        llama_config = config.llama_config()
        self.projector = FusedProjector(self.vision_backbone.embed_dim, llama_config.hidden_size)
        self.language_model = LlamaLM(llama_config)
        self.action_tokenizer = ActionTokenizer(config.text_vocab_size, config.n_action_bins)
        self.norm_stats = config.norm_stats
        self.checkpoint_dir: Path | None = None  # set by from_pretrained

    @classmethod
    def from_pretrained(
        cls, path_or_id: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
    ) -> "OpenVLA":
        """Load a checkpoint directory (or hub id, where a hub is reachable) strictly, in eval mode."""
        directory = resolve_checkpoint(path_or_id)
        config, _ = read_config(directory)
        device, dtype = resolve_device_dtype(device, dtype)
        with torch.device("meta"):
            model = cls(config)
        optional = [
            f"vision_backbone.{name}.{p}"
            for name in ("featurizer", "fused_featurizer")
            for p in unused_parameter_prefixes(getattr(model.vision_backbone, name))
        ]
        load_weights(model, directory, optional, device, dtype)
        model.language_model.rebuild_rotary(device)
        left_on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left_on_meta:
            raise RuntimeError(f"tensors neither stored nor computed after loading: {left_on_meta}")
        model.checkpoint_dir = directory
        return model.eval()

    @property
    def device(self) -> torch.device:
        return self.projector.fc1.weight.device

    @property
    def num_patches(self) -> int:
        """Visual tokens per image: 256 for a 224 px image and 14 px patches."""
        return self.vision_backbone.featurizer.patch_embed.num_patches

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.fc1.weight.dtype

    @property
    def model_layout(self) -> ModelLayout:
        """What a pruner may know of this model: its depth and visual tokens per image."""
        return ModelLayout(num_layers=len(self.language_model.layers), image_tokens=(self.num_patches,))

    def sequence_layout(self, length: int) -> SequenceLayout:
        return SequenceLayout.openvla(length, self.num_patches)

    def dense_engine(self) -> PruningEngine:
        """The LLM runner of the plain model (the `none` pruner)."""
        return PruningEngine.dense(self.language_model, self.model_layout)

    # --- stages of one query -------------------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 6, 224, 224] -> visual token embeddings [B, 256, hidden] (the LLM inputs)."""
        return self.projector(self.vision_backbone(pixel_values.to(self.device, self.dtype)))

    def multimodal_embeds(self, input_ids: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """[BOS, visual tokens, rest of the prompt]: Prismatic inserts the image right after BOS. B prompts of
        one length, or one prompt for all B images (a batch of episodes of one task)."""
        text = self.language_model.embed(input_ids.to(self.device)).expand(len(visual), -1, -1)
        return torch.cat([text[:, :1], visual, text[:, 1:]], dim=1)

    # --- public API ---------------------------------------------------------------------------------
    def forward(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> OpenVLAOutput:
        """Logits at every position of [BOS, visual, prompt], like the official forward (no cache)."""
        embeds = self.multimodal_embeds(input_ids, self.encode_image(pixel_values))
        B, S, _ = embeds.shape
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            n_visual = S - input_ids.shape[1]
            visual_mask = attention_mask.new_ones(B, n_visual)
            full = torch.cat([attention_mask[:, :1], visual_mask, attention_mask[:, 1:]], dim=1)
            mask = causal_padding_mask(full.to(self.device))
        positions = torch.arange(S, device=embeds.device).expand(B, S)
        hidden = self.language_model.run_layers(embeds, positions, attention_mask=mask)
        return OpenVLAOutput(logits=self.language_model.logits(hidden))

    @torch.inference_mode()
    def predict_action_tokens(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                              engine: PruningEngine | None = None,
                              pruners: Sequence[Pruner] | None = None, frames=None) -> torch.Tensor:
        """The 7 greedy action tokens [B, 7] for B tokenised prompts of one length (29871 is appended if absent)
        and B images, through `engine` (default: the dense model) with one pruner per sample (`pruners`; None:
        the engine's own, for one sample or an empty plan); `frames`: per sample [its uint8 224 image], for
        pruners that read pixels (VLA-Cache)."""
        engine = engine or self.dense_engine()
        embeds = self.multimodal_embeds(with_empty_token(input_ids), self.encode_image(pixel_values))
        state = engine.prefill(embeds, self.sequence_layout(embeds.shape[1]), pruners, frames)
        tokens = engine.decode(state, ACTION_DIM)
        engine.finish(state)
        return tokens

    def tokens_to_action(self, tokens: torch.Tensor | np.ndarray, unnorm_key: str | None = None) -> np.ndarray:
        normalized = self.action_tokenizer.normalized(torch.as_tensor(tokens).cpu().numpy())
        return unnormalize(normalized, select_action_stats(self.norm_stats, unnorm_key))

    def predict_action(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        unnorm_key: str | None = None,
        attention_mask: torch.Tensor | None = None,
        engine: PruningEngine | None = None,
    ) -> np.ndarray:
        """Un-normalised 7-dim action (model gripper convention) for one prompt + image (batch size 1), through
        `engine` (a pruner's; default: the dense model).

        `attention_mask` is accepted for drop-in use with the processor's output; a single unpadded prompt
        needs none.
        """
        if input_ids.shape[0] != 1 or (attention_mask is not None and not bool(attention_mask.all())):
            raise ValueError("predict_action takes one unpadded prompt")
        return self.tokens_to_action(self.predict_action_tokens(input_ids, pixel_values, engine)[0], unnorm_key)


def with_empty_token(input_ids: torch.Tensor) -> torch.Tensor:
    if bool((input_ids[:, -1] == EMPTY_TOKEN_ID).all()):
        return input_ids
    empty = torch.full_like(input_ids[:, :1], EMPTY_TOKEN_ID)
    return torch.cat([input_ids, empty], dim=1)
