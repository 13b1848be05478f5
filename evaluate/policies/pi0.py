"""`policy=vla` with a pi0 model (`model=pi0`: a real checkpoint directory; `model=pi0_tiny`: the seeded small one).

openpi's LIBERO protocol: the agent view and the wrist camera (upright 256 px, resized with padding to 224; openpi
adds an empty third slot, masked, which is left out here instead of computed), the 8-dim state (eef position,
axis-angle, gripper qpos) normalised with the checkpoint's mean/std, the task's language as the prompt. One query samples a 50-action chunk (10 Euler steps over the prefix's
cache) of which the first `replan_steps` (default 5) are executed. Actions are un-normalised; where the checkpoint
predicts deltas of the state (openpi's pi0_libero: `extra_delta_transform`), the state's first 6 dims are added.
The gripper dim is already in the env's convention (-1 open, +1 close). Noise is drawn from a generator seeded by
(seed, episode), so an episode replays exactly. Each query records latency per stage under the harness's names
(preprocess, vision, prefill = the prefix pass, decode = the 10 Euler steps), its visual-token counts and what the
pruner kept. Every slot has its own pruner (`vla_pruner.models.pi0.pruned`: the prefix cut, action attention from the
expert's steps), built on the valid cameras' tokens only.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

import baselines
from evaluate.config import ConfigError, build_checked_pruner
from evaluate.envs.base import PRIMARY, WRIST, Observation
from evaluate.envs.vocabulary import libero_instructions
from evaluate.policies.openvla import Stopwatch, slot_pruner
from evaluate.policies.vla_model import cache_root, check_dtype_and_device, model_values
from evaluate.policy import EpisodeContext, PolicyOutput
from vla_pruner.models.checkpoint import CheckpointError, resolve_device_dtype
from vla_pruner.models.pi0.model import Pi0
from vla_pruner.models.pi0.checkpoint import check_pi0_files
from vla_pruner.models.pi0 import pruned as pi0_pruned
from vla_pruner.models.pi0.inputs import resize_with_pad, to_pixels
from vla_pruner.models.pi0.tiny import TINY_PI0, ensure_tiny_pi0
from vla_pruner.models.seeded import tiny_checkpoint_built
from vla_pruner.models.pi0.tokenizer import Pi0Tokenizer
from vla_pruner.pruning import Pruner

CAMERAS = (PRIMARY, WRIST)  # the model's first two image slots; the third is the empty camera
EXAMPLE = "model.checkpoint=/path/to/pi0_libero_pytorch"
# pruners pi0 cannot run, and why (told before weights load)
UNSUPPORTED_PRUNERS = {
    "vla_cache": "VLA-Cache reuses the previous query's keys/values through the Llama engine's KV store; pi0's "
                 "prefix has no cross-query cache (not implemented), so it cannot run on pi0",
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


def pi0_frame(upright: np.ndarray) -> np.ndarray:
    return resize_with_pad(upright)


def prepare_pi0_observation(obs: Observation) -> Observation:
    """The 224-px frames of both cameras (weight-free: the simulator workers run it with num_envs > 1)."""
    return Observation({role: pi0_frame(obs.images[role]) for role in CAMERAS}, obs.state, obs.instruction)


def episode_generator(ctx: EpisodeContext) -> torch.Generator:
    key = f"{ctx.seed}/{ctx.suite}/{ctx.task_id}/{ctx.init_index}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


@dataclass
class Slot:
    tokens: np.ndarray  # [L]
    token_mask: np.ndarray  # [L]
    noise: torch.Generator
    pruner: Pruner  # its own: one episode's history never steers another's


class Pi0Policy:
    name = "vla"

    def __init__(self, model: Pi0, tokenizer: Pi0Tokenizer, model_cfg: Pi0ModelConfig,
                 make_pruner: Callable[[], Pruner]):
        """`make_pruner` builds the run's pruner: slot 0's, then one per further slot."""
        self.model, self.tokenizer, self.model_cfg = model, tokenizer, model_cfg
        self.make_pruner, self.pruner = make_pruner, make_pruner()
        chunk = model.config.chunk_size
        if model_cfg.replan_steps > chunk:
            raise ConfigError(f"model.replan_steps={model_cfg.replan_steps} exceeds the chunk of {chunk} actions")
        checkpoint_says = model.config.relative_actions
        self.relative_actions = checkpoint_says if model_cfg.relative_actions is None else model_cfg.relative_actions
        self.relative_source = "checkpoint config" if model_cfg.relative_actions is None else "model.relative_actions"
        self.slots: dict[int, Slot] = {}

    def reset(self, ctx: EpisodeContext) -> None:
        self.reset_slot(0, ctx)

    def reset_slot(self, slot: int, ctx: EpisodeContext, pruner: Pruner | None = None) -> None:
        tokens, mask = self.tokenizer(ctx.instruction)
        pruner = pruner if pruner is not None else slot_pruner(self.slots, slot, self.pruner, self.make_pruner)
        pruner.reset(seed=ctx.seed, episode=f"{ctx.suite}/{ctx.task_id}/{ctx.init_index}")
        self.slots[slot] = Slot(tokens, mask, episode_generator(ctx), pruner)

    def act(self, obs: Observation) -> PolicyOutput:
        return self.act_batch([(0, obs)])[0]

    @torch.inference_mode()
    def act_batch(self, queries: Sequence[tuple[int, Observation]], prepared: bool = False) -> list[PolicyOutput]:
        """One batched query for all (slot, observation) pairs: prompts may differ (they are masked, not cut)."""
        missing = [slot for slot, _ in queries if slot not in self.slots]
        if missing:
            raise RuntimeError(f"reset(ctx) must be called before act(obs) (slots {missing})")
        model, stats, laps = self.model, self.model.stats, Stopwatch(self.model.device)
        slots = [self.slots[slot] for slot, _ in queries]
        observations = [obs if prepared else prepare_pi0_observation(obs) for _, obs in queries]
        # openpi's client fills the model's third image slot with an empty, masked camera: never a key, so it is
        # left out of the prefix rather than computed (`Pi0` `without_empty_cameras`; 560 prefix tokens, not 816)
        B = len(queries)
        pixels = np.stack([[to_pixels(obs.images[role]) for role in CAMERAS] for obs in observations])
        image_masks = torch.ones(B, len(CAMERAS), dtype=torch.bool)
        raw_state = np.stack([np.asarray(obs.state, dtype=np.float64) for obs in observations])
        state = torch.as_tensor(stats.normalize_state(raw_state), dtype=torch.float32)
        tokens = torch.as_tensor(np.stack([s.tokens for s in slots]))
        token_masks = torch.as_tensor(np.stack([s.token_mask for s in slots]))
        noise = torch.cat([model.make_noise(1, s.noise) for s in slots])
        laps.lap("preprocess")
        images = model.embed_images(torch.from_numpy(pixels))
        laps.lap("vision")
        embeds, valid = model.embed_prefix(None, image_masks, tokens, token_masks, images)
        query = pi0_pruned.prefill(model, embeds, valid, image_masks, [s.pruner for s in slots])
        laps.lap("prefill")  # the prefix pass (the harness's stage names)
        chunk = pi0_pruned.integrate(model, query, model.pad_state(state), noise)
        pi0_pruned.finish(query)
        laps.lap("decode")  # the 10 Euler steps of the action expert
        normalized = chunk[..., : len(stats.action_mean)].cpu().numpy().astype(np.float64)  # the whole chunk
        actions = stats.unnormalize_actions(normalized[:, : self.model_cfg.replan_steps])
        if self.relative_actions:
            actions[..., :6] += raw_state[:, None, :6]
        return [PolicyOutput(actions=actions[i], info={
            "latency_ms": laps.latency(), "batch_size": B, "decode_steps": 0, "euler_steps": model.config.num_steps,
            **trace.to_record()}, normalized=normalized[i]) for i, trace in enumerate(query.traces)]

    def normalize_actions(self, actions: np.ndarray, obs: Observation) -> np.ndarray:
        """Env actions [n, 7] (an expert's, taken from `obs`) in the model's normalised action space, the inverse
        of the query's un-normalisation (and of the relative actions' shift by `obs.state`)."""
        actions = np.array(actions, dtype=np.float64)
        if self.relative_actions:
            actions[..., :6] -= np.asarray(obs.state, dtype=np.float64)[:6]
        return self.model.stats.normalize_actions(actions)

    def describe(self) -> dict:
        return {
            "policy": self.name, "model": self.model_cfg.name, "family": "pi0",
            "checkpoint": str(self.model.checkpoint_dir), "checkpoint_layout": self.model.layout,
            "device": str(self.model.device), "dtype": str(self.model.dtype).removeprefix("torch."),
            "replan_steps": self.model_cfg.replan_steps, "chunk_size": self.model.config.chunk_size,
            "relative_actions": self.relative_actions, "relative_actions_from": self.relative_source,
            "note": self.model_cfg.note, "pruner": self.pruner.describe(),
        }


def check_pi0_policy(cfg: DictConfig) -> None:
    """What building the policy would trip over, told from the config and the checkpoint's files alone."""
    model = Pi0ModelConfig.from_cfg(cfg.model)
    check_dtype_and_device(model.dtype, cfg.device)
    check_pi0_pruner_name(cfg.pruner.name)
    directory = model.location()
    try:
        if model.build_seed is not None and not tiny_checkpoint_built(directory, model.build_seed):
            build_pi0_pruner(cfg.pruner, cfg.keep, pi0_pruned.pi0_layout(TINY_PI0, len(CAMERAS)))
            return  # built on first use
        _, config, _ = check_pi0_files(directory)
        Pi0Tokenizer.from_dir(directory, config.max_token_len)
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    build_pi0_pruner(cfg.pruner, cfg.keep, pi0_pruned.pi0_layout(config, len(CAMERAS)))
    if model.replan_steps > config.chunk_size:
        raise ConfigError(f"model.replan_steps={model.replan_steps} exceeds the chunk of {config.chunk_size} actions")


