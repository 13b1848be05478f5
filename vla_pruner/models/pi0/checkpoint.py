"""Reading pi0 checkpoints: LeRobot's saved policies and openpi's converted PyTorch checkpoints.

Two directory layouts hold the same weights under nearly the same names:

- LeRobot (`PI0Policy.save_pretrained`): config.json with `"type": "pi0"`, model.safetensors with every key under
  `model.`, the statistics in `policy_preprocessor_step_*_normalizer_processor.safetensors` (`observation.state.mean`
  / `.std`, `action.mean` / `.std`; LeRobot divides by std + 1e-8). Relative actions: config `use_relative_actions`.
- openpi (`examples/convert_jax_model_to_pytorch.py`): config.json with `action_horizon`, `paligemma_variant`,
  `precision`; model.safetensors without a prefix, where safetensors' de-duplication may have kept only the tied
  `paligemma.lm_head.weight` of the embedding; the statistics in `assets/<asset id>/norm_stats.json`
  (`norm_stats.state` / `norm_stats.actions`, mean and std; openpi divides by std + 1e-6). Whether the model
  predicts deltas of the state (openpi's `extra_delta_transform`, true for `pi0_libero`) is in the training config,
  not the checkpoint: the model config says it (`relative_actions`).

Stored name -> module name (after dropping LeRobot's `model.`):
  paligemma_with_expert.paligemma.model.vision_tower.vision_model.* -> vision.*
  paligemma_with_expert.paligemma.model.multi_modal_projector.linear.* -> projector.*
  paligemma_with_expert.paligemma.model.language_model.*        -> vlm.*
  paligemma_with_expert.gemma_expert.model.*                    -> expert.*
  state_proj, action_in_proj, action_out_proj, action_time_mlp_in/out: as stored
(transformers < 4.52 spelled the first three `paligemma.vision_tower.*`, `paligemma.multi_modal_projector.*`,
`paligemma.language_model.model.*`: read too.) Never run, so not loaded: both `lm_head`s (the VLM's is its
embedding when that is not stored) and an expert `embed_tokens`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from vla_pruner.models.checkpoint import CheckpointError, open_weights, read_json, weight_files
from vla_pruner.models.pi0.config import Pi0Config, gemma_dims, siglip_dims

CONFIG_FILE, TINY_DIMS_FILE = "config.json", "tiny_dims.json"
LEROBOT_STATS_GLOB = "policy_preprocessor_step_*_normalizer_processor.safetensors"
OPENPI_STATS_GLOB = "assets/**/norm_stats.json"
EMBED = "vlm.embed_tokens.weight"
_RENAMES = (
    ("paligemma_with_expert.paligemma.model.vision_tower.vision_model.", "vision."),
    ("paligemma_with_expert.paligemma.vision_tower.vision_model.", "vision."),
    ("paligemma_with_expert.paligemma.model.multi_modal_projector.linear.", "projector."),
    ("paligemma_with_expert.paligemma.multi_modal_projector.linear.", "projector."),
    ("paligemma_with_expert.paligemma.model.language_model.", "vlm."),
    ("paligemma_with_expert.paligemma.language_model.model.", "vlm."),
    ("paligemma_with_expert.gemma_expert.model.", "expert."),
)
_VLM_HEADS = ("paligemma_with_expert.paligemma.lm_head.weight", "paligemma_with_expert.paligemma.language_model.lm_head.weight")
_NEVER_RUN = ("paligemma_with_expert.gemma_expert.lm_head.weight", "expert.embed_tokens.weight")


@dataclass(frozen=True)
class Pi0Stats:
    """Mean/std normalisation of the 8-dim state and the 7-dim actions, with the layout's epsilon on std."""

    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray
    eps: float

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        return (state - self.state_mean) / (self.state_std + self.eps)

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        d = len(self.action_mean)
        return actions[..., :d] * (self.action_std + self.eps) + self.action_mean

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """The inverse of `unnormalize_actions` (an expert's actions in the model's space)."""
        d = len(self.action_mean)
        return (actions[..., :d] - self.action_mean) / (self.action_std + self.eps)


