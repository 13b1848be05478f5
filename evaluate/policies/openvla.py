"""`policy=vla` with an OpenVLA model (`model=openvla` or the default `model=openvla_tiny`).

One query per env step: the LIBERO frame is preprocessed as the official evaluation does, the LLM runs
through the pruning engine with the configured pruner (prefill, then 7 greedy action tokens with a KV cache
of kept tokens), the action is un-normalised with the suite's statistics and its gripper mapped to the env
convention. Each query reports its latency per stage and what the pruner kept.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import baselines
from evaluate.policy import EpisodeContext, PolicyOutput
from vla_pruner.engine import PruningEngine, SequenceLayout
from vla_pruner.pruning import ModelLayout
from vla_pruner.models.action_tokenizer import gripper_to_env, select_action_stats
from vla_pruner.models.checkpoint import EXAMPLE_OVERRIDE, resolve_device_dtype
from vla_pruner.models.openvla import ACTION_DIM, OpenVLA, with_empty_token
from vla_pruner.models.preprocess import libero_image
from vla_pruner.models.processor import OpenVLAProcessor, prompt_for
from vla_pruner.models.tiny import ensure_tiny_checkpoint

LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


@dataclass
class OpenVLAModelConfig:
    """The fields of configs/model/openvla*.yaml (documented there)."""

    name: str
    family: str = "openvla"
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


def libero_instructions() -> Iterator[str]:
    """Every LIBERO task instruction: the vocabulary of the tiny model's tokenizer. A generator, so that
    the benchmark is only loaded when a tiny checkpoint is actually built, not when it is cached."""
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    for name in LIBERO_SUITES:
        suite = suites[name]()
        yield from (suite.get_task(i).language for i in range(suite.n_tasks))


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

    def __init__(self, model: OpenVLA, processor: OpenVLAProcessor, unnorm_key: str,
                 model_cfg: OpenVLAModelConfig, engine: PruningEngine):
        self.model, self.processor, self.unnorm_key, self.model_cfg = model, processor, unnorm_key, model_cfg
        self.engine = engine
        select_action_stats(model.norm_stats, unnorm_key)  # fail now, not at the first step
        self.input_ids: torch.Tensor | None = None
        self._burn_in()

    @torch.inference_mode()
    def _burn_in(self) -> None:
        """One untimed dense query, so that the first timed query does not pay for one-off allocations."""
        tokens = self.processor.tokenizer(prompt_for("warm up"), return_tensors="pt")["input_ids"]
        blank = Image.new("RGB", (224, 224))
        state = self.model.prefill(self.model.multimodal_embeds(
            with_empty_token(tokens), self.model.encode_image(self.processor.image_processor(blank))))
        self.model.decode(state)

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
    def act(self, obs: dict) -> PolicyOutput:
        model, engine, clock = self.model, self.engine, self._stopwatch()
        pixel_values = self.processor.image_processor(Image.fromarray(libero_image(obs["agentview_image"])))
        clock.lap("preprocess")
        visual = model.encode_image(pixel_values)
        clock.lap("vision")
        embeds = model.multimodal_embeds(self.input_ids, visual)
        hidden, _, trace = engine.prefill(embeds, SequenceLayout.openvla(embeds.shape[1], visual.shape[1]))
        first_token = model.language_model.logits(hidden[:, -1:]).argmax(-1)
        clock.lap("prefill")
        tokens = engine.decode(first_token, ACTION_DIM)
        engine.finish()
        clock.lap("decode")
        action = gripper_to_env(model.tokens_to_action(tokens[0], self.unnorm_key))
        latency = {stage: round(ms, 3) for stage, ms in clock.ms.items()}
        latency["total"] = round(sum(clock.ms.values()), 3)
        info = {"latency_ms": latency, "action_tokens": tokens[0].tolist(), "decode_steps": ACTION_DIM - 1,
                **trace.to_record()}
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
    return OpenVLAPolicy(model, processor, model_cfg.unnorm_key or cfg.suite.name, model_cfg, engine)