def check_pi0_pruner_name(name: str) -> None:
    if name in UNSUPPORTED_PRUNERS:
        supported = sorted(set(baselines.PRUNERS) - set(UNSUPPORTED_PRUNERS))
        raise ConfigError(f"pruner '{name}': {UNSUPPORTED_PRUNERS[name]}; valid choices for pi0: {', '.join(supported)}")


def build_pi0_pruner(pruner_cfg, keep: float, layout) -> Pruner:
    """The pruner a pi0 run builds on `layout` (the valid cameras' tokens), refused (ConfigError) where pi0 cannot
    run it: a pruner pi0 has no path for, a bad option, or a plan its prefix does not implement. `evaluate.flops`
    counts with the same pruner."""
    check_pi0_pruner_name(pruner_cfg["name"])
    pruner = build_checked_pruner(pruner_cfg, keep, layout)
    why = pi0_pruned.unsupported(pruner.plan)
    if why:
        raise ConfigError(f"pruner {pruner.name}: {why}")
    return pruner


def build_pi0_policy(cfg: DictConfig) -> Pi0Policy:
    model_cfg = Pi0ModelConfig.from_cfg(cfg.model)
    directory = model_cfg.location()
    if model_cfg.build_seed is not None:
        directory = ensure_tiny_pi0(directory, model_cfg.build_seed, libero_instructions())
    device, dtype = resolve_device_dtype(cfg.device, model_cfg.dtype)
    model = Pi0.from_pretrained(directory, device=device, dtype=dtype)
    layout = pi0_pruned.pi0_layout(model, len(CAMERAS))

    def make_pruner(options=cfg.pruner, keep: float = cfg.keep) -> Pruner:
        return baselines.build_pruner(options, keep, layout)

    return Pi0Policy(model, Pi0Tokenizer.from_dir(directory, model.config.max_token_len), model_cfg, make_pruner)
