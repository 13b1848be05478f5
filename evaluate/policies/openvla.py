"""The openvla family's adapter (`model=openvla`, `model=openvla_tiny`), run by evaluate.policies.vla_policy.VLAPolicy.

One query per env step: the primary camera's image is preprocessed as the official evaluation does (JPEG round trip,
Lanczos to 224, `model_image`), the LLM runs through the pruning engine with each sample's pruner (prefill, then 7
greedy action tokens with a KV cache of kept tokens), and the action is un-normalised with the suite's statistics;
its gripper is OpenVLA's datasets' (1 open, 0 close), which the benchmark converts. Queries of one prompt are
answered in one batch (a batch holds one prompt length).
"""
from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from evaluate.envs.base import OPEN1_CLOSE0_GRIPPER, PRIMARY, Observation
from evaluate.envs.libero_conventions import tiny_openvla_stats
from evaluate.envs.suites import model_suite
from evaluate.policies.adapter import FamilyAdapter, LoadedModel
from evaluate.policies.openvla_checks import check_openvla_model
from evaluate.policies.openvla_config import OpenVLAModelConfig, resolve_checkpoint_path
from vla_pruner.families import model_family
from vla_pruner.models.checkpoint import resolve_device_dtype
from vla_pruner.models.openvla.action_tokenizer import normalize, select_action_stats
from vla_pruner.models.openvla.model import ACTION_DIM, OpenVLA, with_empty_token
from vla_pruner.models.openvla.processor import OpenVLAProcessor, prompt_for
from vla_pruner.models.openvla.cost import variant_of
from vla_pruner.models.preprocess import model_image


class LoadedOpenVLA(LoadedModel):
    action_convention = OPEN1_CLOSE0_GRIPPER

    def __init__(self, model: OpenVLA, processor: OpenVLAProcessor, unnorm_key: str, model_cfg: OpenVLAModelConfig,
                 cameras: tuple[str, ...]):
        self.model, self.processor, self.unnorm_key, self.model_cfg = model, processor, unnorm_key, model_cfg
        self.cameras, self.layout, self.device = cameras, model.model_layout, model.device
        self.engine = model.dense_engine()  # each query passes its samples' pruners
        select_action_stats(model.norm_stats, unnorm_key)  # fail now, not at the first step

    def episode(self, ctx) -> torch.Tensor:
        """The episode's tokenised prompt [1, T]."""
        tokens = self.processor.tokenizer(prompt_for(ctx.instruction), return_tensors="pt")["input_ids"]
        return with_empty_token(tokens)

    def batch_key(self, episode: torch.Tensor) -> list:
        return episode.tolist()

    def frames(self, observations) -> list[list[np.ndarray]]:
        """Per observation, the model's 224 view (uint8) of each camera it reads: the pixel values' source, and
        what pruners that compare frames (VLA-Cache) are shown."""
        return [[obs.images[camera] for camera in self.cameras] for obs in observations]

    def pixels(self, frames: list[list[np.ndarray]]) -> torch.Tensor:
        """[B, 6 per camera, 224, 224]: each observation's cameras on the channel axis."""
        return torch.cat([torch.cat([self.processor.image_processor(Image.fromarray(f)) for f in per_obs], dim=1)
                          for per_obs in frames])

    def query(self, episodes, observations, pruners, clock):
        model, engine = self.model, self.engine
        frames = self.frames(observations)
        pixel_values = self.pixels(frames)
        clock.lap("preprocess")
        visual = model.encode_image(pixel_values)
        clock.lap("vision")
        embeds = model.multimodal_embeds(episodes[0], visual)
        state = engine.prefill(embeds, model.sequence_layout(embeds.shape[1]), pruners, frames)  # + 1st action token
        clock.lap("prefill")
        tokens = engine.decode(state, ACTION_DIM)
        engine.finish(state)
        clock.lap("decode")
        answers = []
        for row, trace in zip(tokens, state.traces):
            action = model.tokens_to_action(row, self.unnorm_key)
            info = {"action_tokens": row.tolist(), "decode_steps": ACTION_DIM - 1, **trace.to_record()}
            normalized = model.action_tokenizer.normalized(row.cpu().numpy())
            answers.append((action[None], normalized[None], info))
        return answers

    def normalize(self, actions: np.ndarray, obs: Observation) -> np.ndarray:
        """Actions [n, 7] in the model's normalised space, clipped to [-1, 1] as in training."""
        return normalize(actions, select_action_stats(self.model.norm_stats, self.unnorm_key))

    def describe(self) -> dict:
        return {
            "model": self.model_cfg.name,
            "checkpoint": str(self.model.checkpoint_dir),
            "device": str(self.model.device),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "unnorm_key": self.unnorm_key,
            "note": self.model_cfg.note,
        }


class OpenVLAAdapter(FamilyAdapter):
    """The adapter of OpenVLA and of a family that reads and decodes as OpenVLA does (one from another package
    subclasses it, or is an instance of it)."""

    cameras = (PRIMARY,)  # the one image OpenVLA reads

    def tiny_stats(self) -> dict:
        """The statistics its seeded tiny model is built with (LIBERO's)."""
        return tiny_openvla_stats()

    def check(self, cfg: DictConfig) -> None:
        check_openvla_model(cfg, model_family(cfg.model.family), self.tiny_stats())

    def prepare(self, obs: Observation) -> Observation:
        return Observation({role: model_image(obs.images[role]) for role in self.cameras}, obs.state, obs.instruction)

    def load(self, cfg: DictConfig) -> LoadedOpenVLA:
        model_cfg = OpenVLAModelConfig.from_cfg(cfg.model)
        suite = model_suite(cfg.suite.name)  # a perturbed suite: its base suite's checkpoint and statistics
        checkpoint = resolve_checkpoint_path(model_cfg, suite)
        device, dtype = resolve_device_dtype(cfg.device, model_cfg.dtype)
        model = OpenVLA.from_pretrained(checkpoint, device=device, dtype=dtype)
        unnorm_key = variant_of(model_family(model_cfg.family)).unnorm_key(model_cfg.unnorm_key, suite)
        return LoadedOpenVLA(model, OpenVLAProcessor.from_pretrained(checkpoint), unnorm_key, model_cfg, self.cameras)


ADAPTER = OpenVLAAdapter()
