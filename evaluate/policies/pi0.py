"""The pi0 family's adapter (`model=pi0`: a real checkpoint directory; `model=pi0_tiny`: the seeded small one).

openpi's LIBERO protocol: the agent view and the wrist camera (upright 256 px, resized with padding to 224; openpi
adds an empty third slot, masked, which is left out here instead of computed), the 8-dim state (eef position,
axis-angle, gripper qpos) normalised with the checkpoint's mean/std, the task's language as the prompt. One query samples a 50-action chunk (10 Euler steps over the prefix's
cache) of which the first `replan_steps` (default 5) are executed. Actions are un-normalised; where the checkpoint
predicts deltas of the state (openpi's pi0_libero: `extra_delta_transform`), the state's first 6 dims are added.
The gripper dim is already in the env's convention (-1 open, +1 close). Noise is drawn from a generator seeded by
(seed, episode), so an episode replays exactly. Queries of different prompts share a batch (masked, not cut). Each query records latency per stage under the harness's names
(preprocess, vision, prefill = the prefix pass, decode = the 10 Euler steps), its visual-token counts and what the
pruner kept. Each sample's pruner (`vla_pruner.models.pi0.pruned`: the prefix cut, action attention from the
expert's steps) is built on the valid cameras' tokens only.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from evaluate.config import ConfigError, build_checked_pruner
from evaluate.envs.base import ENV_ACTIONS, PRIMARY, WRIST, Observation
from evaluate.envs.libero_conventions import tiny_pi0_stats
from evaluate.envs.vocabulary import libero_instructions
from evaluate.policies.adapter import FamilyAdapter, LoadedModel, cache_root, check_dtype_and_device, model_values
from evaluate.policy import EpisodeContext
from vla_pruner.models.checkpoint import CheckpointError, resolve_device_dtype
from vla_pruner.models.pi0.model import Pi0
from vla_pruner.models.pi0.checkpoint import check_pi0_files
from vla_pruner.models.pi0 import pruned as pi0_pruned
from vla_pruner.models.pi0.inputs import resize_with_pad, to_pixels
from vla_pruner.models.pi0.tiny import TINY_PI0, ensure_tiny_pi0
from vla_pruner.models.seeded import tiny_checkpoint_built
from vla_pruner.models.pi0.tokenizer import Pi0Tokenizer
from vla_pruner.pruning import PRUNERS, Pruner

CAMERAS = (PRIMARY, WRIST)  # the model's first two image slots; the third is the empty camera
EXAMPLE = "model.checkpoint=/path/to/pi0_libero_pytorch"
# pruners pi0 cannot run, and why (told before weights load)
UNSUPPORTED_PRUNERS = {
    "vla_cache": "VLA-Cache reuses the previous query's keys/values through the Llama engine's KV store; pi0's "
                 "prefix has no cross-query cache (not implemented), so it cannot run on pi0",
    "gated_vla_cache": "Gated VLA-Cache is VLA-Cache with a gate on OpenVLA's action-token logits; pi0's prefix has no "
                       "cross-query cache and its flow-matching actions no token logits, so it cannot run on pi0",
    "vla_adp": "VLA-ADP scores with the Llama engine's layer-0 q.k probe and its official code defines it for "
               "OpenVLA-OFT only; pi0's prefix has no such probe, so it cannot run on pi0",
    "specprune": "SpecPrune-VLA's official code defines it for OpenVLA-OFT only (its counts are a primary and a "
                 "wrist camera's); it is not defined for pi0, so it cannot run on pi0",
}


@dataclass
class Pi0ModelConfig:
    """The fields of configs/model/pi0*.yaml (documented there)."""

    name: str
    family: str = "pi0"
    checkpoint: str | None = None
    build_seed: int | None = None
    replan_steps: int = 5
    relative_actions: bool | None = None
    dtype: str = "auto"
    note: str = ""

    @classmethod
    def from_cfg(cls, node: DictConfig) -> "Pi0ModelConfig":
        model = cls(**model_values(cls, node))
        if not isinstance(model.replan_steps, int) or isinstance(model.replan_steps, bool) or model.replan_steps < 1:
            raise ConfigError(f"model.replan_steps={model.replan_steps!r} must be an integer from 1 to the chunk size")
        if model.relative_actions not in (None, True, False):
            raise ConfigError(f"model.relative_actions={model.relative_actions!r}; valid: null (the checkpoint's "
                              "config), true, false")
        return model

    def location(self) -> Path:
        if self.checkpoint:
            return Path(self.checkpoint).expanduser()
        if self.build_seed is not None:
            return cache_root() / f"{self.name}-seed{self.build_seed}"
        raise ConfigError(f"model {self.name} needs a checkpoint directory: {EXAMPLE}")


def episode_generator(ctx: EpisodeContext) -> torch.Generator:
    key = f"{ctx.seed}/{ctx.suite}/{ctx.task_id}/{ctx.init_index}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


@dataclass
class Pi0Episode:
    tokens: np.ndarray  # [L]
    token_mask: np.ndarray  # [L]
    noise: torch.Generator


class LoadedPi0(LoadedModel):
    action_convention = ENV_ACTIONS  # openpi's LIBERO checkpoints: LIBERO's own actions

    def __init__(self, model: Pi0, tokenizer: Pi0Tokenizer, model_cfg: Pi0ModelConfig):
        self.model, self.tokenizer, self.model_cfg = model, tokenizer, model_cfg
        self.layout, self.device = pi0_pruned.pi0_layout(model, len(CAMERAS)), model.device
        chunk = model.config.chunk_size
        if model_cfg.replan_steps > chunk:
            raise ConfigError(f"model.replan_steps={model_cfg.replan_steps} exceeds the chunk of {chunk} actions")
        checkpoint_says = model.config.relative_actions
        self.relative_actions = checkpoint_says if model_cfg.relative_actions is None else model_cfg.relative_actions
        self.relative_source = "checkpoint config" if model_cfg.relative_actions is None else "model.relative_actions"

    def episode(self, ctx: EpisodeContext) -> Pi0Episode:
        tokens, mask = self.tokenizer(ctx.instruction)
        return Pi0Episode(tokens, mask, episode_generator(ctx))

    def query(self, episodes, observations, pruners, clock):
        model, stats = self.model, self.model.stats
        # openpi's client fills the model's third image slot with an empty, masked camera: never a key, so it is
        # left out of the prefix rather than computed (`Pi0` `without_empty_cameras`; 560 prefix tokens, not 816)
        B = len(episodes)
        pixels = np.stack([[to_pixels(obs.images[role]) for role in CAMERAS] for obs in observations])
        image_masks = torch.ones(B, len(CAMERAS), dtype=torch.bool)
        raw_state = np.stack([np.asarray(obs.state, dtype=np.float64) for obs in observations])
        state = torch.as_tensor(stats.normalize_state(raw_state), dtype=torch.float32)
        tokens = torch.as_tensor(np.stack([e.tokens for e in episodes]))
        token_masks = torch.as_tensor(np.stack([e.token_mask for e in episodes]))
        noise = torch.cat([model.make_noise(1, e.noise) for e in episodes])
        clock.lap("preprocess")
        images = model.embed_images(torch.from_numpy(pixels))
        clock.lap("vision")
        embeds, valid = model.embed_prefix(None, image_masks, tokens, token_masks, images)
        query = pi0_pruned.prefill(model, embeds, valid, image_masks, list(pruners))
        clock.lap("prefill")  # the prefix pass (the harness's stage names)
        chunk = pi0_pruned.integrate(model, query, model.pad_state(state), noise)
        pi0_pruned.finish(query)
        clock.lap("decode")  # the 10 Euler steps of the action expert
        normalized = chunk[..., : len(stats.action_mean)].cpu().numpy().astype(np.float64)  # the whole chunk
        actions = stats.unnormalize_actions(normalized[:, : self.model_cfg.replan_steps])
        if self.relative_actions:
            actions[..., :6] += raw_state[:, None, :6]
        return [(actions[i], normalized[i], {"decode_steps": 0, "euler_steps": model.config.num_steps,
                                             **trace.to_record()}) for i, trace in enumerate(query.traces)]

    def normalize(self, actions: np.ndarray, obs: Observation) -> np.ndarray:
        """Actions [n, 7] in the model's normalised action space, the inverse of the query's un-normalisation (and
        of the relative actions' shift by `obs.state`)."""
        actions = np.array(actions, dtype=np.float64)
        if self.relative_actions:
            actions[..., :6] -= np.asarray(obs.state, dtype=np.float64)[:6]
        return self.model.stats.normalize_actions(actions)

    def describe(self) -> dict:
        return {
            "model": self.model_cfg.name, "family": "pi0",
            "checkpoint": str(self.model.checkpoint_dir), "checkpoint_layout": self.model.layout,
            "device": str(self.model.device), "dtype": str(self.model.dtype).removeprefix("torch."),
            "replan_steps": self.model_cfg.replan_steps, "chunk_size": self.model.config.chunk_size,
            "relative_actions": self.relative_actions, "relative_actions_from": self.relative_source,
            "note": self.model_cfg.note,
        }


def check_pi0_pruner_name(name: str) -> None:
    if name in UNSUPPORTED_PRUNERS:
        supported = sorted(set(PRUNERS) - set(UNSUPPORTED_PRUNERS))
        raise ConfigError(f"pruner '{name}': {UNSUPPORTED_PRUNERS[name]}; valid choices for pi0: {', '.join(supported)}")


class Pi0Adapter(FamilyAdapter):
    cameras = CAMERAS

    def check(self, cfg: DictConfig) -> None:
        """What building the policy would trip over, told from the config and the checkpoint's files alone."""
        model = Pi0ModelConfig.from_cfg(cfg.model)
        check_dtype_and_device(model.dtype, cfg.device)
        check_pi0_pruner_name(cfg.pruner.name)
        directory = model.location()
        try:
            if model.build_seed is not None and not tiny_checkpoint_built(directory, model.build_seed):
                self.pruner(cfg.pruner, cfg.keep, pi0_pruned.pi0_layout(TINY_PI0, len(CAMERAS)))
                return  # built on first use
            _, config, _ = check_pi0_files(directory)
            Pi0Tokenizer.from_dir(directory, config.max_token_len)
        except CheckpointError as e:
            raise ConfigError(str(e)) from None
        self.pruner(cfg.pruner, cfg.keep, pi0_pruned.pi0_layout(config, len(CAMERAS)))
        if model.replan_steps > config.chunk_size:
            raise ConfigError(f"model.replan_steps={model.replan_steps} exceeds the chunk of {config.chunk_size} "
                              "actions")

    def prepare(self, obs: Observation) -> Observation:
        """The 224-px frames of both cameras (weight-free: the simulator workers run it with num_envs > 1)."""
        return Observation({role: resize_with_pad(obs.images[role]) for role in CAMERAS}, obs.state, obs.instruction)

    def pruner(self, options, keep: float, layout) -> Pruner:
        """The pruner a pi0 run builds on `layout` (the valid cameras' tokens), refused (ConfigError) where pi0
        cannot run it: a pruner pi0 has no path for, a bad option, or a plan its prefix does not implement.
        `evaluate.flops` counts with the same pruner."""
        check_pi0_pruner_name(options["name"])
        pruner = build_checked_pruner(options, keep, layout)
        why = pi0_pruned.unsupported(pruner.plan)
        if why:
            raise ConfigError(f"pruner {pruner.name}: {why}")
        return pruner

    def load(self, cfg: DictConfig) -> LoadedPi0:
        model_cfg = Pi0ModelConfig.from_cfg(cfg.model)
        directory = model_cfg.location()
        if model_cfg.build_seed is not None:
            directory = ensure_tiny_pi0(directory, model_cfg.build_seed, libero_instructions(), tiny_pi0_stats())
        device, dtype = resolve_device_dtype(cfg.device, model_cfg.dtype)
        model = Pi0.from_pretrained(directory, device=device, dtype=dtype)
        return LoadedPi0(model, Pi0Tokenizer.from_dir(directory, model.config.max_token_len), model_cfg)


ADAPTER = Pi0Adapter()
