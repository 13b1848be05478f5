"""`policy=vla` with an OpenVLA model (`model=openvla` or the default `model=openvla_tiny`).

One query per env step: the primary camera's image is preprocessed as the official evaluation does, the LLM runs
through the pruning engine with the configured pruner (prefill, then 7 greedy action tokens with a KV cache
of kept tokens), the action is un-normalised with the suite's statistics and its gripper mapped to the env
convention. Each query reports its latency per stage and what the pruner kept.
"""
from __future__ import annotations

import time

import torch
from omegaconf import DictConfig
from PIL import Image

import baselines
from evaluate.envs.base import PRIMARY, Observation
from evaluate.policy import EpisodeContext, PolicyOutput
from vla_pruner.models.preprocess import model_image
from evaluate.policies.vla_model import OpenVLAModelConfig, resolve_checkpoint_path
from vla_pruner.engine import PruningEngine
from vla_pruner.pruning import ModelLayout
from vla_pruner.models.action_tokenizer import gripper_to_env, select_action_stats
from vla_pruner.models.checkpoint import resolve_device_dtype
from vla_pruner.models.openvla import ACTION_DIM, FAMILY, OpenVLA, with_empty_token
from vla_pruner.models.processor import OpenVLAProcessor, prompt_for



class Stopwatch:
    """Wall-clock milliseconds per stage; waits for CUDA work so a stage's time is its own."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.ms[stage] = 1e3 * (now - self._last)
        self._last = now


class OpenVLAPolicy:
    name = "vla"

    def __init__(self, model: OpenVLA, processor: OpenVLAProcessor, unnorm_key: str,
                 model_cfg: OpenVLAModelConfig, engine: PruningEngine):
        self.model, self.processor, self.unnorm_key, self.model_cfg = model, processor, unnorm_key, model_cfg
        self.engine = engine
        select_action_stats(model.norm_stats, unnorm_key)  # fail now, not at the first step
        self.input_ids: torch.Tensor | None = None
        self._burn_in()

    @torch.inference_mode()
    def _burn_in(self) -> None:
        """One untimed query through the engine that act() times (its pruner reset after), so that the first
        timed query does not pay for one-off allocations."""
        tokens = self.processor.tokenizer(prompt_for("warm up"), return_tensors="pt")["input_ids"]
        blank = self.processor.image_processor(Image.new("RGB", (224, 224)))
        self.model.predict_action_tokens(tokens, blank, engine=self.engine)
        self.engine.pruner.reset()

    def reset(self, ctx: EpisodeContext) -> None:
        tokens = self.processor.tokenizer(prompt_for(ctx.instruction), return_tensors="pt")["input_ids"]
        self.input_ids = with_empty_token(tokens)
        self.engine.pruner.reset(seed=ctx.seed, episode=f"{ctx.suite}/{ctx.task_id}/{ctx.init_index}")

    def _stopwatch(self) -> Stopwatch:
        """A new query's stopwatch, once reset() has set the episode's prompt."""
        if self.input_ids is None:
            raise RuntimeError("reset(ctx) must be called before act(obs)")
        return Stopwatch(self.model.device)

    @torch.inference_mode()
    def act(self, obs: Observation) -> PolicyOutput:
        model, engine, clock = self.model, self.engine, self._stopwatch()
        pixel_values = self.processor.image_processor(Image.fromarray(model_image(obs.images[PRIMARY])))
        clock.lap("preprocess")
        visual = model.encode_image(pixel_values)
        clock.lap("vision")
        embeds = model.multimodal_embeds(self.input_ids, visual)
        state = engine.prefill(embeds, model.sequence_layout(embeds.shape[1]))  # and the first action token
        clock.lap("prefill")
        tokens = engine.decode(state, ACTION_DIM)
        engine.finish(state)
        clock.lap("decode")
        action = gripper_to_env(model.tokens_to_action(tokens[0], self.unnorm_key))
        latency = {stage: round(ms, 3) for stage, ms in clock.ms.items()}
        latency["total"] = round(sum(clock.ms.values()), 3)
        info = {"latency_ms": latency, "action_tokens": tokens[0].tolist(), "decode_steps": ACTION_DIM - 1,
                **state.trace.to_record()}
        return PolicyOutput(actions=action[None], info=info)

    def describe(self) -> dict:
        return {
            "policy": self.name,
            "model": self.model_cfg.name,
            "checkpoint": str(self.model.checkpoint_dir),
            "device": str(self.model.device),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "unnorm_key": self.unnorm_key,
            "note": self.model_cfg.note,
            "pruner": self.engine.pruner.describe(),
        }


def build_openvla_policy(cfg: DictConfig) -> OpenVLAPolicy:
    model_cfg = OpenVLAModelConfig.from_cfg(cfg.model)
    checkpoint = resolve_checkpoint_path(model_cfg, cfg.suite.name)
    device, dtype = resolve_device_dtype(cfg.device, model_cfg.dtype)
    model = OpenVLA.from_pretrained(checkpoint, device=device, dtype=dtype)
    processor = OpenVLAProcessor.from_pretrained(checkpoint)
    layout = ModelLayout(num_layers=len(model.language_model.layers), image_tokens=(model.num_patches,))
    pruner = baselines.build_pruner(cfg.pruner, cfg.keep, layout)
    engine = PruningEngine(model.language_model, pruner)
    return OpenVLAPolicy(model, processor, FAMILY.unnorm_key(model_cfg.unnorm_key, cfg.suite.name), model_cfg, engine)
