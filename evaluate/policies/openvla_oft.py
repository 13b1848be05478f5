"""The openvla_oft family's adapter (`model=openvla_oft`, `openvla_oft_tiny`, `openvla_oft_small`).

One query per 8-step chunk, executed open loop: both cameras (primary, wrist) are preprocessed as OpenVLA's agent
view (upright from the env, then JPEG, Lanczos to 224, centre crop), the observation's 8-dim robot state is
normalised with the suite's `{suite}_no_noops` statistics, the LLM runs once (bidirectional) through the pruning
engine, and the action head reads its window from the end of the pruned sequence. The chunk is un-normalised; its
gripper is OpenVLA's datasets' (the benchmark converts it). Each query records decode = the action head. Prompts,
batching by prompt and the normalisation of an expert's actions are OpenVLA's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from evaluate.envs.base import PRIMARY, WRIST
from evaluate.envs.libero_conventions import tiny_oft_stats
from evaluate.envs.suites import model_suite
from evaluate.policies.openvla import LoadedOpenVLA, OpenVLAAdapter
from evaluate.policies.openvla_config import OpenVLAModelConfig, resolve_checkpoint_path
from vla_pruner.families import model_family
from vla_pruner.models.checkpoint import resolve_device_dtype
from vla_pruner.models.openvla.processor import OpenVLAProcessor
from vla_pruner.models.openvla.cost import variant_of
from vla_pruner.models.openvla_oft.model import READOUT_ROWS, OpenVLAOFT, select_proprio_stats
from vla_pruner.models.openvla_oft.tiny import add_oft_parts


class LoadedOpenVLAOFT(LoadedOpenVLA):
    model: OpenVLAOFT

    def __init__(self, model: OpenVLAOFT, *args):
        select_proprio_stats(model.norm_stats, args[1])  # fail now, not at the first step
        super().__init__(model, *args)

    def query(self, episodes, observations, pruners, clock):
        model = self.model
        frames = self.frames(observations)
        pixel_values = self.pixels(frames)
        proprio = np.stack([model.normalize_proprio(obs.state, self.unnorm_key) for obs in observations])
        clock.lap("preprocess")
        embeds = model.multimodal_embeds(episodes[0], model.encode_images(pixel_values),
                                         model.project_proprio(proprio))
        clock.lap("vision")
        # prefill and finish: the action attention is probed in this pass
        state = model.run_llm(embeds, self.engine, pruners, frames)
        clock.lap("prefill")
        normalized = model.action_chunk(state.last_rows(READOUT_ROWS)).cpu().numpy()
        clock.lap("decode")
        return [(model.unnormalize(chunk, self.unnorm_key), chunk, {"decode_steps": 0, **trace.to_record()})
                for chunk, trace in zip(normalized, state.traces)]

    def describe(self) -> dict:
        return {**super().describe(), "family": self.model_cfg.family}


class OpenVLAOFTAdapter(OpenVLAAdapter):
    cameras = (PRIMARY, WRIST)  # the model's image order

    def tiny_stats(self) -> dict:
        return tiny_oft_stats()

    def load(self, cfg: DictConfig) -> LoadedOpenVLAOFT:
        model_cfg = OpenVLAModelConfig.from_cfg(cfg.model)
        suite = model_suite(cfg.suite.name)  # a perturbed suite: its base suite's checkpoint and statistics
        checkpoint = resolve_checkpoint_path(model_cfg, suite)
        if model_cfg.build_seed is not None:  # the tiny model: its OpenVLA base exists now, add the OFT parts
            add_oft_parts(Path(checkpoint), model_cfg.build_seed, self.tiny_stats())
        device, dtype = resolve_device_dtype(cfg.device, model_cfg.dtype)
        model = OpenVLAOFT.from_pretrained(checkpoint, device=device, dtype=dtype)
        unnorm_key = variant_of(model_family(model_cfg.family)).unnorm_key(model_cfg.unnorm_key, suite)
        return LoadedOpenVLAOFT(model, OpenVLAProcessor.from_pretrained(checkpoint), unnorm_key, model_cfg,
                                self.cameras)


ADAPTER = OpenVLAOFTAdapter()
