"""`policy=vla` with an OpenVLA model (`model=openvla` or the default `model=openvla_tiny`).

One query per env step: the primary camera's image is preprocessed as the official evaluation does, the LLM runs
through the pruning engine with the configured pruner (prefill, then 7 greedy action tokens with a KV cache
of kept tokens), the action is un-normalised with the suite's statistics and its gripper mapped to the env
convention. Each query reports its latency per stage, its batch size and what the pruner kept.

Several episodes at once (`num_envs` > 1): each episode is a slot with its own prompt and its own pruner (a
pruner's history is per episode); `act_batch` answers the waiting slots with one batched pass per prompt (the
episodes of one task share it), each sample pruned by its own pruner. `reset`/`act` are slot 0, batch size 1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import groupby
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

import baselines
from evaluate.envs.base import PRIMARY, Observation
from evaluate.envs.suites import model_suite
from evaluate.policy import EpisodeContext, PolicyOutput
from vla_pruner.models.preprocess import IMAGE_SIZE, model_image
from evaluate.policies.vla_model import OpenVLAModelConfig, resolve_checkpoint_path
from vla_pruner.engine import PruningEngine
from vla_pruner.pruning import Pruner
from vla_pruner.models.openvla.action_tokenizer import gripper_from_env, gripper_to_env, normalize, select_action_stats
from vla_pruner.models.checkpoint import resolve_device_dtype
from vla_pruner.models.openvla.family import FAMILY
from vla_pruner.models.openvla.model import ACTION_DIM, OpenVLA, with_empty_token
from vla_pruner.models.openvla.processor import OpenVLAProcessor, prompt_for



CAMERAS = (PRIMARY,)  # the one image OpenVLA reads


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

    def latency(self) -> dict[str, float]:
        """Milliseconds per stage and their total, as a query record holds them."""
        latency = {stage: round(ms, 3) for stage, ms in self.ms.items()}
        latency["total"] = round(sum(self.ms.values()), 3)
        return latency


def slot_pruner(slots: dict, slot: int, first: Pruner, make_pruner: Callable[[], Pruner]) -> Pruner:
    """The pruner a slot keeps across episodes: its own, else `first` for slot 0, else a new one."""
    if slot in slots:
        return slots[slot].pruner
    return first if slot == 0 else make_pruner()


@dataclass
class Slot:
    """One running episode's state in the policy."""

    input_ids: torch.Tensor  # the episode's tokenised prompt [1, T]
    pruner: Pruner  # its own pruner: the history of one episode never steers another's


