"""`policy=vla`: the one VLA policy, a model (group `model`) with a visual-token pruner (group `pruner`) at `keep`.

`VLAPolicy` does what a run does with any VLA; the family's adapter (evaluate/policies/adapter.py, found by the
model's `family`) does what is the family's own. Several episodes run at once (`num_envs` > 1, offline replay):
each episode is a slot with its own per-episode inputs (prompt) and its own pruner (one episode's history never
steers another's); `act_batch` answers the waiting slots with one batched query per group the model batches together
(OpenVLA: one prompt), each sample pruned by its own pruner. `reset`/`act` are slot 0, batch size 1. Before the first
timed query the policy runs one untimed burn-in query (its pruner reset after), so that the first episode's first
query does not pay for one-off allocations. Before each query every slot's pruner is told the observation's robot state
and the slot's previous actions (`Pruner.begin_query`). Each query records its latency per stage, its batch size and what the
pruner kept; its actions are converted to the benchmark's convention by the benchmark (`actions_to_env`).

Before a run, `check_vla_policy` checks what building it needs without loading weights (evaluate.config.validate).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from evaluate.envs.base import Observation, Benchmark
from evaluate.config import take_checked_pruner
from evaluate.errors import ConfigError
from evaluate.envs.suites import suite_benchmark
from evaluate.policies.adapter import FamilyAdapter, LoadedModel, adapter_for
from evaluate.policy import EpisodeContext, PolicyOutput
from vla_pruner.families import ModelFamily, family_names, model_family
from vla_pruner.pruning import ModelLayout, Pruner, QueryContext, build_pruner


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


@dataclass
class Slot:
    """One running episode's state in the policy."""

    episode: Any  # the model's per-episode inputs (`LoadedModel.episode`)
    pruner: Pruner  # its own pruner: the history of one episode never steers another's
    actions: np.ndarray | None = None  # what its last query returned (env convention), None before the first


