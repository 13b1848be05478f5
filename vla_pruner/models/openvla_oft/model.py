"""OpenVLA-OFT: OpenVLA with two cameras, a proprio token and an L1 regression head over 8-step chunks.

One bidirectional LLM pass per chunk over
`[BOS, 256 primary + 256 wrist visual, proprio, rest of the prompt, 29871, 56 zero placeholders, </s>]`;
the final-norm hidden states of the window [S-58, S-2) (the 29871 row and the first 55 placeholders, as the
official code reads them) go through the action head. The window is counted from the END of the sequence,
so it stays right when visual tokens are pruned. Stages for the harness: `encode_images`, `project_proprio`,
`multimodal_embeds`, `run_llm` (the pruning engine's prefill, dense or with a pruner per sample), `action_chunk`.

A checkpoint is an OpenVLA checkpoint directory (base weights, loaded strictly) plus
`action_head--N_checkpoint.pt`, `proprio_projector--N_checkpoint.pt` (state dicts, optional DDP `module.`
prefix) and `dataset_statistics.json` (action and proprio statistics per dataset).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from vla_pruner.engine import PruningEngine, QueryState
from vla_pruner.families import VISUAL_TOKENS_PER_IMAGE
from vla_pruner.layout import SequenceLayout
from vla_pruner.pruning import ModelLayout, Pruner

from vla_pruner.models.openvla_oft.action_head import L1RegressionActionHead
from vla_pruner.models.openvla.action_tokenizer import select_action_stats, unnormalize
from vla_pruner.models.checkpoint import CheckpointError, resolve_checkpoint
from vla_pruner.models.openvla.model import ACTION_DIM, OpenVLA, with_empty_token
from vla_pruner.models.openvla_oft.proprio import ProprioProjector, normalize_proprio
from vla_pruner.models.openvla_oft.proprio import PROPRIO_DIM

CHUNK = 8  # actions per query, executed open loop
ACTION_SLOTS = CHUNK * ACTION_DIM  # zero-embedding placeholder tokens
READOUT_ROWS = ACTION_SLOTS + 2  # the action head reads the last 58 rows but their last two (the window)
STOP_TOKEN_ID = 2  # </s>
NUM_IMAGES, PATCHES_PER_IMAGE = 2, VISUAL_TOKENS_PER_IMAGE
ACTION_HEAD_FILE, PROPRIO_FILE = "action_head", "proprio_projector"


def sequence_layout(length: int) -> SequenceLayout:
    """Where things are in an OFT sequence of `length` tokens, for the pruning engine (bidirectional)."""
    visual_end = 1 + NUM_IMAGES * PATCHES_PER_IMAGE
    slots_start = length - 1 - ACTION_SLOTS
    return SequenceLayout(
        length,
        visual=tuple(slice(1 + i * PATCHES_PER_IMAGE, 1 + (i + 1) * PATCHES_PER_IMAGE) for i in range(NUM_IMAGES)),
        text=slice(visual_end + 1, slots_start),  # the prompt up to and including 29871 (after the proprio token)
        last_prompt=slots_start - 1,
        action_queries=slice(slots_start, length - 1),
        prompt_end=slots_start,
        causal=False,
    )


def select_proprio_stats(norm_stats: dict[str, Any], key: str | None) -> dict[str, Any]:
    """The proprio statistics of the dataset whose action statistics `key` selects (same fallbacks)."""
    action = select_action_stats(norm_stats, key)
    entry = next(e for e in norm_stats.values() if e.get("action") is action)
    if "proprio" not in entry:
        raise ValueError(f"the checkpoint's statistics for {key!r} have no proprio entry")
    return entry["proprio"]


def load_state_file(module: nn.Module, directory: Path, name: str) -> None:
    """Load the one `{name}--*checkpoint.pt` of `directory` into `module` strictly (DDP `module.` stripped)."""
    files = sorted(directory.glob(f"{name}--*checkpoint.pt"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise CheckpointError(f"expected one {name}--<step>_checkpoint.pt in {directory}, found {found}")
    try:
        state = torch.load(files[0], map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:  # not a zip, a torn one, objects
        # other than tensors: torch's text suggests weights_only=False, which must never be the answer
        raise CheckpointError(f"cannot read {files[0]}: not a torch checkpoint of tensors ({type(e).__name__}); "
                              f"it may be truncated or another kind of file") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot read {files[0]}: it holds a {type(state).__name__}, not a state dict")
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{files[0].name} does not fit the model: {e}") from None


class OpenVLAOFT(nn.Module):
    def __init__(self, base: OpenVLA, proprio_projector: ProprioProjector, action_head: L1RegressionActionHead):
        super().__init__()
        self.base = base
        self.proprio_projector = proprio_projector
        self.action_head = action_head

    @classmethod
    def from_pretrained(
        cls, path_or_id: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
    ) -> "OpenVLAOFT":
        """Load an official OFT checkpoint directory (or hub id, where a hub is reachable) in eval mode."""
        directory = resolve_checkpoint(path_or_id)
        base = OpenVLA.from_pretrained(directory, device=device, dtype=dtype)
        width = base.language_model.config.hidden_size
        proprio_projector, action_head = ProprioProjector(width, PROPRIO_DIM), L1RegressionActionHead(width)
        load_state_file(proprio_projector, directory, PROPRIO_FILE)
        load_state_file(action_head, directory, ACTION_HEAD_FILE)
        model = cls(base, proprio_projector, action_head).to(base.device, base.dtype)
        return model.eval()

    @property
    def language_model(self):
        return self.base.language_model

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.base.norm_stats

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.base.checkpoint_dir

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def model_layout(self) -> ModelLayout:
        """What a pruner may know of this model: its depth and the visual tokens of each of its two images."""
        return ModelLayout(len(self.language_model.layers), (PATCHES_PER_IMAGE,) * NUM_IMAGES)

    def dense_engine(self) -> PruningEngine:
        """The LLM runner of the plain model (the `none` pruner)."""
        return PruningEngine.dense(self.language_model, self.model_layout)

    # --- stages of one query -------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 12, 224, 224] (primary then wrist, 6 channels each) -> [B, 512, d]: each image through the
        fused backbone and projector on its own, concatenated on the token axis."""
        images = pixel_values.split(6, dim=1)
        return torch.cat([self.base.encode_image(image) for image in images], dim=1)

    def project_proprio(self, proprio: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised state [B, 8] (or [8]) -> the proprio token [B, 1, d]."""
        x = torch.as_tensor(np.asarray(proprio), dtype=self.dtype, device=self.device).reshape(-1, PROPRIO_DIM)
        return self.proprio_projector(x)[:, None]

    def multimodal_embeds(self, input_ids: torch.Tensor, visual: torch.Tensor, proprio_token: torch.Tensor):
        """[BOS, visual, proprio, prompt..., 29871, zero placeholders, </s>] (29871 appended if absent), for B
        prompts of one length (or one prompt for all) and B images and proprio tokens."""
        embeds = self.base.multimodal_embeds(with_empty_token(input_ids), torch.cat([visual, proprio_token], 1))
        B, _, d = embeds.shape
        slots = embeds.new_zeros(B, ACTION_SLOTS, d)
        stop = self.language_model.embed(torch.full((B, 1), STOP_TOKEN_ID, device=embeds.device))
        return torch.cat([embeds, slots, stop], dim=1)

    def run_llm(self, inputs_embeds: torch.Tensor, engine: PruningEngine | None = None,
                pruners: Sequence[Pruner] | None = None, frames=None) -> QueryState:
        """The one bidirectional pass over a batch [B, S, d] through `engine` (default: the dense model) with
        one pruner per sample (`pruners`; None: the engine's own), finished at once: the action attention the
        pruners observe was probed in this same pass. `.last_rows(READOUT_ROWS)` = the action head's input,
        `.traces` = what each sample's pruner kept. `frames`: per sample [primary, wrist] uint8 224 images, for
        pruners that read pixels (VLA-Cache)."""
        engine = engine or self.dense_engine()
        state = engine.prefill(inputs_embeds, sequence_layout(inputs_embeds.shape[1]), pruners, frames)
        engine.finish(state)
        return state

    def action_chunk(self, hidden: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states [B, n, d] (the full or pruned sequence, or just its last READOUT_ROWS rows)
        -> normalised actions [B, 8, 7] (float32)."""
        window = hidden[:, -READOUT_ROWS:-2]
        return self.action_head(self.language_model.model.norm(window)).float()

    # --- statistics -----------------------------------------------------------------------------------
    def normalize_proprio(self, state: np.ndarray, unnorm_key: str | None = None) -> np.ndarray:
        return normalize_proprio(state, select_proprio_stats(self.norm_stats, unnorm_key))

    def unnormalize(self, normalized: np.ndarray, unnorm_key: str | None = None) -> np.ndarray:
        """Normalised actions [..., 7] -> dataset units (model gripper convention: 0 close .. 1 open)."""
        return unnormalize(normalized, select_action_stats(self.norm_stats, unnorm_key))

    # --- public API -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_action(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor,
        proprio: np.ndarray,
        unnorm_key: str | None = None,
        engine: PruningEngine | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(actions, normalized_actions), each [8, 7], for one unpadded prompt, two images (pixel values on
        the channel axis, primary first) and the normalised proprio state, like the official predict_action;
        through `engine` (a pruner's; default: the dense model)."""
        if input_ids.shape[0] != 1 or (attention_mask is not None and not bool(attention_mask.all())):
            raise ValueError("predict_action takes one unpadded prompt")
        embeds = self.multimodal_embeds(input_ids.to(self.device), self.encode_images(pixel_values),
                                        self.project_proprio(proprio))
        normalized = self.action_chunk(self.run_llm(embeds, engine).last_rows(READOUT_ROWS))[0].cpu().numpy()
        return self.unnormalize(normalized, unnorm_key), normalized