class OpenVLAPolicy:
    name = "vla"
    cameras = CAMERAS

    def __init__(self, model: OpenVLA, processor: OpenVLAProcessor, unnorm_key: str,
                 model_cfg: OpenVLAModelConfig, make_pruner: Callable[[], Pruner]):
        """`make_pruner` builds the run's pruner: the engine's (slot 0), then one per further slot."""
        self.model, self.processor, self.unnorm_key, self.model_cfg = model, processor, unnorm_key, model_cfg
        self.engine, self.make_pruner = PruningEngine(model.language_model, make_pruner()), make_pruner
        select_action_stats(model.norm_stats, unnorm_key)  # fail now, not at the first step
        self.slots: dict[int, Slot] = {}
        self._burn_in()

    @torch.inference_mode()
    def _burn_in(self) -> None:
        """One untimed query through the engine that act() times (its pruner reset after), so that the first
        timed query does not pay for one-off allocations."""
        tokens = self.processor.tokenizer(prompt_for("warm up"), return_tensors="pt")["input_ids"]
        frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        blank = self.processor.image_processor(Image.fromarray(frame))
        self.model.predict_action_tokens(tokens, blank, engine=self.engine, frames=[[frame]])
        self.engine.pruner.reset()

    def reset(self, ctx: EpisodeContext) -> None:
        self.reset_slot(0, ctx)

    def reset_slot(self, slot: int, ctx: EpisodeContext, pruner: Pruner | None = None) -> None:
        tokens = self.processor.tokenizer(prompt_for(ctx.instruction), return_tensors="pt")["input_ids"]
        pruner = pruner if pruner is not None else slot_pruner(self.slots, slot, self.engine.pruner, self.make_pruner)
        pruner.reset(seed=ctx.seed, episode=f"{ctx.suite}/{ctx.task_id}/{ctx.init_index}")
        self.slots[slot] = Slot(with_empty_token(tokens), pruner)

    def act(self, obs: Observation) -> PolicyOutput:
        return self.act_batch([(0, obs)])[0]

    @torch.inference_mode()
    def act_batch(self, queries: Sequence[tuple[int, Observation]], prepared: bool = False) -> list[PolicyOutput]:
        """One batched pass per prompt among the queries (a batch holds one prompt length); outputs in order.
        `prepared`: the images are the model's frames already (evaluate.policies.vla.prepare_vla_observation)."""
        missing = [slot for slot, _ in queries if slot not in self.slots]
        if missing:
            raise RuntimeError(f"reset(ctx) must be called before act(obs) (slots {missing})")
        outputs: dict[int, PolicyOutput] = {}
        prompts = [self.slots[slot].input_ids.tolist() for slot, _ in queries]
        for _, group in groupby(sorted(range(len(queries)), key=prompts.__getitem__), key=prompts.__getitem__):
            group = list(group)
            batch = self._act_one_prompt([self.slots[queries[i][0]] for i in group],
                                         [queries[i][1] for i in group], prepared)
            outputs.update(zip(group, batch))
        return [outputs[i] for i in range(len(queries))]

    def _frames(self, observations: list[Observation], prepared: bool) -> list[list[np.ndarray]]:
        """Per observation, the model's 224 view (uint8) of each camera it reads: the pixel values' source, and
        what pruners that compare frames (VLA-Cache) are shown."""
        return [[obs.images[camera] if prepared else model_image(obs.images[camera]) for camera in self.cameras]
                for obs in observations]

    def _pixels(self, frames: list[list[np.ndarray]]) -> torch.Tensor:
        """[B, 6 per camera, 224, 224]: each observation's cameras on the channel axis."""
        return torch.cat([torch.cat([self.processor.image_processor(Image.fromarray(f)) for f in per_obs], dim=1)
                          for per_obs in frames])

    def _act_one_prompt(self, slots: list[Slot], observations: list[Observation],
                        prepared: bool) -> list[PolicyOutput]:
        model, engine, clock = self.model, self.engine, Stopwatch(self.model.device)
        frames = self._frames(observations, prepared)
        pixel_values = self._pixels(frames)
        clock.lap("preprocess")
        visual = model.encode_image(pixel_values)
        clock.lap("vision")
        embeds = model.multimodal_embeds(slots[0].input_ids, visual)
        state = engine.prefill(embeds, model.sequence_layout(embeds.shape[1]),  # and the first action token
                               [slot.pruner for slot in slots], frames)
        clock.lap("prefill")
        tokens = engine.decode(state, ACTION_DIM)
        engine.finish(state)
        clock.lap("decode")
        outputs = []
        for row, trace in zip(tokens, state.traces):
            action = gripper_to_env(model.tokens_to_action(row, self.unnorm_key))
            info = {"latency_ms": clock.latency(), "batch_size": len(slots), "action_tokens": row.tolist(),
                    "decode_steps": ACTION_DIM - 1, **trace.to_record()}
            normalized = model.action_tokenizer.normalized(row.cpu().numpy())
            outputs.append(PolicyOutput(actions=action[None], info=info, normalized=normalized[None]))
        return outputs

    def normalize_actions(self, actions: np.ndarray, obs: Observation) -> np.ndarray:
        """Env actions [n, 7] (an expert's, taken from `obs`) in the model's normalised action space, the inverse
        of the query's un-normalisation (clipped to [-1, 1] as in training): to compare with `PolicyOutput.normalized`."""
        return normalize(gripper_from_env(actions), select_action_stats(self.model.norm_stats, self.unnorm_key))

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
    suite = model_suite(cfg.suite.name)  # a perturbed suite: its base suite's checkpoint and statistics
    checkpoint = resolve_checkpoint_path(model_cfg, suite)
    device, dtype = resolve_device_dtype(cfg.device, model_cfg.dtype)
    model = OpenVLA.from_pretrained(checkpoint, device=device, dtype=dtype)
    processor = OpenVLAProcessor.from_pretrained(checkpoint)
    layout = model.model_layout

    def make_pruner(options=cfg.pruner, keep: float = cfg.keep) -> Pruner:
        return baselines.build_pruner(options, keep, layout)

    return OpenVLAPolicy(model, processor, FAMILY.unnorm_key(model_cfg.unnorm_key, suite), model_cfg,
                         make_pruner)