@dataclass(frozen=True)
class Pi0Checkpoint:
    directory: Path
    layout: str  # "lerobot" | "openpi"
    raw_config: dict[str, Any]

    @property
    def prefix(self) -> str:
        return "model." if self.layout == "lerobot" else ""


def inspect_pi0(directory: Path) -> Pi0Checkpoint:
    """Which layout `directory` holds; CheckpointError naming the file for anything else."""
    config_file = directory / CONFIG_FILE
    if not config_file.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in pi0 checkpoint directory {directory}")
    raw = read_json(config_file)
    if raw.get("type") in ("pi05", "pi0_fast") or raw.get("pi05"):
        raise CheckpointError(f"{config_file} is a {raw.get('type', 'pi05')} checkpoint; only pi0 is supported")
    if raw.get("type") == "pi0":
        return Pi0Checkpoint(directory, "lerobot", raw)
    if "action_horizon" in raw or "paligemma_variant" in raw:
        return Pi0Checkpoint(directory, "openpi", raw)
    raise CheckpointError(f"{config_file} is neither a LeRobot pi0 config (\"type\": \"pi0\") nor an openpi converted "
                          "one (action_horizon, paligemma_variant)")


def module_key(stored: str, prefix: str) -> str | None:
    """The module name of a stored tensor; None for one that never runs."""
    key = stored.removeprefix(prefix)
    if key in _NEVER_RUN or key in _VLM_HEADS:
        return None
    for old, new in _RENAMES:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    return None if key in _NEVER_RUN else key


def stored_key(name: str) -> str:
    """The stored name (openpi's; LeRobot's without `model.`) of a module's tensor: each module prefix's first
    spelling in _RENAMES, the current transformers one."""
    for old, new in _RENAMES:
        if name.startswith(new):
            return old + name[len(new):]
    return name


def iter_stored(ckpt: Pi0Checkpoint) -> Iterator[tuple[str, Any]]:
    """(stored name, lazy tensor getter) of every stored tensor."""
    for file in weight_files(ckpt.directory):
        with open_weights(file) as f:
            for key in f.keys():
                yield key, f.get_slice(key)


def stored_shapes(ckpt: Pi0Checkpoint) -> dict[str, tuple[int, ...]]:
    """Module name -> shape, from the weight headers only (the VLM's head stands in for a missing embedding)."""
    shapes, head = {}, None
    for key, tensor in iter_stored(ckpt):
        name = module_key(key, ckpt.prefix)
        if name is not None:
            shapes[name] = tuple(tensor.get_shape())
        elif key.removeprefix(ckpt.prefix) in _VLM_HEADS:
            head = tuple(tensor.get_shape())
    if EMBED not in shapes and head is not None:
        shapes[EMBED] = head
    return shapes


def read_pi0_config(ckpt: Pi0Checkpoint) -> Pi0Config:
    """Sizes from the stored shapes (plus tiny_dims.json for SigLIP's head count), settings from config.json."""
    shapes = stored_shapes(ckpt)
    raw = ckpt.raw_config
    dims_file = ckpt.directory / TINY_DIMS_FILE
    heads = read_json(dims_file).get("vision", {}).get("num_attention_heads") if dims_file.is_file() else None
    try:
        if "state_proj.weight" not in shapes:
            raise ValueError("no state_proj weights (a pi0.5 checkpoint?)")
        vocab, vlm_width = shapes[EMBED]
        config = Pi0Config(
            vlm=gemma_dims(shapes, "vlm.", vlm_width),
            expert=gemma_dims(shapes, "expert.", shapes["expert.norm.weight"][0]),
            vision=siglip_dims(shapes, "vision.", heads),
            vocab_size=vocab,
            num_cameras=_num_cameras(raw, ckpt.layout),
            max_token_len=int(raw.get("tokenizer_max_length", 48)),
            chunk_size=int(raw.get("chunk_size", raw.get("action_horizon", 50))),
            max_state_dim=shapes["state_proj.weight"][1],
            max_action_dim=shapes["action_in_proj.weight"][1],
            num_steps=int(raw.get("num_inference_steps", 10)),
            min_period=float(raw.get("min_period", 4e-3)),
            max_period=float(raw.get("max_period", 4.0)),
            relative_actions=bool(raw.get("use_relative_actions", False)),
        )
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"cannot read pi0 sizes from the weights in {ckpt.directory}: {e}") from None
    if config.expert.head_dim != config.vlm.head_dim or config.expert.depth != config.vlm.depth:
        raise CheckpointError(f"{ckpt.directory}: the action expert must share depth and head_dim with the VLM "
                              f"({config.expert} vs {config.vlm})")
    return config