class VLAPolicy:
    name = "vla"

    def __init__(self, adapter: FamilyAdapter, model: LoadedModel, benchmark: Benchmark, pruner_options,
                 keep: float):
        """`pruner_options` and `keep`: the run's pruner, built for slot 0 now and for each further slot when it
        first starts an episode."""
        self.adapter, self.model, self.benchmark = adapter, model, benchmark
        self.cameras = adapter.cameras
        self.options, self.keep = pruner_options, keep
        # slot 0's: the one the run's check built, else a new one
        self.pruner = take_checked_pruner(pruner_options, keep, model.layout) or self.make_pruner()
        self.slots: dict[int, Slot] = {}
        self._burn_in()

    def make_pruner(self, options=None, keep: float | None = None) -> Pruner:
        """A new pruner of the run's setting (or of `options` at `keep`, for offline replay's other settings)."""
        return build_pruner(self.options if options is None else options, self.keep if keep is None else keep,
                            self.model.layout)

    @torch.inference_mode()
    def _burn_in(self) -> None:
        blank = self.adapter.blank()
        episode = self.model.episode(EpisodeContext("burn-in", 0, blank.instruction, 0, 0))
        self.pruner.begin_query(QueryContext(robot_state=np.asarray(blank.state)))
        self.model.query([episode], [blank], [self.pruner], Stopwatch(self.model.device))
        self.pruner.reset()

    def reset(self, ctx: EpisodeContext) -> None:
        self.reset_slot(0, ctx)

    def reset_slot(self, slot: int, ctx: EpisodeContext, pruner: Pruner | None = None) -> None:
        """Start an episode in `slot`; `pruner`: the slot's pruner from now on (default: its own, slot 0's the
        policy's, a new one for a new slot)."""
        if pruner is None:
            pruner = self.slots[slot].pruner if slot in self.slots else self.pruner if slot == 0 else self.make_pruner()
        pruner.reset(seed=ctx.seed, episode=f"{ctx.suite}/{ctx.task_id}/{ctx.init_index}")
        self.slots[slot] = Slot(self.model.episode(ctx), pruner)

    def act(self, obs: Observation) -> PolicyOutput:
        return self.act_batch([(0, obs)])[0]

    @torch.inference_mode()
    def act_batch(self, queries: Sequence[tuple[int, Observation]], prepared: bool = False) -> list[PolicyOutput]:
        """One batched query per group of the model's (`LoadedModel.batch_key`) among the queries; outputs in order.
        `prepared`: the images are the model's frames already (the adapter's `prepare`, in the simulator workers)."""
        missing = [slot for slot, _ in queries if slot not in self.slots]
        if missing:
            raise RuntimeError(f"reset(ctx) must be called before act(obs) (slots {missing})")
        keys = [self.model.batch_key(self.slots[slot].episode) for slot, _ in queries]
        outputs: dict[int, PolicyOutput] = {}
        for _, group in groupby(sorted(range(len(queries)), key=keys.__getitem__), key=keys.__getitem__):
            group = list(group)
            batch = self._query([self.slots[queries[i][0]] for i in group], [queries[i][1] for i in group], prepared)
            outputs.update(zip(group, batch))
        return [outputs[i] for i in range(len(queries))]

    def _query(self, slots: list[Slot], observations: list[Observation], prepared: bool) -> list[PolicyOutput]:
        clock = Stopwatch(self.model.device)
        if not prepared:
            observations = [self.adapter.prepare(obs) for obs in observations]
        for slot, obs in zip(slots, observations):
            slot.pruner.begin_query(QueryContext(robot_state=np.asarray(obs.state), previous_actions=slot.actions))
        answers = self.model.query([s.episode for s in slots], observations, [s.pruner for s in slots], clock)
        convention = self.model.action_convention
        outputs = [PolicyOutput(actions=self.benchmark.actions_to_env(actions, convention),
                                info={"latency_ms": clock.latency(), "batch_size": len(slots), **info},
                                normalized=normalized)
                   for actions, normalized, info in answers]
        for slot, output in zip(slots, outputs):
            slot.actions = np.asarray(output.actions)
        return outputs

    def normalize_actions(self, actions: np.ndarray, obs: Observation) -> np.ndarray:
        """Env actions [n, 7] (an expert's, taken from `obs`) in the model's normalised action space, the inverse
        of the query's un-normalisation: to compare with `PolicyOutput.normalized`."""
        return self.model.normalize(self.benchmark.actions_from_env(actions, self.model.action_convention), obs)

    def describe(self) -> dict:
        return {"policy": self.name, **self.model.describe(), "pruner": self.pruner.describe()}


# ------------------------------------------------------------------------------- the `vla` row of POLICIES


def family_of(cfg: DictConfig) -> ModelFamily:
    family = cfg.model.get("family")
    if family not in family_names():
        raise ConfigError(f"model {cfg.model.name} has family '{family}'; valid families: {', '.join(family_names())}")
    return model_family(family)


def adapter_of(cfg: DictConfig) -> FamilyAdapter:
    return adapter_for(family_of(cfg).name)


def family_pruner(family: ModelFamily, pruner_cfg, keep: float, layout: ModelLayout) -> Pruner:
    """The pruner a run of `family` builds on `layout` (ConfigError where its adapter cannot run it);
    `evaluate.flops` counts with the same pruner."""
    return adapter_for(family.name).pruner(pruner_cfg, keep, layout)


def vla_cameras(cfg: DictConfig) -> tuple[str, ...]:
    return adapter_of(cfg).cameras


def prepare_vla_observation(cfg: DictConfig, obs: Observation) -> Observation:
    """The model's frames of the cameras it reads (weight-free: the simulator workers run it)."""
    return adapter_of(cfg).prepare(obs)


def check_vla_policy(cfg: DictConfig) -> None:
    adapter_of(cfg).check(cfg)


def build_vla_policy(cfg: DictConfig) -> VLAPolicy:
    """The policy of a composed config (weights load here): what a run, offline replay and a model server build."""
    adapter = adapter_of(cfg)
    return VLAPolicy(adapter, adapter.load(cfg), suite_benchmark(cfg.suite.name), cfg.pruner, cfg.keep)

