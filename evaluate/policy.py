"""The Policy interface every controller plugs into (the table of built-in ones: evaluate/policies/__init__.py).

A policy sees the benchmark seam's observations (evaluate.envs.base.Observation: upright camera images by role,
proprio state, instruction) and returns a chunk of env-ready actions (OpenVLA: one action per query;
OpenVLA-OFT: eight, executed open loop). What a query cost or chose (timings, kept tokens, ...) goes into
`PolicyOutput.info` and lands in the episode record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from evaluate.envs.base import Observation


@dataclass
class EpisodeContext:
    """What a policy may know about the episode it is about to run."""

    suite: str
    task_id: int
    instruction: str
    init_index: int
    seed: int
    placement_seed: int | None = None  # set: the episode starts from the sampler's placement of seed placement_seed + init_index
    env: Any = None  # the live simulator (TaskEnv.live); only privileged policies (scripted expert) may read it


@dataclass
class PolicyOutput:
    actions: np.ndarray  # [n, 7] float, env convention (gripper -1 open / +1 close)
    info: dict = field(default_factory=dict)  # per-query stats, JSON-serialisable
    # the model's whole output in its normalised action space [chunk, action dims] (OpenVLA: the bins' values, pi0: all
    # 50 actions, not only the executed ones): what offline replay (evaluate.fidelity) compares; never recorded
    normalized: np.ndarray | None = None
    # what recorded demonstrations label each executed action with, when that differs from it: the scripted expert's
    # clean action while it executes a perturbed one (policy.action_noise, DART); None = the executed actions
    labels: np.ndarray | None = None


class Policy(Protocol):
    name: str

    def reset(self, ctx: EpisodeContext) -> None:
        """Start a new episode (clears per-episode state such as a pruner's history)."""

    def act(self, obs: Observation) -> PolicyOutput:
        """One policy query on one observation."""

    def describe(self) -> dict:
        """Static facts about the policy saved with the run (model name, checkpoint, warnings)."""


@runtime_checkable
class BatchedPolicy(Policy, Protocol):
    """A policy that serves several episodes at once (`num_envs` > 1, evaluate/parallel.py): each episode's state
    (prompt, a pruner's history) lives in a slot, and the waiting episodes are answered with one batched query."""

    def reset_slot(self, slot: int, ctx: EpisodeContext, pruner: Any = None) -> None:
        """Start a new episode in `slot` (`reset` is slot 0). `pruner` (a `vla_pruner.pruning.Pruner`, e.g. from
        `make_pruner(options, keep)`): the slot's pruner from now on, so that offline replay (evaluate.fidelity)
        runs several settings side by side; default: the slot's own, or a new one of the run's setting."""

    def act_batch(self, queries: Sequence[tuple[int, Observation]], prepared: bool = False) -> list[PolicyOutput]:
        """One query per (slot, observation), answered together; outputs in the same order. `prepared`: the
        observations went through the policy entry's `prepare` already (in the simulator workers)."""


class TaskNotSupported(Exception):
    """Raised by `Policy.reset` for a task the policy cannot attempt; the episode is recorded as skipped."""


class NonFiniteAction(RuntimeError):
    """The policy answered with a nan or inf action: the model is broken, not the episode failed, so the run stops
    (its finished episodes kept) before the simulator gets the action."""


def check_actions(output: PolicyOutput, task_id: int, init_index: int) -> PolicyOutput:
    """`output`, or NonFiniteAction naming the episode and the action."""
    actions = np.asarray(output.actions, dtype=np.float64)
    if not np.isfinite(actions).all():
        bad = actions[~np.isfinite(actions).all(axis=-1)][0]
        raise NonFiniteAction(f"the policy answered task {task_id}, init state {init_index} with a non-finite action "
                              f"({np.array2string(bad, precision=3)}): its weights or statistics are broken; no "
                              "episode is recorded as failed for it")
    return output


@dataclass(frozen=True)
class PolicyEntry:
    """A row of the policy table: how to build the policy from the run's config, and what to check before a run
    without loading weights or building an environment (raises evaluate.config.ConfigError)."""

    build: Callable[[Any], Policy]
    check: Callable[[Any], None] | None = None
    # with num_envs > 1: built in every simulator worker (weight-free or privileged, e.g. it reads the live env)
    # instead of once in the main process behind batched queries
    beside_simulator: bool = False
    # it runs the `model` with the `pruner` at `keep`: a command that names no model gets the machine's default
    # (evaluate/model_choice.py); a policy that does not (scripted, noop) refuses changed ones, which would only name
    # another run directory and Table 1 row for the same episodes
    uses_model: bool = False
    # the camera roles (evaluate.envs.base.PRIMARY, WRIST) its observations must hold; only these are rendered
    cameras: Callable[[Any], tuple[str, ...]] = lambda cfg: ()
    # (cfg, observation) -> the observation as the policy's model takes it, weight-free (image preprocessing): with
    # num_envs > 1 the workers run it in parallel, before the batched query
    prepare: Callable[[Any, Observation], Observation] | None = None
    # it perturbs what it executes by policy.action_noise (the scripted expert, for DART demonstrations); any other
    # policy refuses a nonzero value, which would otherwise name another run for the same episodes
    takes_action_noise: bool = False