def _num_cameras(raw: dict[str, Any], layout: str) -> int:
    if layout == "openpi":
        return 3  # openpi's pi0: base, left wrist, right wrist
    visual = [k for k, v in (raw.get("input_features") or {}).items() if v.get("type") == "VISUAL"]
    return len(visual) or 3


def read_stats(ckpt: Pi0Checkpoint) -> Pi0Stats:
    """The state/action statistics the checkpoint was trained with."""
    if ckpt.layout == "lerobot":
        files = sorted(ckpt.directory.glob(LEROBOT_STATS_GLOB))
        if len(files) != 1:
            raise CheckpointError(f"expected one {LEROBOT_STATS_GLOB} in {ckpt.directory}, found "
                                  f"{', '.join(f.name for f in files) or 'none'}")
        with open_weights(files[0]) as f:
            t = {k: f.get_tensor(k).double().numpy() for k in f.keys()}
        names = ("observation.state.mean", "observation.state.std", "action.mean", "action.std")
        if not all(n in t for n in names):
            raise CheckpointError(f"{files[0]} lacks one of {', '.join(names)}")
        return Pi0Stats(*(t[n] for n in names), eps=1e-8)
    files = sorted(ckpt.directory.glob(OPENPI_STATS_GLOB))
    if len(files) != 1:
        raise CheckpointError(f"expected one assets/<asset id>/norm_stats.json in {ckpt.directory}, found "
                              f"{', '.join(str(f.relative_to(ckpt.directory)) for f in files) or 'none'}")
    stats = read_json(files[0]).get("norm_stats", {})
    try:
        return Pi0Stats(*(np.asarray(stats[part][m], dtype=np.float64) for part in ("state", "actions")
                          for m in ("mean", "std")), eps=1e-6)
    except KeyError as e:
        raise CheckpointError(f"{files[0]} has no norm_stats.{{state,actions}}.{{mean,std}} ({e} missing)") from None


def load_pi0_weights(model: torch.nn.Module, ckpt: Pi0Checkpoint, device: torch.device, dtype: torch.dtype) -> None:
    """Assign every stored tensor to `model` (built on the meta device); CheckpointError listing mismatches."""
    expected = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    unexpected, wrong_shape, head = [], [], None
    for key, tensor in iter_stored(ckpt):
        name = module_key(key, ckpt.prefix)
        if name is None:
            if key.removeprefix(ckpt.prefix) in _VLM_HEADS:
                head = tensor
            continue
        if name not in expected:
            unexpected.append(key)
        elif tuple(tensor.get_shape()) != tuple(expected[name].shape):
            wrong_shape.append(f"{key} {tuple(tensor.get_shape())} != {tuple(expected[name].shape)}")
        else:
            loaded[name] = tensor[:]
    if EMBED not in loaded and head is not None and tuple(head.get_shape()) == tuple(expected[EMBED].shape):
        loaded[EMBED] = head[:]  # tied: the converted checkpoint kept the head's copy only
    missing = [k for k in expected if k not in loaded]
    if missing or unexpected or wrong_shape:
        parts = [f"{label}: {', '.join(keys[:6])}" + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
                 if keys]
        raise CheckpointError(f"mismatched pi0 weights in {ckpt.directory}: " + "; ".join(parts))
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in loaded.items()}, strict=True, assign=True)


def check_pi0_files(directory: Path) -> tuple[Pi0Checkpoint, Pi0Config, Pi0Stats]:
    """Everything loading reads, checked without reading a weight tensor."""
    ckpt = inspect_pi0(directory)
    return ckpt, read_pi0_config(ckpt), read_stats(ckpt)
