"""`policy=vla` with an OpenVLA-OFT model (`model=openvla_oft` or `model=openvla_oft_tiny`), any pruner.

One query per 8-step chunk, executed open loop: both cameras (primary, wrist) are preprocessed as OpenVLA's
agent view (upright from the env, then JPEG, Lanczos to 224, centre crop), the observation's 8-dim robot state
is normalised with the suite's `{suite}_no_noops` statistics, the LLM runs once (bidirectional) through the
pruning engine, and the action head reads its window from the end of the pruned sequence. The chunk is
un-normalised and its gripper mapped to the env convention. Each query reports per-stage latency
(decode = the action head), its batch size and what the pruner kept. Episodes run in slots as OpenVLA's do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

import baselines
from evaluate.envs.base import PRIMARY, WRIST, Observation
from evaluate.envs.suites import model_suite
from evaluate.policies.openvla import OpenVLAPolicy, Slot, Stopwatch
from evaluate.policies.vla_model import OpenVLAModelConfig, resolve_checkpoint_path
from evaluate.policy import PolicyOutput
from vla_pruner.pruning import Pruner
from vla_pruner.models.openvla.action_tokenizer import gripper_to_env
from vla_pruner.models.checkpoint import resolve_device_dtype
from vla_pruner.models.openvla_oft.model import (
    READOUT_ROWS, OpenVLAOFT,
    select_proprio_stats,
)
from vla_pruner.models.openvla.processor import OpenVLAProcessor, prompt_for
from vla_pruner.models.openvla_oft.family import FAMILY
from vla_pruner.models.robot_state import PROPRIO_DIM
from vla_pruner.models.openvla_oft.tiny import add_oft_parts

CAMERAS = (PRIMARY, WRIST)  # the model's image order



class OpenVLAOFTPolicy(OpenVLAPolicy):
    """OpenVLA's policy (prompt, pruner reset per episode, description) with OFT's observation, one
    bidirectional pass per query and an 8-action chunk."""

    model: OpenVLAOFT
    cameras = CAMERAS

    def __init__(self, model: OpenVLAOFT, processor: OpenVLAProcessor, unnorm_key: str,
                 model_cfg: OpenVLAModelConfig, make_pruner):
        select_proprio_stats(model.norm_stats, unnorm_key)  # fail now, not at the first step
        super().__init__(model, processor, unnorm_key, model_cfg, make_pruner)

    @torch.inference_mode()
    def _burn_in(self) -> None:
        """One untimed pass through the engine that act() times (its pruner reset after), so that the first
        timed query does not pay for one-off allocations."""
        tokens = self.processor.tokenizer(prompt_for("warm up"), return_tensors="pt")["input_ids"]
        frames = [[np.zeros((224, 224, 3), dtype=np.uint8)] * len(CAMERAS)]
        embeds = self.model.multimodal_embeds(tokens, self.model.encode_images(self._pixels(frames)),
                                              self.model.project_proprio(np.zeros(PROPRIO_DIM)))
        self.model.action_chunk(self.model.run_llm(embeds, self.engine, frames=frames).last_rows(READOUT_ROWS))
        self.engine.pruner.reset()

    def _act_one_prompt(self, slots: list[Slot], observations: list[Observation],
                        prepared: bool) -> list[PolicyOutput]:
        model, clock = self.model, Stopwatch(self.model.device)
        frames = self._frames(observations, prepared)
        pixel_values = self._pixels(frames)
        proprio = np.stack([model.normalize_proprio(obs.state, self.unnorm_key) for obs in observations])
        clock.lap("preprocess")
        embeds = model.multimodal_embeds(slots[0].input_ids, model.encode_images(pixel_values),
                                         model.project_proprio(proprio))
        clock.lap("vision")
        # prefill and finish: the action attention is probed in this pass
        state = model.run_llm(embeds, self.engine, [slot.pruner for slot in slots], frames)
        clock.lap("prefill")
        normalized = model.action_chunk(state.last_rows(READOUT_ROWS)).cpu().numpy()
        clock.lap("decode")
        return [PolicyOutput(actions=gripper_to_env(model.unnormalize(chunk, self.unnorm_key)),
                             info={"latency_ms": clock.latency(), "batch_size": len(slots), "decode_steps": 0,
                                   **trace.to_record()}, normalized=chunk)
                for chunk, trace in zip(normalized, state.traces)]

    def describe(self) -> dict:
        return {**super().describe(), "family": self.model_cfg.family}


def build_openvla_oft_policy(cfg: DictConfig) -> OpenVLAOFTPolicy:
    """Model, pruner and engine for `cfg.model` (an openvla_oft* config), `cfg.pruner` at `cfg.keep`."""
    model_cfg = OpenVLAModelConfig.from_cfg(cfg.model)
    suite = model_suite(cfg.suite.name)  # a perturbed suite: its base suite's checkpoint and statistics
    checkpoint = resolve_checkpoint_path(model_cfg, suite)
    if model_cfg.build_seed is not None:  # the tiny model: its OpenVLA base exists now, add the OFT parts
        add_oft_parts(Path(checkpoint), model_cfg.build_seed)
    device, dtype = resolve_device_dtype(cfg.device, model_cfg.dtype)
    model = OpenVLAOFT.from_pretrained(checkpoint, device=device, dtype=dtype)
    processor = OpenVLAProcessor.from_pretrained(checkpoint)
    layout = model.model_layout

    def make_pruner(options=cfg.pruner, keep: float = cfg.keep) -> Pruner:
        return baselines.build_pruner(options, keep, layout)

    return OpenVLAOFTPolicy(model, processor, FAMILY.unnorm_key(model_cfg.unnorm_key, suite), model_cfg,
                            make_pruner)
