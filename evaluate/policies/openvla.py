"""`policy=vla` with an OpenVLA model (`model=openvla` or the default `model=openvla_tiny`).

One query per env step: the LIBERO frame is preprocessed as the official evaluation does, the model
decodes 7 action tokens, the action is un-normalised with the suite's statistics and its gripper mapped
to the env convention. Each query reports its latency per stage.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from evaluate.policy import EpisodeContext, PolicyOutput, register_policy
from vla_pruner.models.action_tokenizer import gripper_to_env, select_action_stats
from vla_pruner.models.checkpoint import EXAMPLE_OVERRIDE, resolve_device_dtype
from vla_pruner.models.openvla import OpenVLA, with_empty_token
from vla_pruner.models.preprocess import libero_image
from vla_pruner.models.processor import OpenVLAProcessor, prompt_for
from vla_pruner.models.tiny import ensure_tiny_checkpoint

LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


@dataclass
class OpenVLAModelConfig:
    """The fields of configs/model/openvla*.yaml (documented there)."""

    name: str
    checkpoint: str | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)
    build_seed: int | None = None
    unnorm_key: str | None = None
    dtype: str = "auto"
    note: str = ""

    @classmethod
    def from_cfg(cls, model_cfg: DictConfig) -> "OpenVLAModelConfig":
        values = OmegaConf.to_container(model_cfg, resolve=True)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        return cls(**values)


def cache_root() -> Path:
    return Path(os.environ.get("VLA_PRUNER_CACHE", "~/.cache/vla_pruner")).expanduser()


def libero_instructions() -> list[str]:
    """Every LIBERO task instruction: the vocabulary of the tiny model's tokenizer."""
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    return [suites[name]().get_task(i).language for name in LIBERO_SUITES for i in range(suites[name]().n_tasks)]


def resolve_checkpoint_path(model: OpenVLAModelConfig, suite: str) -> str:
    """Explicit `checkpoint`, else the built tiny model, else the suite's entry in `checkpoints`."""
    if model.build_seed is not None:
        path = model.checkpoint or cache_root() / f"{model.name}-seed{model.build_seed}"
        return str(ensure_tiny_checkpoint(path, model.build_seed, libero_instructions()))
    if model.checkpoint:
        return model.checkpoint
    if suite not in model.checkpoints:
        raise ValueError(
            f"{model.name} has no checkpoint for suite {suite} (official ones: {', '.join(model.checkpoints)}); "
            f"point at one with {EXAMPLE_OVERRIDE}"
        )
    return model.checkpoints[suite]


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

    def __init__(self, model: OpenVLA, processor: OpenVLAProcessor, unnorm_key: str, model_cfg: OpenVLAModelConfig):
        self.model, self.processor, self.unnorm_key, self.model_cfg = model, processor, unnorm_key, model_cfg
        select_action_stats(model.norm_stats, unnorm_key)  # fail now, not at the first step
        self.input_ids: torch.Tensor | None = None

    def reset(self, ctx: EpisodeContext) -> None:
        tokens = self.processor.tokenizer(prompt_for(ctx.instruction), return_tensors="pt")["input_ids"]
        self.input_ids = with_empty_token(tokens)

    @torch.inference_mode()
    def act(self, obs: dict) -> PolicyOutput:
        if self.input_ids is None:
            raise RuntimeError("reset(ctx) must be called before act(obs)")
        model = self.model
        clock = Stopwatch(model.device)
        pixel_values = self.processor.image_processor(Image.fromarray(libero_image(obs["agentview_image"])))
        clock.lap("preprocess")
        visual = model.encode_image(pixel_values)
        clock.lap("vision")
        state = model.prefill(model.multimodal_embeds(self.input_ids, visual))
        clock.lap("prefill")
        tokens = model.decode(state)
        clock.lap("decode")
        action = gripper_to_env(model.tokens_to_action(tokens[0], self.unnorm_key))
        latency = {stage: round(ms, 3) for stage, ms in clock.ms.items()}
        latency["total"] = round(sum(clock.ms.values()), 3)
        return PolicyOutput(actions=action[None], info={"latency_ms": latency, "action_tokens": tokens[0].tolist()})

    def describe(self) -> dict:
        return {
            "policy": self.name,
            "model": self.model_cfg.name,
            "checkpoint": str(self.model.checkpoint_dir),
            "device": str(self.model.device),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "unnorm_key": self.unnorm_key,
            "note": self.model_cfg.note,
        }


@register_policy("vla")
def build_openvla_policy(cfg: DictConfig) -> OpenVLAPolicy:
    model_cfg = OpenVLAModelConfig.from_cfg(cfg.model)
    checkpoint = resolve_checkpoint_path(model_cfg, cfg.suite.name)
    device, dtype = resolve_device_dtype(cfg.device, model_cfg.dtype)
    model = OpenVLA.from_pretrained(checkpoint, device=device, dtype=dtype)
    processor = OpenVLAProcessor.from_pretrained(checkpoint)
    return OpenVLAPolicy(model, processor, model_cfg.unnorm_key or cfg.suite.name, model_cfg)
